//! The one outbound HTTP client (hyper-util over rustls with the ring provider): pooled
//! connections, a timeout on every exchange, a cap on response bodies read into memory,
//! and no redirect ever followed (a 3xx is returned as is: the SSRF guard the oauth2 crate
//! asks of its HTTP clients).
//!
//! Knows nothing of OIDC or cookies; `oidc` uses it through `openidconnect`'s
//! `AsyncHttpClient`, the proxy through `send`. A route whose upstream sits behind a
//! private CA gets a client of its own that trusts that CA's certificates instead of the
//! webpki roots (`with_ca_file`).

use std::cell::Cell;
use std::error::Error as StdError;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::builderstates::WantsSchemes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

pub use crate::reply::{BoxError, OutBody};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why an outbound exchange failed. None of these carries a token or a body.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection could not be made (refused, DNS, TLS).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The exchange broke off (reset, malformed HTTP).
    #[error("exchange failed: {0}")]
    Exchange(String),
    /// The response body exceeded the cap.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    /// TLS could not be set up at start-up.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Why a CA file was refused; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CaFileError {
    path: String,
    reason: String,
}

type Pool = Client<HttpsConnector<HttpConnector>, OutBody>;

/// A clonable handle on the client's connection pools: one per server worker thread
/// (`worker_pools`), so that a proxied request and the upstream connection it rides on are
/// driven by the same thread (hyper drives a pooled connection on the runtime that opened
/// it), and a shared one for every other thread (start-up, background tasks, admin).
#[derive(Clone, Debug)]
pub struct HttpClient {
    workers: Arc<[Pool]>,
    shared: Pool,
    timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    /// A client trusting the webpki (Mozilla) roots, speaking HTTP/1.1 and HTTP/2 (ALPN).
    /// `timeout` bounds each whole `fetch`; `max_body` caps bodies `fetch` reads.
    pub fn new(timeout: Duration, max_body: usize) -> Result<Self, HttpError> {
        let tls = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| HttpError::Tls(e.to_string()))?;
        Ok(Self::build(tls, timeout, max_body))
    }

    /// A client that trusts only the CA certificates of this PEM file (an upstream behind
    /// a private CA), not the webpki roots: the file names exactly whom the route trusts.
    pub fn with_ca_file(
        timeout: Duration,
        max_body: usize,
        ca_file: &Path,
    ) -> Result<Self, HttpError> {
        let roots = read_roots(ca_file).map_err(|e| HttpError::Tls(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = HttpsConnectorBuilder::new().with_tls_config(config);
        Ok(Self::build(tls, timeout, max_body))
    }

    fn build(tls: HttpsConnectorBuilder<WantsSchemes>, timeout: Duration, max_body: usize) -> Self {
        // Our own TCP connector, for TCP_NODELAY: the one `build()` makes leaves Nagle on,
        // and a request whose body goes out in several writes (a streamed upload after its
        // head) would wait for the upstream's delayed ACK between them (RFC 896, RFC 1122
        // §4.2.3.2: up to 40 ms on Linux). `enforce_http(false)`: the TLS layer above takes
        // the `https` URIs.
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = tls
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let pool = || {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(connector.clone())
        };
        Self {
            workers: (0..worker_pools()).map(|_| pool()).collect(),
            shared: pool(),
            timeout,
            max_body,
        }
    }

    /// The pool of the calling thread: its worker's, or the shared one.
    fn pool(&self) -> &Pool {
        let worker = POOL.with(Cell::get);
        self.workers.get(worker).unwrap_or(&self.shared)
    }

    /// Sends a request and returns the response head with its body still streaming.
    /// Only the wait for the head is bounded by `timeout`.
    pub async fn send(
        &self,
        request: http::Request<OutBody>,
        timeout: Duration,
    ) -> Result<http::Response<Incoming>, HttpError> {
        match tokio::time::timeout(timeout, self.pool().request(request)).await {
            Err(_) => Err(HttpError::Timeout(timeout)),
            Ok(Err(e)) if e.is_connect() => Err(HttpError::Connect(root_cause(&e))),
            Ok(Err(e)) => Err(HttpError::Exchange(root_cause(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// One whole exchange, body included, within the timeout and the body cap.
    pub async fn fetch(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        let (parts, body) = request.into_parts();
        let body: OutBody = Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed();
        let request = http::Request::from_parts(parts, body);
        let exchange = async {
            let response = self.send(request, self.timeout).await?;
            let (parts, body) = response.into_parts();
            let collected = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge(self.max_body)
                    } else {
                        HttpError::Exchange(e.to_string())
                    }
                })?;
            Ok(http::Response::from_parts(
                parts,
                collected.to_bytes().to_vec(),
            ))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.fetch(request))
    }
}

thread_local! {
    /// The worker pool of this thread (`use_pool`); out of range (the shared pool) unless
    /// the thread is a server worker.
    static POOL: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// How many worker pools each client has: one per core (as the container's CPU quota
/// allows), or `TOKIO_WORKER_THREADS` when that is a positive number (the variable tokio's
/// own runtime reads, so one knob sizes both); the server runs as many worker threads, each
/// pinned to its own (`use_pool`).
pub fn worker_pools() -> usize {
    static WORKERS: OnceLock<usize> = OnceLock::new();
    *WORKERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        workers_of(std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(), cores)
    })
}

/// The worker count for a `TOKIO_WORKER_THREADS` value: it when a positive number (at
/// most 1024), else `cores`.
fn workers_of(variable: Option<&str>, cores: usize) -> usize {
    variable
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=1024).contains(n))
        .unwrap_or(cores)
}

