//! Upstream TLS against the real binary: an https upstream whose certificate a private CA
//! (made here by `openssl`) signed is refused under the webpki roots (502) and served with
//! the route's `ca_file` (200); a `ca_file` that is not PEM stops start-up naming its key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly by design"
)]

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use common::{Server, bin, free_port, keygen, make_private_ca, wait_until, write_config};

/// An https upstream on 127.0.0.1 answering every request 200 "upstream ok", served by a
/// runtime of its own until the returned runtime is dropped.
fn start_upstream(dir: &Path) -> (tokio::runtime::Runtime, u16) {
    let acceptor = sealgate::tls::acceptor(&dir.join("leaf.pem"), &dir.join("leaf.key")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"upstream ok"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (rt, port)
}

/// `curl` through sealgate with `X-CSRF: 1`: the status code.
fn status(port: u16, path: &str) -> String {
    common::curl(
        "%{http_code}",
        &["-H", "X-CSRF: 1"],
        &format!("http://127.0.0.1:{port}{path}"),
    )
}

#[test]
fn refuses_private_ca_upstream_unless_the_route_names_its_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_private_ca(dir);
    let (_upstream, up) = start_upstream(dir);
    let keys = dir.join("keys");
    keygen(&keys);
    let port = free_port();
    let routes = format!(
        "[[routes]]\nprefix = \"/webpki/\"\nupstream = \"https://127.0.0.1:{up}\"\ntoken = \"none\"\n\
         [[routes]]\nprefix = \"/private/\"\nupstream = \"https://127.0.0.1:{up}\"\ntoken = \"none\"\nca_file = \"{}\"\n",
        dir.join("ca.pem").display()
    );
    let config = write_config(dir, port, &keys, &routes);
    let _server = Server::start(&config, None);
    wait_until("sealgate to listen", || status(port, "/healthz") == "200");

    assert_eq!(
        status(port, "/webpki/x"),
        "502",
        "the private CA is in no webpki root store"
    );
    assert_eq!(status(port, "/private/x"), "200", "trusted through ca_file");
}

#[test]
fn refuses_to_start_with_a_ca_file_that_is_not_pem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("not-a-ca.pem"), "not a certificate\n").unwrap();
    let keys = dir.join("keys");
    keygen(&keys);
    // The broken route is the file's second but the longest prefix (Config's first).
    let routes = format!(
        "[[routes]]\nprefix = \"/a/\"\nupstream = \"https://127.0.0.1:1\"\n\
         [[routes]]\nprefix = \"/longer/\"\nupstream = \"https://127.0.0.1:1\"\nca_file = \"{}\"\n",
        dir.join("not-a-ca.pem").display()
    );
    let config = write_config(dir, free_port(), &keys, &routes);
    // serve through the guard (bounded even if it would start), check directly.
    let log = dir.join("serve.log");
    let code = Server::start(&config, Some(&log)).wait_exit(Duration::from_secs(10));
    let serve_err = std::fs::read_to_string(&log).unwrap();
    let check = bin()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let check_err = String::from_utf8_lossy(&check.stderr).into_owned();
    for (command, code, stderr) in [
        ("serve", code, serve_err),
        ("check", check.status.code(), check_err),
    ] {
        assert_eq!(code, Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("routes[1].ca_file") && stderr.contains("not-a-ca.pem"),
            "{command}: {stderr}"
        );
    }
}
