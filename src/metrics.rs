//! Counters for `/metrics`, in the Prometheus text format (exposition format 0.0.4).
//! Every label value comes from a fixed list here, so cardinality is bounded by
//! construction: no path, user or upstream URL ever becomes a label.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The endpoint families, as labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Callback,
    User,
    Logout,
    Proxy,
    Frontend,
    Health,
    Metrics,
    Other,
}

const ENDPOINTS: [(Endpoint, &str); 9] = [
    (Endpoint::Login, "login"),
    (Endpoint::Callback, "callback"),
    (Endpoint::User, "user"),
    (Endpoint::Logout, "logout"),
    (Endpoint::Proxy, "proxy"),
    (Endpoint::Frontend, "frontend"),
    (Endpoint::Health, "health"),
    (Endpoint::Metrics, "metrics"),
    (Endpoint::Other, "other"),
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Why a request had no session (see `jar::load` and `cookies::ReadError`).
const REJECT_REASONS: [&str; 9] = [
    "missing",
    "expired",
    "unknown_key",
    "invalid",
    "undecodable",
    "absolute",
    "idle",
    "future",
    "profile",
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
const UPSTREAM_ERRORS: [&str; 2] = ["unavailable", "timeout"];
const KEY_RELOADS: [&str; 2] = ["ok", "failed"];
/// Session lookups of proxied calls: `hit` served from `session_cache`, `miss` opened.
const CACHE_RESULTS: [&str; 2] = ["hit", "miss"];

/// Upper bounds of the latency histogram buckets, in seconds (the last bucket is +Inf).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One latency histogram: a count per bucket (not cumulative; summed when rendered), the
/// +Inf bucket last, and the sum in microseconds.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    latency: [Histogram; ENDPOINTS.len()],
    /// Route prefixes from the configuration: the only route labels there can be.
    routes: Vec<(String, [AtomicU64; CLASSES.len()])>,
    refreshes: [AtomicU64; REFRESH_OUTCOMES.len()],
    refresh_failures: [AtomicU64; REFRESH_FAILURES.len()],
    upstream_errors: [AtomicU64; UPSTREAM_ERRORS.len()],
    key_reloads: [AtomicU64; KEY_RELOADS.len()],
    session_cache: [AtomicU64; CACHE_RESULTS.len()],
    requests: [[AtomicU64; CLASSES.len()]; ENDPOINTS.len()],
    logins_started: AtomicU64,
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    rejected: [AtomicU64; REJECT_REASONS.len()],
    revocations: [AtomicU64; REVOCATION_OUTCOMES.len()],
}

impl Metrics {
    /// Counters for these routes (their prefixes label them).
    pub fn new(route_prefixes: Vec<String>) -> Self {
        Self {
            routes: route_prefixes
                .into_iter()
                .map(|p| (p, Default::default()))
                .collect(),
            ..Self::default()
        }
    }

    /// A proxied request on route `index` answered with `status`.
    pub fn proxied(&self, index: usize, status: u16) {
        let c = usize::from(status / 100)
            .saturating_sub(1)
            .min(CLASSES.len() - 1);
        if let Some(counter) = self.routes.get(index).and_then(|(_, row)| row.get(c)) {
            counter.fetch_add(1, Relaxed);
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
        let e = ENDPOINTS
            .iter()
            .position(|(e, _)| *e == endpoint)
            .unwrap_or(ENDPOINTS.len() - 1);
        let Some(h) = self.latency.get(e) else { return };
        let secs = elapsed.as_secs_f64();
        let b = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(c) = h.buckets.get(b) {
            c.fetch_add(1, Relaxed);
        }
        h.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    pub fn request(&self, endpoint: Endpoint, status: u16) {
        let e = ENDPOINTS
            .iter()
            .position(|(e, _)| *e == endpoint)
            .unwrap_or(ENDPOINTS.len() - 1);
        let c = usize::from(status / 100)
            .saturating_sub(1)
            .min(CLASSES.len() - 1);
        if let Some(counter) = self.requests.get(e).and_then(|row| row.get(c)) {
            counter.fetch_add(1, Relaxed);
        }
    }

    pub fn login_started(&self) {
        self.logins_started.fetch_add(1, Relaxed);
    }

    pub fn login_finished(&self, ok: bool) {
        if ok {
            &self.logins_ok
        } else {
            &self.logins_failed
        }
        .fetch_add(1, Relaxed);
    }

    /// A request without a valid session, by reason; unknown reasons count as "invalid".
    pub fn rejected(&self, reason: &str) {
        count_or(&self.rejected, &REJECT_REASONS, reason, "invalid");
    }

    /// A revocation at logout, by outcome; unknown outcomes count as "failed".
    pub fn revocation(&self, outcome: &str) {
        count_or(&self.revocations, &REVOCATION_OUTCOMES, outcome, "failed");
    }

    /// The text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "sealgate_requests_total",
            "Requests answered, by endpoint family and status class.",
        );
        for ((_, name), row) in ENDPOINTS.iter().zip(&self.requests) {
            for (class, n) in CLASSES.iter().zip(row) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "sealgate_requests_total{{endpoint=\"{name}\",code=\"{class}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP sealgate_request_duration_seconds Time to answer (to the head for streamed answers), by endpoint family.\n# TYPE sealgate_request_duration_seconds histogram"
        );
        for ((_, name), h) in ENDPOINTS.iter().zip(&self.latency) {
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n.load(Relaxed);
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "sealgate_request_duration_seconds_bucket{{endpoint=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = h.sum_micros.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "sealgate_request_duration_seconds_sum{{endpoint=\"{name}\"}} {sum}\nsealgate_request_duration_seconds_count{{endpoint=\"{name}\"}} {cumulative}"
            );
        }
        header(
            &mut out,
            "sealgate_proxied_requests_total",
            "Proxied API requests, by route prefix and status class.",
        );
        for (prefix, row) in &self.routes {
            for (class, n) in CLASSES.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "sealgate_proxied_requests_total{{route=\"{prefix}\",code=\"{class}\"}} {}",
                    n.load(Relaxed)
                );
            }
        }
        let logins = [&self.logins_started, &self.logins_ok, &self.logins_failed];
        family(
            &mut out,
            "sealgate_logins_total",
            "Logins, by outcome.",
            "outcome",
            &["started", "ok", "failed"],
            logins,
        );
        family(
            &mut out,
            "sealgate_session_rejected_total",
            "Requests without a valid session, by reason.",
            "reason",
            &REJECT_REASONS,
            &self.rejected,
        );
        family(
            &mut out,
            "sealgate_refreshes_total",
            "Access token refreshes, by outcome (shared: joined another request's refresh).",
            "outcome",
            &REFRESH_OUTCOMES,
            &self.refreshes,
        );
        family(
            &mut out,
            "sealgate_refresh_failures_total",
            "Refresh grants that gave no usable tokens, by class (only invalid_grant ends the session).",
            "class",
            &REFRESH_FAILURES,
            &self.refresh_failures,
        );
        family(
            &mut out,
            "sealgate_revocations_total",
            "Refresh token revocations at logout, by outcome.",
            "outcome",
            &REVOCATION_OUTCOMES,
            &self.revocations,
        );
        family(
            &mut out,
            "sealgate_key_reloads_total",
            "Key ring and TLS certificate reloads, by outcome (failed: the old one was kept).",
            "outcome",
            &KEY_RELOADS,
            &self.key_reloads,
        );
        family(
            &mut out,
            "sealgate_session_cache_total",
            "Session lookups of proxied calls (hit: opened earlier; miss: opened now, or none).",
            "result",
            &CACHE_RESULTS,
            &self.session_cache,
        );
        family(
            &mut out,
            "sealgate_upstream_errors_total",
            "Upstream failures, by kind.",
            "kind",
            &UPSTREAM_ERRORS,
            &self.upstream_errors,
        );
        out
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
}

/// One counter family with one label, every value written (zeros included).
fn family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
    counters: impl IntoIterator<Item = &'a AtomicU64>,
) {
    header(out, name, help);
    for (value, n) in values.iter().zip(counters) {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", n.load(Relaxed));
    }
}

fn count<const N: usize>(counters: &[AtomicU64; N], labels: &[&str; N], label: &str) {
    if let Some(i) = labels.iter().position(|l| *l == label)
        && let Some(c) = counters.get(i)
    {
        c.fetch_add(1, Relaxed);
    }
}

/// `count`, with labels outside the list counted under `fallback` (one of the list).
fn count_or<const N: usize>(
    counters: &[AtomicU64; N],
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
}
