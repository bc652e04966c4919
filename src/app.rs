//! The shared state, built once at start-up and handed down to every handler: the
//! configuration's values, the key ring (and its reload), the provider, the caches, the
//! refresher, metrics. Knows no handler and no router.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::Request;
use http::header;
use tokio::sync::watch;
use url::Url;

use crate::config::{Config, Frontend, KeySource, Route, Tls};
use crate::cookies::RequestCookies;
use crate::error::Error;
use crate::flight;
use crate::http_client::{HttpClient, HttpError};
use crate::jar::{self, Cookies, Loaded};
use crate::keys::{self, KeyError, KeyRing, ModePolicy};
use crate::metrics::Metrics;
use crate::oidc::{Provider, RefreshFailure, Settings};
use crate::proxy;
use crate::refresh::{Granted, Outcome, Refresher, Role};
use crate::secret::SecretString;
use crate::session::Limits;
use crate::session::Session;
use crate::session_cache::SessionCache;
use crate::store::Store;
use crate::sync;

/// How long a login that arrives before discovery finished waits for it.
const PROVIDER_WAIT: Duration = Duration::from_secs(3);
/// Outbound timeout for calls to the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new instance with `[store]` stays unready while it has not read the fleet's
/// revocations yet: long enough for a reachable store (one round trip), short enough that a
/// store outage does not keep new instances out of service (they then start with no
/// revocation known, and learn them when the store is back: see README "Shared store").
const STORE_SYNC_WAIT: Duration = Duration::from_secs(10);
/// Largest provider answer read (token responses, discovery, JWKS, userinfo).
const PROVIDER_MAX_BODY: usize = 256 * 1024;

