//! The two reference servers of the load benchmark (scripts/bench), built from the same
//! hyper server and client code paths sealgate uses:
//!
//! - `bench_servers upstream PORT`: a fast upstream answering every request with 2 bytes;
//! - `bench_servers proxy PORT UPSTREAM_URL`: a bare reverse proxy with no authentication,
//!   sealgate's `HttpClient` behind hyper-util's auto server: the ceiling for any proxy;
//! - `bench_servers cookie KEYDIR ACCESS_TOKEN_BYTES`: prints the `Cookie` header of a
//!   session sealed under that key folder, with a JWT-shaped access token of that size and a
//!   100-byte refresh token, valid for an hour (what a browser would send on API calls);
//!   with a fourth argument `dpop`, the session is DPoP-bound (a fresh ES256 proof key
//!   sealed in it, as the login does), so every call through sealgate signs a proof.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark tool aborts on misuse"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sealgate::http_client::HttpClient;
use sealgate::reply::{self, Body};
use tokio::runtime::Handle;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("cookie") {
        let dpop = args.get(4).map(String::as_str) == Some("dpop");
        print_cookie(&args[2], args[3].parse().unwrap(), dpop);
        return;
    }
    let port: u16 = args
        .get(2)
        .and_then(|p| p.parse().ok())
        .expect("usage: bench_servers upstream|proxy PORT [UPSTREAM_URL]");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    match args.get(1).map(String::as_str) {
        Some("upstream") => {
            serve(listener, &[], |_req| async {
                Response::new(reply::full("ok"))
            })
            .await
        }
        Some("proxy") => {
            let upstream: Uri = args.get(3).expect("UPSTREAM_URL").parse().unwrap();
            let client = HttpClient::new(Duration::from_secs(30), 1 << 20).unwrap();
            // sealgate's shape (src/server/workers.rs): one current-thread runtime per
            // core on its own upstream pools, the connections handed to each in turn.
            let workers: Vec<Handle> = (0..sealgate::http_client::worker_pools())
                .map(|i| {
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        sealgate::http_client::use_pool(i);
                        tx.send(rt.handle().clone()).unwrap();
                        rt.block_on(std::future::pending::<()>());
                    });
                    rx.recv().unwrap()
                })
                .collect();
            serve(listener, &workers, move |req: Request<Incoming>| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                    parts.uri = format!("{}{}", upstream.to_string().trim_end_matches('/'), path)
                        .parse()
                        .unwrap();
                    parts.headers.remove(http::header::HOST);
                    let req = Request::from_parts(parts, reply::boxed(body));
                    match client.send(req, Duration::from_secs(30)).await {
                        Ok(r) => r.map(reply::boxed),
                        Err(_) => reply::text(http::StatusCode::BAD_GATEWAY, "bad gateway\n"),
                    }
                }
            })
            .await
        }
        _ => panic!("usage: bench_servers upstream|proxy PORT [UPSTREAM_URL]"),
    }
}

/// Serves every connection on the next of `workers`, or on this runtime when there are none.
async fn serve<F, Fut>(listener: tokio::net::TcpListener, workers: &[Handle], handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    for n in 0usize.. {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        if workers.is_empty() {
            tokio::spawn(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            continue;
        }
        let stream = stream.into_std().unwrap();
        let builder = builder.clone();
        workers[n % workers.len()].spawn(async move {
            let stream = tokio::net::TcpStream::from_std(stream).unwrap();
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn print_cookie(key_dir: &str, access_len: usize, dpop: bool) {
    use sealgate::config::SameSite;
    use sealgate::cookies::RequestCookies;
    use sealgate::keys::{KeyRing, ModePolicy};
    use sealgate::session::{Limits, Session};
    let ring = KeyRing::load_dir(std::path::Path::new(key_dir), ModePolicy::OwnerOnly).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let head = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.";
    let access = format!(
        "{head}{}.{}",
        "A".repeat(access_len - head.len() - 44),
        "s".repeat(43)
    );
    let session = Session {
        id: sealgate::session::random_id().unwrap(),
        access_token: access.as_str().into(),
        access_expires_at: Some(now + 3600),
        refresh_token: Some("r".repeat(100).as_str().into()),
        sub: "248289761001".into(),
        sid: Some("4d1c3f52-6f2e-4d2a-9b1f-0d9c8f2b7a11".into()),
        created_at: now,
        last_seen: now,
        dpop_key: dpop.then(|| {
            let alg = sealgate::jws::DpopAlg::Es256;
            sealgate::jws::DpopKey::generate(alg).unwrap().sealed()
        }),
    };
    let limits = Limits {
        absolute: 12 * 3600,
        idle: 3600,
        refresh_skew: 60,
    };
    let cookies = sealgate::jar::Cookies::new(false, SameSite::Lax, 4);
    let set = sealgate::jar::write_session(
        &RequestCookies::default(),
        &ring,
        &cookies,
        &limits,
        now,
        &session,
    )
    .unwrap();
    let header: Vec<&str> = set.iter().map(|h| h.split(';').next().unwrap()).collect();
    println!("{}", header.join("; "));
}
