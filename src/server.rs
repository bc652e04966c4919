//! The listeners: accept connections, serve HTTP/1.1 and HTTP/2 (h2c) with hyper-util's auto
//! builder (the main listener's connections on one worker thread per core, see `workers`),
//! and bound what a connection may hold: a slot out of `max_connections` for as long
//! as its socket lives (a WebSocket tunnel included), a request head within 10 s of accept,
//! and no more than `idle_timeout` with nothing in flight. On SIGTERM or Ctrl-C: stop
//! accepting, let in-flight requests finish within the drain time, close the rest, return.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::app::App;
use crate::http_client::BoxError;
use crate::proxy::Peer;
use crate::reply::Body;
use crate::router;

mod workers;
use workers::Workers;

/// Largest request head (request line and headers) read: room for a session at the chunk
/// cap plus the application's own cookies; beyond it hyper answers 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client must send its first request head within this time from accept (slowloris:
/// also a client that sends nothing, or only the HTTP/2 preface). Later HTTP/1.1 heads get
/// the same time from their first byte (hyper's `header_read_timeout`).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection told to close gracefully (idle, or draining) that has nothing in flight
/// and is still open this long after is dropped: an HTTP/2 peer that never answers the
/// GOAWAY's PING (RFC 9113 §6.8), an HTTP/1.1 head begun and never finished.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// HTTP/2 keep-alive (RFC 9113 §6.7): a PING every this often, and the connection closed
/// when its ACK does not come within as long again, so a vanished peer frees its slot.
const H2_PING: Duration = Duration::from_secs(20);
/// Connections the admin listener serves at once: its own slots, so that a full main
/// listener never hides the metrics.
const ADMIN_MAX_CONNECTIONS: usize = 16;

/// Serves `listener` (and `admin`, when set: `/metrics` and the health endpoints) until a
/// shutdown signal, then drains for at most the configured drain time and closes the rest.
pub async fn run(app: Arc<App>, listener: TcpListener, admin: Option<TcpListener>) {
    let (workers, running) = match Workers::start() {
        Ok((workers, running)) => (Some(Arc::new(workers)), Some(running)),
        // Still a server: every connection on the main runtime, as the admin listener's.
        Err(e) => {
            tracing::warn!(error = %e, "worker threads failed to start; serving on the main runtime");
            (None, None)
        }
    };
    let (drain_tx, draining) = watch::channel(false);
    let builder = Arc::new(builder(&app));
    let main = Arc::new(Listening {
        app: app.clone(),
        builder: builder.clone(),
        slots: Arc::new(Semaphore::new(app.max_connections)),
        admin: false,
        draining: draining.clone(),
        workers,
    });
    let admin_side = Arc::new(Listening {
        app: app.clone(),
        builder,
        slots: Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS)),
        admin: true,
        draining,
        workers: None,
    });
    // On SIGTERM: first `shutdown_delay` of "lame duck" (still accepting, /readyz 503), then
    // stop accepting and drain.
    let signal = async {
        shutdown_signal().await;
        app.start_draining();
        tracing::info!(delay = ?app.shutdown_delay, "SIGTERM: /readyz now 503");
        tokio::time::sleep(app.shutdown_delay).await;
        tracing::info!(drain = ?app.drain_timeout, "shutting down: draining connections");
        drain_tx.send_replace(true);
    };
    let admin_accept = async {
        if let Some(l) = admin {
            accept(admin_side.clone(), l).await;
        }
    };
    tokio::join!(accept(main.clone(), listener), admin_accept, signal);
    // Every slot back means every connection and tunnel is gone.
    let all = u32::try_from(app.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = main.slots.acquire_many(all) => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(app.drain_timeout) => tracing::warn!("drain time over; closing the rest"),
    }
    app.close_all();
    // Let the connections' tasks see the signal and close their sockets.
    let _ = tokio::time::timeout(CLOSE_GRACE, main.slots.acquire_many(all)).await;
    if let Some(running) = running {
        running.stop();
    }
}

fn builder(app: &App) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(Some(H2_PING.min(app.idle_timeout)))
        .keep_alive_timeout(H2_PING);
    builder
}

/// What every connection of one listener shares.
struct Listening {
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    slots: Arc<Semaphore>,
    /// The admin listener: `/metrics` and the health endpoints only.
    admin: bool,
    /// Turns true when the drain starts.
    draining: watch::Receiver<bool>,
    /// Where its connections are served; `None`: on the runtime that accepts them.
    workers: Option<Arc<Workers>>,
}