/// Pins the calling thread to worker pool `worker` of every client (below
/// `worker_pools()`; any other value means the shared pool).
pub fn use_pool(worker: usize) {
    POOL.with(|pool| pool.set(worker));
}

/// The CA certificates of a PEM file, each one a trust anchor. A file that cannot be read,
/// is not PEM, or holds no certificate webpki accepts as an anchor is refused: at start-up,
/// never at the first request.
pub fn read_roots(path: &Path) -> Result<RootCertStore, CaFileError> {
    read_pem_roots(path).map(|(_, roots)| roots)
}

/// `read_roots`, also giving the file's bytes (for a client that takes PEM, as redis-rs
/// does): the file is read once.
pub fn read_pem_roots(path: &Path) -> Result<(Vec<u8>, RootCertStore), CaFileError> {
    let refuse = |reason: String| CaFileError {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| refuse(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        return Err(refuse(format!(
            "{ignored} certificate(s) could not be parsed"
        )));
    }
    if added == 0 {
        return Err(refuse("no certificate in the file".into()));
    }
    Ok((pem, roots))
}

/// The innermost cause of an error, which is where hyper puts the useful words.
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_count_follows_tokio_worker_threads_else_the_cores() {
        assert_eq!(workers_of(None, 4), 4);
        assert_eq!(workers_of(Some("1"), 4), 1);
        assert_eq!(workers_of(Some(" 3 "), 4), 3);
        for bad in ["0", "-1", "two", "", "100000"] {
            assert_eq!(workers_of(Some(bad), 2), 2, "{bad:?}");
        }
    }

    fn pool_of(client: &HttpClient, worker: Option<usize>) -> usize {
        let client = client.clone();
        std::thread::spawn(move || {
            if let Some(w) = worker {
                use_pool(w);
            }
            std::ptr::from_ref(client.pool()) as usize
        })
        .join()
        .expect("thread")
    }

    #[test]
    fn keeps_each_worker_thread_on_its_own_pool() {
        let client = HttpClient::new(Duration::from_secs(1), 1024).expect("client");
        let shared = pool_of(&client, None);
        let first = pool_of(&client, Some(0));
        assert_ne!(first, shared, "a worker does not share the others' pool");
        assert_eq!(
            first,
            pool_of(&client, Some(0)),
            "a clone drives the same pools"
        );
        if worker_pools() > 1 {
            assert_ne!(first, pool_of(&client, Some(1)), "two workers, two pools");
        }
        assert_eq!(
            pool_of(&client, Some(worker_pools())),
            shared,
            "beyond: shared"
        );
    }
}
