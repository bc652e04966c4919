//! Counters and the latency histogram for `/metrics`, kept by `prometheus-client` (the
//! Prometheus project's client) and rendered in the Prometheus text format 0.0.4.
//! Every label value comes from a fixed list here, so cardinality is bounded by
//! construction: no path, user or upstream URL ever becomes a label. Every label set is
//! created at start-up and its handle kept, so a request adds to an atomic (the histogram
//! takes a short mutex: prometheus-client's, held for one bucket update) and never looks
//! up or locks a family's map.

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use std::sync::OnceLock;

/// The endpoint families, as labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Callback,
    User,
    Logout,
    /// `POST /bff/backchannel-logout`, the provider's calls (not the user's logouts).
    Backchannel,
    Proxy,
    Frontend,
    Health,
    Metrics,
    Other,
}

const ENDPOINTS: [(Endpoint, &str); 10] = [
    (Endpoint::Login, "login"),
    (Endpoint::Callback, "callback"),
    (Endpoint::User, "user"),
    (Endpoint::Logout, "logout"),
    (Endpoint::Backchannel, "backchannel"),
    (Endpoint::Proxy, "proxy"),
    (Endpoint::Frontend, "frontend"),
    (Endpoint::Health, "health"),
    (Endpoint::Metrics, "metrics"),
    (Endpoint::Other, "other"),
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Why a request had no session (see `jar::load` and `cookies::ReadError`).
const REJECT_REASONS: [&str; 10] = [
    "missing",
    "expired",
    "unknown_key",
    "invalid",
    "undecodable",
    "absolute",
    "idle",
    "future",
    "profile",
    "revoked",
];
const REVOCATION_OUTCOMES: [&str; 3] = ["ok", "unsupported", "failed"];
/// Refresh outcomes: `ok` ran a grant, `shared` reused one (single flight or grace).
const REFRESH_OUTCOMES: [&str; 4] = ["ok", "shared", "fatal", "transient"];
/// Failed refresh grants, by class (`oidc::RefreshFailure::as_str`): only `invalid_grant`
/// ends a session.
const REFRESH_FAILURES: [&str; 12] = [
    "invalid_grant",
    "temporarily_unavailable",
    "server_error",
    "invalid_client",
    "unauthorized_client",
    "other_error",
    "http_5xx",
    "http_other",
    "network",
    "timeout",
    "unparsable",
    "unusable_tokens",
];
/// Refreshes of this instance's flights with `[store]`, by who sent the grant (see `flight`):
/// `fleet_leader` this instance, holding the fleet's lock; `fleet_follower` another
/// instance, whose outcome was used; `local_fallback` this instance, without the lock (the
/// store failed).
const REFRESH_FLIGHTS: [&str; 3] = ["fleet_leader", "fleet_follower", "local_fallback"];
const UPSTREAM_ERRORS: [&str; 2] = ["unavailable", "timeout"];
const KEY_RELOADS: [&str; 2] = ["ok", "failed"];
/// Session lookups of proxied calls: `hit` served from `session_cache`, `miss` opened.
const CACHE_RESULTS: [&str; 2] = ["hit", "miss"];

/// Upper bounds of the latency histogram buckets, in seconds (the last bucket is +Inf).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const LOGIN_OUTCOMES: [&str; 3] = ["started", "ok", "failed"];
/// Back-channel logouts (`backchannel`): `ok` recorded, `invalid` a refused request or
/// token, `replay` a `jti` seen before, `no_store` without `[store]`, `unavailable` our
/// side failed (provider metadata, store).
const BACKCHANNEL_OUTCOMES: [&str; 5] = ["ok", "invalid", "replay", "no_store", "unavailable"];
/// Store operations that can fail (`[store]`).
pub const STORE_OPS: [&str; 6] = ["revoke", "jti", "lock", "outcome", "resync", "subscribe"];

// The label sets: each field is one label, written in field order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointCode {
    endpoint: &'static str,
    code: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: String,
    code: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Class {
    class: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    source: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheResult {
    result: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

/// The shared store's families (`[store]`): made by the store, which keeps the handles,
/// and rendered once handed to [`Metrics::register_store`]. Without a store none of them
/// is rendered (a `sealgate_store_up 0` would read as an outage).
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    up: Gauge,
    errors_family: Family<Op, Counter>,
    errors: [Counter; STORE_OPS.len()],
    revocations: Gauge,
    pending: Gauge,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        let errors_family = Family::<Op, Counter>::default();
        StoreMetrics {
            up: Gauge::default(),
            errors: STORE_OPS.map(|op| errors_family.get_or_create_owned(&Op { op })),
            errors_family,
            revocations: Gauge::default(),
            pending: Gauge::default(),
        }
    }
}

impl StoreMetrics {
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    /// A failed store operation; `op` is one of `STORE_OPS` (others are not counted).
    pub fn error(&self, op: &str) {
        count(&self.errors, &STORE_OPS, op);
    }

    /// Revocations held in memory.
    pub fn set_revocations(&self, n: usize) {
        self.revocations.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Revocations waiting for the store.
    pub fn set_pending(&self, n: usize) {
        self.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[derive(Debug)]
pub struct Metrics {
    /// Owns the families (for rendering); the fields below are handles into them.
    registry: Registry,
    requests: [[Counter; CLASSES.len()]; ENDPOINTS.len()],
    latency: [Histogram; ENDPOINTS.len()],
    /// By route index: the route prefixes from the configuration are the only route labels.
    routes: Vec<[Counter; CLASSES.len()]>,
    logins: [Counter; LOGIN_OUTCOMES.len()],
    rejected: [Counter; REJECT_REASONS.len()],
    refreshes: [Counter; REFRESH_OUTCOMES.len()],
    refresh_failures: [Counter; REFRESH_FAILURES.len()],
    refresh_flights: [Counter; REFRESH_FLIGHTS.len()],
    revocations: [Counter; REVOCATION_OUTCOMES.len()],
    key_reloads: [Counter; KEY_RELOADS.len()],
    session_cache: [Counter; CACHE_RESULTS.len()],
    upstream_errors: [Counter; UPSTREAM_ERRORS.len()],
    backchannel_logouts: [Counter; BACKCHANNEL_OUTCOMES.len()],
    /// The store's families, once registered (after the store and the app are built).
    store: OnceLock<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Metrics {
    /// The `Content-Type` of [`Metrics::render`].
    pub const fn content_type() -> &'static str {
        prometheus_text::CONTENT_TYPE
    }

    /// Counters for these routes (their prefixes label them). Families are registered in the
    /// order they render; names are given without `_total`, which the encoder appends to
    /// counters, and help texts without the final period, which the registry appends.
    pub fn new(route_prefixes: Vec<String>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<EndpointCode, Counter>::default();
        registry.register(
            "sealgate_requests",
            "Requests answered, by endpoint family and status class",
            requests.clone(),
        );
        let latency = Family::<EndpointLabel, Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "sealgate_request_duration",
            "Time to answer (to the head for streamed answers), by endpoint family",
            Unit::Seconds,
            latency.clone(),
        );
        let routes = Family::<RouteCode, Counter>::default();
        registry.register(
            "sealgate_proxied_requests",
            "Proxied API requests, by route prefix and status class",
            routes.clone(),
        );
        Self {
            requests: ENDPOINTS.map(|(_, endpoint)| {
                CLASSES.map(|code| requests.get_or_create_owned(&EndpointCode { endpoint, code }))
            }),
            latency: ENDPOINTS
                .map(|(_, endpoint)| latency.get_or_create_owned(&EndpointLabel { endpoint })),
            routes: route_prefixes
                .into_iter()
                .map(|route| {
                    CLASSES.map(|code| {
                        let route = route.clone();
                        routes.get_or_create_owned(&RouteCode { route, code })
                    })
                })
                .collect(),
            logins: family(
                &mut registry,
                "sealgate_logins",
                "Logins, by outcome",
                LOGIN_OUTCOMES,
                |outcome| Outcome { outcome },
            ),
            rejected: family(
                &mut registry,
                "sealgate_session_rejected",
                "Requests without a valid session, by reason",
                REJECT_REASONS,
                |reason| Reason { reason },
            ),
            refreshes: family(
                &mut registry,
                "sealgate_refreshes",
                "Access token refreshes, by outcome (shared: joined another request's refresh)",
                REFRESH_OUTCOMES,
                |outcome| Outcome { outcome },
            ),
            refresh_failures: family(
                &mut registry,
                "sealgate_refresh_failures",
                "Refresh grants that gave no usable tokens, by class (only invalid_grant ends the session)",
                REFRESH_FAILURES,
                |class| Class { class },
            ),
            refresh_flights: family(
                &mut registry,
                "sealgate_refresh_flights",
                "Refreshes with [store], by who sent the grant (fleet_leader: this instance; fleet_follower: another; local_fallback: this one without the fleet's lock, the store failed)",
                REFRESH_FLIGHTS,
                |source| Source { source },
            ),
            revocations: family(
                &mut registry,
                "sealgate_revocations",
                "Refresh token revocations at logout, by outcome",
                REVOCATION_OUTCOMES,
                |outcome| Outcome { outcome },
            ),
            key_reloads: family(
                &mut registry,
                "sealgate_key_reloads",
                "Key ring and TLS certificate reloads, by outcome (failed: the old one was kept)",
                KEY_RELOADS,
                |outcome| Outcome { outcome },
            ),
            session_cache: family(
                &mut registry,
                "sealgate_session_cache",
                "Session lookups of proxied calls (hit: opened earlier; miss: opened now, or none)",
                CACHE_RESULTS,
                |result| CacheResult { result },
            ),
            upstream_errors: family(
                &mut registry,
                "sealgate_upstream_errors",
                "Upstream failures, by kind",
                UPSTREAM_ERRORS,
                |kind| Kind { kind },
            ),
            backchannel_logouts: family(
                &mut registry,
                "sealgate_backchannel_logouts",
                "Back-channel logout requests, by outcome",
                BACKCHANNEL_OUTCOMES,
                |outcome| Outcome { outcome },
            ),
            registry,
            store: OnceLock::new(),
        }
    }

    /// Renders the store's families from now on (the first call wins; later ones are
    /// ignored, so a family is never rendered twice).
    pub fn register_store(&self, m: &StoreMetrics) {
        let _ = self.store.get_or_init(|| {
            let mut r = Registry::default();
            r.register(
                "sealgate_store_up",
                "Whether the shared store answered the last command (1) or not (0)",
                m.up.clone(),
            );
            r.register(
                "sealgate_store_errors",
                "Failed store operations, by operation (requests carried on without the store)",
                m.errors_family.clone(),
            );
            // Not `sealgate_revocations`: that family counts refresh token revocations
            // at logout (`sealgate_revocations_total`).
            r.register(
                "sealgate_store_revocations",
                "Session revocations held in memory",
                m.revocations.clone(),
            );
            r.register(
                "sealgate_store_pending",
                "Revocations applied here and waiting for the store to be written",
                m.pending.clone(),
            );
            r
        });
    }

    /// A proxied request on route `index` answered with `status`.
    pub fn proxied(&self, index: usize, status: u16) {
        if let Some(counter) = self
            .routes
            .get(index)
            .and_then(|row| row.get(class(status)))
        {
            counter.inc();
        }
    }

    pub fn refresh(&self, outcome: &str) {
        count(&self.refreshes, &REFRESH_OUTCOMES, outcome);
    }

    /// A refresh grant that gave no usable tokens, by class; unknown ones count as
    /// "other_error".
    pub fn refresh_failure(&self, class: &str) {
        count_or(
            &self.refresh_failures,
            &REFRESH_FAILURES,
            class,
            "other_error",
        );
    }

    /// A refresh with `[store]`, by who sent its grant (`REFRESH_FLIGHTS`).
    pub fn refresh_flight(&self, source: &str) {
        count(&self.refresh_flights, &REFRESH_FLIGHTS, source);
    }

    pub fn key_reload(&self, outcome: &str) {
        count(&self.key_reloads, &KEY_RELOADS, outcome);
    }

    /// A proxied call's session came from the cache (`hit`) or was opened (`miss`).
    pub fn session_cache(&self, hit: bool) {
        count(
            &self.session_cache,
            &CACHE_RESULTS,
            if hit { "hit" } else { "miss" },
        );
    }

    pub fn upstream_error(&self, kind: &str) {
        count(&self.upstream_errors, &UPSTREAM_ERRORS, kind);
    }

    /// The time to answer (to the answer head, for streamed answers) of one request.
    pub fn latency(&self, endpoint: Endpoint, elapsed: std::time::Duration) {
        if let Some(h) = self.latency.get(endpoint_index(endpoint)) {
            h.observe(elapsed.as_secs_f64());
        }
    }

    pub fn request(&self, endpoint: Endpoint, status: u16) {
        if let Some(counter) = self
            .requests
            .get(endpoint_index(endpoint))
            .and_then(|row| row.get(class(status)))
        {
            counter.inc();
        }
    }

    pub fn login_started(&self) {
        count(&self.logins, &LOGIN_OUTCOMES, "started");
    }

    pub fn login_finished(&self, ok: bool) {
        count(
            &self.logins,
            &LOGIN_OUTCOMES,
            if ok { "ok" } else { "failed" },
        );
    }

    /// A request without a valid session, by reason; unknown reasons count as "invalid".
    pub fn rejected(&self, reason: &str) {
        count_or(&self.rejected, &REJECT_REASONS, reason, "invalid");
    }

    /// A revocation at logout, by outcome; unknown outcomes count as "failed".
    pub fn revocation(&self, outcome: &str) {
        count_or(&self.revocations, &REVOCATION_OUTCOMES, outcome, "failed");
    }

    /// A back-channel logout request, by outcome; unknown outcomes count as "invalid".
    pub fn backchannel_logout(&self, outcome: &str) {
        count_or(
            &self.backchannel_logouts,
            &BACKCHANNEL_OUTCOMES,
            outcome,
            "invalid",
        );
    }

    /// The text format (see [`Metrics::content_type`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail; the encoder fails only on a label it cannot
        // format, and every label here is a plain string from the lists above or the config.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "rendering /metrics");
        }
        if let Some(store) = self.store.get()
            && let Err(e) = prometheus_text::encode(&mut out, store)
        {
            tracing::error!(error = %e, "rendering /metrics");
        }
        out
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A counter family with one label, registered, with a handle per value in `values`: all
/// of them are rendered from the start (zeros included).
fn family<const N: usize, S>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: [&'static str; N],
    label: fn(&'static str) -> S,
) -> [Counter; N]
where
    S: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<S, Counter>::default();
    registry.register(name, help, family.clone());
    values.map(|v| family.get_or_create_owned(&label(v)))
}

fn endpoint_index(endpoint: Endpoint) -> usize {
    ENDPOINTS
        .iter()
        .position(|(e, _)| *e == endpoint)
        .unwrap_or(ENDPOINTS.len() - 1)
}

/// The status class index in `CLASSES`; out-of-range statuses count as `5xx`.
fn class(status: u16) -> usize {
    usize::from(status / 100)
        .saturating_sub(1)
        .min(CLASSES.len() - 1)
}

fn count<const N: usize>(counters: &[Counter; N], labels: &[&str; N], label: &str) {
    if let Some(i) = labels.iter().position(|l| *l == label)
        && let Some(c) = counters.get(i)
    {
        c.inc();
    }
}

/// `count`, with labels outside the list counted under `fallback` (one of the list).
fn count_or<const N: usize>(
    counters: &[Counter; N],
    labels: &[&str; N],
    label: &str,
    fallback: &str,
) {
    let known = labels.contains(&label);
    count(counters, labels, if known { label } else { fallback });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_with_bounded_labels() {
        let m = Metrics::default();
        m.request(Endpoint::User, 401);
        m.request(Endpoint::User, 401);
        m.request(Endpoint::Login, 302);
        m.rejected("expired");
        m.rejected("something-new");
        let text = m.render();
        assert!(
            text.contains("sealgate_requests_total{endpoint=\"user\",code=\"4xx\"} 2"),
            "{text}"
        );
        assert!(text.contains("sealgate_requests_total{endpoint=\"login\",code=\"3xx\"} 1"));
        assert!(text.contains("sealgate_session_rejected_total{reason=\"expired\"} 1"));
        assert!(text.contains("sealgate_session_rejected_total{reason=\"invalid\"} 1"));
    }

    #[test]
    fn every_refresh_failure_class_has_a_label() {
        let m = Metrics::default();
        for class in crate::oidc::RefreshFailure::ALL {
            assert!(REFRESH_FAILURES.contains(&class.as_str()), "{class:?}");
            m.refresh_failure(class.as_str());
        }
        assert_eq!(
            REFRESH_FAILURES.len(),
            crate::oidc::RefreshFailure::ALL.len()
        );
        let text = m.render();
        assert!(text.contains("sealgate_refresh_failures_total{class=\"invalid_grant\"} 1"));
        assert!(text.contains("sealgate_refresh_failures_total{class=\"unusable_tokens\"} 1"));
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let m = Metrics::default();
        m.latency(Endpoint::Proxy, std::time::Duration::from_micros(700));
        m.latency(Endpoint::Proxy, std::time::Duration::from_millis(30));
        m.latency(Endpoint::Proxy, std::time::Duration::from_secs(9));
        let text = m.render();
        for line in [
            "sealgate_request_duration_seconds_bucket{endpoint=\"proxy\",le=\"0.0005\"} 0",
            "sealgate_request_duration_seconds_bucket{endpoint=\"proxy\",le=\"0.001\"} 1",
            "sealgate_request_duration_seconds_bucket{endpoint=\"proxy\",le=\"0.05\"} 2",
            "sealgate_request_duration_seconds_bucket{endpoint=\"proxy\",le=\"5\"} 2",
            "sealgate_request_duration_seconds_bucket{endpoint=\"proxy\",le=\"+Inf\"} 3",
            "sealgate_request_duration_seconds_count{endpoint=\"proxy\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn renders_every_family_and_label_set_from_the_start() {
        let text = Metrics::new(vec!["/api/".into()]).render();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            families,
            [
                "sealgate_requests_total counter",
                "sealgate_request_duration_seconds histogram",
                "sealgate_proxied_requests_total counter",
                "sealgate_logins_total counter",
                "sealgate_session_rejected_total counter",
                "sealgate_refreshes_total counter",
                "sealgate_refresh_failures_total counter",
                "sealgate_refresh_flights_total counter",
                "sealgate_revocations_total counter",
                "sealgate_key_reloads_total counter",
                "sealgate_session_cache_total counter",
                "sealgate_upstream_errors_total counter",
                "sealgate_backchannel_logouts_total counter",
            ]
        );
        let mut samples = Vec::new();
        for (_, endpoint) in ENDPOINTS {
            for code in CLASSES {
                samples.push(format!(
                    "sealgate_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}} 0"
                ));
            }
            samples.push(format!(
                "sealgate_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} 0"
            ));
            samples.push(format!(
                "sealgate_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} 0"
            ));
        }
        for code in CLASSES {
            samples.push(format!(
                "sealgate_proxied_requests_total{{route=\"/api/\",code=\"{code}\"}} 0"
            ));
        }
        let one_label: [(&str, &str, &[&str]); 10] = [
            ("sealgate_logins_total", "outcome", &LOGIN_OUTCOMES),
            ("sealgate_session_rejected_total", "reason", &REJECT_REASONS),
            ("sealgate_refreshes_total", "outcome", &REFRESH_OUTCOMES),
            (
                "sealgate_refresh_failures_total",
                "class",
                &REFRESH_FAILURES,
            ),
            ("sealgate_refresh_flights_total", "source", &REFRESH_FLIGHTS),
            (
                "sealgate_revocations_total",
                "outcome",
                &REVOCATION_OUTCOMES,
            ),
            ("sealgate_key_reloads_total", "outcome", &KEY_RELOADS),
            ("sealgate_session_cache_total", "result", &CACHE_RESULTS),
            ("sealgate_upstream_errors_total", "kind", &UPSTREAM_ERRORS),
            (
                "sealgate_backchannel_logouts_total",
                "outcome",
                &BACKCHANNEL_OUTCOMES,
            ),
        ];
        for (name, label, values) in one_label {
            for value in values {
                samples.push(format!("{name}{{{label}=\"{value}\"}} 0"));
            }
        }
        for sample in samples {
            assert!(
                text.lines().any(|l| l == sample),
                "{sample} missing:\n{text}"
            );
        }
    }

    #[test]
    fn store_families_render_only_once_registered() {
        let m = Metrics::default();
        let s = StoreMetrics::default();
        s.set_up(true);
        s.error("jti");
        s.error("nonsense");
        s.set_revocations(3);
        assert!(!m.render().contains("sealgate_store"));
        m.register_store(&s);
        m.register_store(&s);
        let text = m.render();
        for line in [
            "sealgate_store_up 1",
            "sealgate_store_errors_total{op=\"jti\"} 1",
            "sealgate_store_errors_total{op=\"resync\"} 0",
            "sealgate_store_revocations 3",
            "sealgate_store_pending 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(text.matches("# TYPE sealgate_store_up gauge").count(), 1);
    }

    #[test]
    fn escapes_a_quote_in_a_route_prefix_label() {
        let m = Metrics::new(vec!["/a\"b/".into()]);
        m.proxied(0, 200);
        let text = m.render();
        assert!(
            text.contains("sealgate_proxied_requests_total{route=\"/a\\\"b/\",code=\"2xx\"} 1"),
            "{text}"
        );
    }
}