/// Everything a request needs, shared by all of them.
pub struct App {
    pub public_url: Url,
    /// `public_url`'s origin as browsers write it in `Origin` (worked out once).
    pub public_origin: String,
    keys: RwLock<Arc<KeyRing>>,
    /// The current ring's `id`, readable without the lock (the session cache's hit path).
    ring_id: AtomicU64,
    /// The key folder and its permission policy, when the ring comes from a folder.
    key_dir: Option<(PathBuf, ModePolicy)>,
    /// TLS termination, when configured: the files and the current acceptor.
    tls_files: Option<Tls>,
    tls: RwLock<Option<tokio_rustls::TlsAcceptor>>,
    /// Server limits.
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    /// Idle HTTP/1.1 keep-alive and HTTP/2 connections, and silent WebSocket tunnels, are
    /// closed after this.
    pub idle_timeout: Duration,
    /// `/metrics` is served on the admin listener only (`[server] admin_listen` is set).
    pub metrics_on_admin: bool,
    /// Turns true at the end of the drain: connections and tunnels still open close.
    closing: watch::Sender<bool>,
    pub cookies: Cookies,
    pub limits: Limits,
    pub http: HttpClient,
    pub frontend: Option<Frontend>,
    /// Longest prefix first.
    pub routes: Vec<Route>,
    /// The client of each route, in the order of `routes`: the shared one, or the route's
    /// own when it trusts a private CA (`ca_file`).
    pub route_clients: Vec<HttpClient>,
    /// What upstreams are told in `Forwarded` and `X-Forwarded-*`.
    pub forwarding: proxy::Forwarding,
    pub metrics: Metrics,
    /// Sessions already opened, for proxied calls; emptied whenever the key ring changes.
    pub sessions: SessionCache,
    /// The latest DPoP nonce of each upstream origin (RFC 9449 §9): a fact about an
    /// upstream, not about a session or a key ring.
    pub dpop_nonces: crate::dpop::Nonces,
    refresher: Refresher,
    /// The shared store (`[store]`), when configured.
    store: Option<Arc<Store>>,
    provider: watch::Receiver<Option<Arc<Provider>>>,
    draining: AtomicBool,
    started: std::time::Instant,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("public_url", &self.public_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Starts the provider's discovery: retried with backoff until it succeeds.
pub type Discovery = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl App {
    /// Builds the state and the discovery task that the caller spawns; `/readyz` answers
    /// 503 until that task has loaded the provider's metadata.
    pub fn new(
        config: Config,
        ring: KeyRing,
        tls: Option<tokio_rustls::TlsAcceptor>,
        store: Option<Arc<Store>>,
    ) -> Result<(Arc<App>, Discovery), HttpError> {
        let http = HttpClient::new(PROVIDER_TIMEOUT, PROVIDER_MAX_BODY)?;
        let settings = provider_settings(&config);
        let (tx, rx) = watch::channel(None);
        let discovery_http = http.clone();
        let discovery: Discovery = Box::pin(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match Provider::discover(settings.clone(), discovery_http.clone()).await {
                    Ok(p) => {
                        tracing::info!(issuer = %p.issuer(), "provider metadata loaded");
                        let _ = tx.send(Some(Arc::new(p)));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "provider discovery failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        let key_dir = match &config.keys.source {
            KeySource::Dir(dir) => Some((
                dir.clone(),
                if config.keys.allow_group_read {
                    ModePolicy::AllowGroupRead
                } else {
                    ModePolicy::OwnerOnly
                },
            )),
            KeySource::Ring { .. } => None,
        };
        let route_clients = config
            .routes
            .iter()
            .map(|r| match &r.ca_file {
                Some(ca) => HttpClient::with_ca_file(PROVIDER_TIMEOUT, PROVIDER_MAX_BODY, ca),
                None => Ok(http.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let app = App {
            forwarding: proxy::Forwarding::new(&config.public_url),
            public_origin: config.public_url.origin().ascii_serialization(),
            public_url: config.public_url.clone(),
            ring_id: AtomicU64::new(ring.id()),
            keys: RwLock::new(Arc::new(ring)),
            key_dir,
            tls_files: config.tls.clone(),
            tls: RwLock::new(tls),
            shutdown_delay: config.server.shutdown_delay,
            drain_timeout: config.server.drain_timeout,
            max_connections: config.server.max_connections,
            idle_timeout: config.server.idle_timeout,
            metrics_on_admin: config.server.admin_listen.is_some(),
            closing: watch::Sender::new(false),
            cookies: Cookies::new(
                config.cookies.secure,
                config.cookies.same_site,
                config.cookies.max_chunks,
            ),
            limits: Limits {
                absolute: config.session.absolute.as_secs(),
                idle: config.session.idle.as_secs(),
                refresh_skew: config.session.refresh_skew.as_secs(),
            },
            http,
            frontend: config.frontend,
            metrics: Metrics::new(config.routes.iter().map(|r| r.prefix.clone()).collect()),
            sessions: SessionCache::new(config.session.cache_entries),
            dpop_nonces: crate::dpop::Nonces::default(),
            routes: config.routes,
            route_clients,
            refresher: Refresher::default(),
            store,
            provider: rx,
            draining: AtomicBool::new(false),
            started: std::time::Instant::now(),
        };
        Ok((Arc::new(app), discovery))
    }

    /// The shared store, when `[store]` is configured.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Empties the session cache whenever the store learns a revocation, so that a revoked
    /// session's next call takes the full path (and its revocation check). Runs for the
    /// life of the process; returns at once without a store.
    pub async fn watch_revocations(self: Arc<Self>) {
        let Some(store) = &self.store else { return };
        let mut changes = store.changes();
        while changes.changed().await.is_ok() {
            self.sessions.clear();
        }
    }

    /// The current key ring.
    pub fn keys(&self) -> Arc<KeyRing> {
        sync::read(&self.keys).clone()
    }

    /// The current key ring's `KeyRing::id`.
    pub fn ring_id(&self) -> u64 {
        self.ring_id.load(Ordering::Acquire)
    }

    /// Re-reads the key folder. A ring that does not load is refused and the current one
    /// kept: a half-written Secret or a typo never logs anyone out. A `retry` of a refused
    /// reload is counted again but logged at debug only: a folder left broken does not
    /// write an error line every poll.
    pub fn reload_keys(&self, why: &str, retry: bool) -> Result<(), KeyError> {
        let Some((dir, policy)) = &self.key_dir else {
            return Ok(());
        };
        match KeyRing::load_dir(dir, *policy) {
            Ok(ring) => {
                let kids: Vec<String> = ring.kids().map(str::to_owned).collect();
                {
                    let mut current = sync::write(&self.keys);
                    self.ring_id.store(ring.id(), Ordering::Release);
                    *current = Arc::new(ring);
                }
                // Entries are keyed to the old ring and would miss anyway; free them now.
                self.sessions.clear();
                self.metrics.key_reload("ok");
                tracing::info!(why, primary = %kids.first().map_or("", String::as_str), kids = ?kids, "key ring reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics.key_reload("failed");
                if retry {
                    tracing::debug!(why, error = %e, "key ring still refused");
                } else {
                    tracing::error!(why, error = %e, "key ring reload refused; keeping the current ring");
                }
                Err(e)
            }
        }
    }

    /// The current TLS acceptor, when TLS is configured.
    pub fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        sync::read(&self.tls).clone()
    }

    /// Re-reads the certificate and key; a pair that does not load is refused and the
    /// current one kept.
    pub fn reload_tls(&self, why: &str) {
        let Some(files) = &self.tls_files else { return };
        match crate::tls::acceptor(&files.cert, &files.key) {
            Ok(acceptor) => {
                *sync::write(&self.tls) = Some(acceptor);
                self.metrics.key_reload("ok");
                tracing::info!(why, "TLS certificate reloaded");
            }
            Err(e) => {
                self.metrics.key_reload("failed");
                tracing::error!(why, error = %e, "TLS reload refused; keeping the current certificate");
            }
        }
    }

    fn tls_fingerprint(&self) -> Option<(Option<SystemTime>, Option<SystemTime>)> {
        let files = self.tls_files.as_ref()?;
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&files.cert), modified(&files.key)))
    }

    /// Reloads the key ring when its folder changes (polled every `every`: robust across
    /// filesystems and Kubernetes' symlink swaps, where inotify is not) and on SIGHUP; on
    /// each poll, drops the session cache's entries that can no longer be served. A refused
    /// reload is tried again on every poll until one succeeds: its cause may be transient
    /// (EMFILE, EIO, a mode fixed by `chmod`) and leave the folder's fingerprint as it was.
    pub async fn watch_keys(self: Arc<Self>, every: Duration) {
        let dir = self.key_dir.as_ref().map(|(d, _)| d.clone());
        let fingerprint =
            |dir: &Option<PathBuf>| dir.as_ref().and_then(|d| keys::dir_fingerprint(d).ok());
        let mut last = fingerprint(&dir);
        let mut refused = false;
        let mut last_tls = self.tls_fingerprint();
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = hangup => {
                    refused = self.reload_keys("SIGHUP", false).is_err();
                    self.reload_tls("SIGHUP");
                    last = fingerprint(&dir);
                    last_tls = self.tls_fingerprint();
                }
                _ = tokio::time::sleep(every) => {
                    self.sessions.sweep(crate::clock::now_secs());
                    self.refresher.sweep();
                    let now = fingerprint(&dir);
                    if now != last {
                        last = now;
                        refused = self.reload_keys("key folder changed", false).is_err();
                    } else if refused {
                        refused = self.reload_keys("retry of a refused reload", true).is_err();
                    }
                    let now_tls = self.tls_fingerprint();
                    if now_tls != last_tls {
                        last_tls = now_tls;
                        self.reload_tls("certificate changed");
                    }
                }
            }
        }
    }

    /// The provider, waiting briefly if discovery has not finished yet.
    pub async fn provider(&self) -> Result<Arc<Provider>, Error> {
        if let Ok(p) = self.provider_now() {
            return Ok(p);
        }
        let mut rx = self.provider.clone();
        let waited = tokio::time::timeout(PROVIDER_WAIT, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(p)) => p.clone().ok_or_else(not_ready),
            _ => Err(not_ready()),
        }
    }

    /// The provider if discovery has finished.
    pub fn provider_now(&self) -> Result<Arc<Provider>, Error> {
        self.provider.borrow().clone().ok_or_else(not_ready)
    }

    /// Ready: keys loaded (always, once built), provider discovered, not draining, and
    /// with `[store]`, the fleet's revocations read once (or `STORE_SYNC_WAIT` passed
    /// without: a store outage must not keep new instances out of service). Once ready, a
    /// store outage never makes an instance unready.
    pub fn is_ready(&self) -> bool {
        let store_known = self
            .store
            .as_ref()
            .is_none_or(|s| s.has_synced() || self.started.elapsed() >= STORE_SYNC_WAIT);
        self.provider.borrow().is_some() && !self.draining.load(Ordering::Relaxed) && store_known
    }

    /// Marks the instance as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ends the drain: every connection and WebSocket tunnel still open closes.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// What the transport needs of this instance to forward one request.
    pub fn hop(&self) -> proxy::Hop<'_> {
        proxy::Hop {
            ours: &self.cookies,
            public: &self.forwarding,
            idle: self.idle_timeout,
            closing: &self.closing,
        }
    }

