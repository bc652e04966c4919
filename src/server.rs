//! The listener: accepts connections, serves HTTP/1.1 and HTTP/2 (h2c) with hyper-util's
//! auto builder, and on SIGTERM or Ctrl-C stops accepting, lets in-flight requests finish
//! within the drain time, and returns.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::{self, App};
use crate::proxy::Peer;

/// Largest request head (request line and headers) read: room for a session at the chunk
/// cap plus the application's own cookies; beyond it hyper answers 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client must send its whole request head within this time (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until a shutdown signal, then drains for at most the configured drain time.
pub async fn run(app: Arc<App>, listener: TcpListener) {
    let drain = app.drain_timeout;
    let slots = Arc::new(tokio::sync::Semaphore::new(app.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    // On SIGTERM: first `shutdown_delay` of "lame duck" (still accepting, /readyz 503), then
    // stop accepting and drain.
    let shutdown = async {
        shutdown_signal().await;
        app.start_draining();
        tracing::info!(delay = ?app.shutdown_delay, "SIGTERM: /readyz now 503");
        tokio::time::sleep(app.shutdown_delay).await;
    };
    tokio::pin!(shutdown);
    let builder = Arc::new(builder);
    loop {
        // At most max_connections at once: beyond, connections wait in the accept queue.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let app2 = app.clone();
                    let peer = Peer::new(addr);
                    let service = service_fn(move |req| {
                        let app = app2.clone();
                        let peer = peer.clone();
                        async move { Ok::<_, Infallible>(app::handle(&app, req, &peer).await) }
                    });
                    match app.tls_acceptor() {
                        None => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            let conn = graceful.watch(conn.into_owned());
                            tokio::spawn(async move {
                                if let Err(e) = conn.await {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                                drop(permit);
                            });
                        }
                        Some(acceptor) => {
                            let builder = builder.clone();
                            let watcher = graceful.watcher();
                            tokio::spawn(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => {
                                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                                            tracing::debug!(error = %e, "connection ended with an error");
                                        }
                                    }
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                                drop(permit);
                            });
                        }
                    }
                }
                // EMFILE and friends: log, pause, go on; never end the server over it.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    app.start_draining();
    drop(listener);
    tracing::info!(drain = ?drain, "shutting down: draining connections");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(drain) => tracing::warn!("drain time over; closing the rest"),
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