/// Accepts until the drain starts. At most as many connections as there are slots: beyond,
/// connections wait in the accept queue. Both waits give way to the drain, so SIGTERM is
/// honoured with every slot held.
async fn accept(l: Arc<Listening>, listener: TcpListener) {
    let mut draining = l.draining.clone();
    loop {
        let permit = tokio::select! {
            permit = l.slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = draining.wait_for(|d| *d) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = draining.wait_for(|d| *d) => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let Some(workers) = &l.workers else {
                    let slot = Slot {
                        io: stream,
                        _permit: permit,
                    };
                    tokio::spawn(connection(l.clone(), slot, addr));
                    continue;
                };
                // Off this runtime's reactor, onto the worker's.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "accepted socket lost");
                        continue;
                    }
                };
                let l = l.clone();
                workers.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(io) => {
                            let slot = Slot {
                                io,
                                _permit: permit,
                            };
                            connection(l, slot, addr).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "accepted socket lost"),
                    }
                });
            }
            // EMFILE and friends: log, pause, go on; never end the server over it.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection, from accept to close: TLS when configured (main listener only), then
/// HTTP under the connection's deadlines.
async fn connection(l: Arc<Listening>, stream: Slot<TcpStream>, addr: SocketAddr) {
    let activity = Arc::new(Activity::new());
    let service = {
        let app = l.app.clone();
        let activity = activity.clone();
        let peer = Peer::new(addr);
        let admin = l.admin;
        service_fn(move |req| {
            let app = app.clone();
            let peer = peer.clone();
            let in_flight = InFlight::start(&activity);
            async move {
                let response = if admin {
                    router::handle_admin(&app, &req)
                } else {
                    router::handle(&app, req, &peer).await
                };
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let acceptor = if l.admin { None } else { l.app.tls_acceptor() };
    match acceptor {
        None => drive(&l, TokioIo::new(stream), service, &activity).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => drive(&l, TokioIo::new(tls), service, &activity).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

/// Serves HTTP on `io` until the peer closes, or one of the connection's limits closes it:
/// no request head within `HEADER_READ_TIMEOUT` of accept (dropped), nothing in flight for
/// `idle_timeout` (closed gracefully: HTTP/1.1 at once, HTTP/2 with GOAWAY, RFC 9113
/// §6.8), the drain (closed gracefully), the end of the drain (dropped).
async fn drive<I, S>(l: &Listening, io: I, service: S, activity: &Activity)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Tracked>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let idle = l.app.idle_timeout;
    let conn = l.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let drain = became_true(l.draining.clone());
    tokio::pin!(drain);
    let close = became_true(l.app.closing());
    tokio::pin!(close);
    // One timer per connection, re-armed only when it fires: the request path never
    // touches it.
    let head_deadline = activity.epoch + HEADER_READ_TIMEOUT;
    let timer = tokio::time::sleep_until(activity.epoch + HEADER_READ_TIMEOUT.min(idle));
    tokio::pin!(timer);
    let mut closing_gracefully = false;
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut close => return,
            () = &mut drain, if !closing_gracefully => {
                conn.as_mut().graceful_shutdown();
                closing_gracefully = true;
                timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            () = &mut timer => {
                let now = Instant::now();
                let next = if activity.busy() {
                    // Checked again later; the answer's end moves `quiet_since`.
                    now + idle
                } else if closing_gracefully {
                    tracing::debug!("connection ignored a graceful close; dropped");
                    return;
                } else {
                    match activity.quiet_since() {
                        None if now < head_deadline => head_deadline,
                        None => {
                            tracing::debug!("no request head within 10 s of accept; dropped");
                            return;
                        }
                        Some(since) if now >= since + idle => {
                            tracing::debug!("connection idle; closing");
                            conn.as_mut().graceful_shutdown();
                            closing_gracefully = true;
                            now + CLOSE_GRACE
                        }
                        Some(since) => since + idle,
                    }
                };
                timer.as_mut().reset(next);
            }
        }
    }
}

/// Resolves once `rx` holds true (or its sender is gone: the server is ending).
async fn became_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// What a connection's deadlines read: written by each request as it starts and ends.
struct Activity {
    /// When the connection was accepted.
    epoch: Instant,
    /// Requests whose answer is not fully handed to the connection yet.
    in_flight: AtomicU32,
    /// When the last answer ended, in ms since `epoch`; `NEVER` before the first.
    quiet_since: AtomicU64,
}

/// `Activity::quiet_since` before any answer.
const NEVER: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            quiet_since: AtomicU64::new(NEVER),
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When the connection last had nothing in flight; `None` when it has never served a
    /// request.
    fn quiet_since(&self) -> Option<Instant> {
        match self.quiet_since.load(Ordering::Acquire) {
            NEVER => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }
}

/// One request in flight, from its head to the end of its answer's body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1);
        // The time first, so that whoever sees the count at 0 also sees when it got there.
        a.quiet_since.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request in flight until hyper drops it (sent, or the
/// peer gone): a long download is not an idle connection.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket and its slot: the slot is given back when the socket closes, which after a
/// WebSocket upgrade is when the tunnel that took the socket over ends. So tunnels count
/// against `max_connections`.
struct Slot<S> {
    io: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Slot<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Slot<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