    /// Turns true when the drain ends (`close_all`).
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The request's cookies, parsed once. (UTF-8 is checked rather than `to_str`'s visible
    /// ASCII: the same for every value sealgate writes, and much faster on the kilobytes
    /// of session cookie every API call carries.)
    pub fn request_cookies<'a, B>(&self, req: &'a Request<B>) -> RequestCookies<'a> {
        RequestCookies::parse_keeping(
            req.headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok()),
            |name| self.cookies.is_ours(name),
        )
    }

    /// Refreshes the session's access token: one grant per refresh token on this instance,
    /// shared by concurrent and shortly later requests, and backed off while the provider
    /// fails (see `refresh`); with `[store]`, one per refresh token in the fleet (see
    /// `flight`). Counts each request's outcome, and each failed grant's class.
    pub async fn refresh(&self, session: &Session) -> Outcome {
        let Some(rt) = session.refresh_token.clone() else {
            return Outcome::Fatal;
        };
        let Ok(provider) = self.provider().await else {
            self.metrics.refresh("transient");
            return Outcome::Transient(RefreshFailure::Network);
        };
        // The session's DPoP key (when it has one) signs the refresh's proof; a seed that does
        // not decode fails the grant as a transient `other_error` (never for a cookie we sealed).
        let key = session.dpop_key.as_ref().map(crate::oidc::proof_key);
        let (outcome, role) = match self.store.clone() {
            None => {
                self.refresher
                    .refresh(&rt, || {
                        let rt = rt.clone();
                        async move {
                            let key = key.transpose()?;
                            provider.refresh(&rt, key.as_ref()).await
                        }
                    })
                    .await
            }
            Some(store) => {
                let ring = self.keys();
                self.refresher
                    .refresh(&rt, || {
                        let rt = rt.clone();
                        async move {
                            let key = match key.transpose() {
                                Ok(key) => key,
                                Err(e) => return Granted::from(Err(e.into())),
                            };
                            let grant = || provider.refresh(&rt, key.as_ref());
                            flight::run(&*store, &ring, &rt, flight::Timing::default(), grant).await
                        }
                    })
                    .await
            }
        };
        let label = match (&outcome, role) {
            (Outcome::Refreshed(_), Role::Leader | Role::Fallback) => "ok",
            (Outcome::Refreshed(_), Role::Follower | Role::Fleet) => "shared",
            (Outcome::Fatal, _) => "fatal",
            (Outcome::Transient(_), _) => "transient",
        };
        self.metrics.refresh(label);
        let flight = match role {
            Role::Leader if self.store.is_some() => Some("fleet_leader"),
            Role::Leader | Role::Follower => None,
            Role::Fleet => Some("fleet_follower"),
            Role::Fallback => Some("local_fallback"),
        };
        if let Some(source) = flight {
            self.metrics.refresh_flight(source);
        }
        if matches!(role, Role::Leader | Role::Fallback) {
            match &outcome {
                Outcome::Refreshed(_) => {}
                Outcome::Fatal => self
                    .metrics
                    .refresh_failure(RefreshFailure::InvalidGrant.as_str()),
                Outcome::Transient(class) => self.metrics.refresh_failure(class.as_str()),
            }
        }
        if role != Role::Follower {
            tracing::info!(outcome = label, source = flight, "access token refresh");
        }
        outcome
    }

    /// The tokens a refresh of `refresh_token` brought cannot be kept (they do not fit the
    /// cookies): the flight counts as failed for its grace window, so that no request
    /// replays `refresh_token`, which the provider may have rotated away.
    pub fn refresh_unusable(&self, refresh_token: &SecretString) {
        self.refresher.fail(refresh_token);
        self.metrics
            .refresh_failure(RefreshFailure::UnusableTokens.as_str());
        tracing::warn!(
            class = RefreshFailure::UnusableTokens.as_str(),
            "refreshed tokens do not fit the session cookies; session kept"
        );
    }

    /// The cookie context of one request: its cookies, the ring read once, the time.
    pub fn ctx<'a>(
        &'a self,
        jar: &'a RequestCookies<'a>,
        ring: &'a KeyRing,
        now: u64,
    ) -> jar::Ctx<'a> {
        jar::Ctx {
            jar,
            ring,
            cookies: &self.cookies,
            limits: &self.limits,
            now,
        }
    }

    /// Opens the session, counting the reason when there is none. A session the store
    /// knows as revoked (back-channel logout, `sealgate sessions revoke`) is over: 401, and
    /// its cookies are cleared.
    pub fn load_session(&self, ctx: &jar::Ctx<'_>) -> Result<Loaded, Error> {
        let loaded = ctx.load().map_err(|reason| {
            self.metrics.rejected(reason.as_str());
            if reason != jar::Rejected::Missing {
                tracing::info!(reason = reason.as_str(), "session cookie refused");
            }
            Error::LoginRequired(reason.as_str())
        })?;
        if let Some(store) = &self.store {
            let s = &loaded.session;
            if store.is_revoked(&s.sub, s.sid.as_deref(), s.created_at, ctx.now) {
                self.metrics.rejected("revoked");
                tracing::info!("session revoked");
                return Err(Error::SessionEnded {
                    reason: "session revoked",
                    clear: self.cookies.clear_session(ctx.jar),
                });
            }
        }
        Ok(loaded)
    }
}

/// The client's settings for the provider, from the configuration.
pub fn provider_settings(config: &Config) -> Settings {
    let origin = config.public_url.as_str().trim_end_matches('/');
    Settings {
        issuer: config.oidc.issuer.clone(),
        client_id: config.oidc.client_id.clone(),
        client_secret: config.oidc.client_secret.clone(),
        scopes: config.oidc.scopes.clone(),
        // public_url was checked to be an origin, so this always parses.
        redirect_uri: Url::parse(&format!("{origin}/bff/callback"))
            .unwrap_or_else(|_| config.public_url.clone()),
        post_logout_redirect_uri: config.public_url.clone(),
        allow_insecure_http: config.oidc.allow_insecure_http,
        client_auth: config.oidc.client_auth,
        client_key: config.oidc.client_key.clone(),
        client_key_next: config.oidc.client_key_next.clone(),
        par: config.oidc.par,
        dpop: config.oidc.dpop,
        authorization_params: config.oidc.authorization_params.clone(),
    }
}

fn not_ready() -> Error {
    Error::ProviderUnavailable("provider metadata not loaded yet".into())
}
