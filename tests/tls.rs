//! TLS termination against the real binary, with a self-signed certificate made here by
//! `openssl`: HTTP/1.1 and HTTP/2 (ALPN) are both served, and a replaced certificate is
//! picked up without a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly by design"
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port, keygen, openssl, wait_until, write_config};

/// A self-signed certificate for 127.0.0.1 with subject `cn`, as `cert.pem`/`key.pem`.
fn make_cert(dir: &Path, cn: &str) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "key.pem.new",
            "-out",
            "cert.pem.new",
        ],
        dir,
    );
    // Replace both files by rename, as a Secret update or cert-manager would.
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem")).unwrap();
}

/// `curl` over TLS: "<http version> <status>".
fn curl(port: u16, version: &str) -> String {
    common::curl(
        "%{http_version} %{http_code}",
        &["-k", version],
        &format!("https://127.0.0.1:{port}/healthz"),
    )
}

/// The subject CN of the certificate the server presents.
fn served_cn(port: u16) -> String {
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(s_client.stdout.take().unwrap())
        .output()
        .unwrap();
    let _ = s_client.wait();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn serves_http1_and_http2_over_tls_and_reloads_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_cert(dir, "first");
    let keys = dir.join("keys");
    keygen(&keys);
    let port = free_port();
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let config = write_config(dir, port, &keys, &tls);
    let _server = Server::start(&config, None);
    wait_until("the server over TLS", || {
        curl(port, "--http1.1") == "1.1 200"
    });
    assert_eq!(curl(port, "--http2"), "2 200");
    assert!(served_cn(port).contains("first"), "{}", served_cn(port));

    make_cert(dir, "second");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served_cn(port).contains("second") {
        assert!(
            Instant::now() < deadline,
            "certificate not reloaded: {}",
            served_cn(port)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(curl(port, "--http2"), "2 200");
}
