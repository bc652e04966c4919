//! Hostile requests against the real binary: oversized heads, request smuggling attempts,
//! oversized callback queries. Each gets a clear 4xx and no panic, and the server serves on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly by design"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Instance, Server, exchange_lossy, wait_until};

/// Sends raw bytes, returns the status line (or "" when the server just closed).
fn raw(port: u16, bytes: &[u8]) -> String {
    raw_all(port, bytes).lines().next().unwrap_or("").to_owned()
}

/// Sends raw bytes, returns everything the server answered until it closed.
fn raw_all(port: u16, bytes: &[u8]) -> String {
    exchange_lossy(port, bytes, Duration::from_secs(5))
}

fn start() -> (tempfile::TempDir, Server, u16) {
    let Instance {
        server, port, tmp, ..
    } = Instance::start("");
    wait_until("the server", || {
        raw(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .contains("200")
    });
    (tmp, server, port)
}

#[test]
fn refuses_hostile_requests_with_clear_statuses_and_serves_on() {
    let (_tmp, _server, port) = start();
    let healthy = || {
        raw(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    };

    // A head beyond 64 KB: 431.
    let big = format!(
        "GET /bff/user HTTP/1.1\r\nHost: x\r\nCookie: a={}\r\nConnection: close\r\n\r\n",
        "x".repeat(70 * 1024)
    );
    assert!(
        raw(port, big.as_bytes()).starts_with("HTTP/1.1 431"),
        "oversized head"
    );

    // Request smuggling: Content-Length with Transfer-Encoding. RFC 9112 §6.3: the body is
    // framed by Transfer-Encoding and the connection closed after the answer, so the request
    // hidden behind the chunked body is never served (one answer, not two).
    let cl_te = b"POST /bff/logout HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /bff/user HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\n\r\n";
    let answers = raw_all(port, cl_te);
    assert_eq!(
        answers.matches("HTTP/1.1 ").count(),
        1,
        "CL+TE answered: {answers}"
    );
    assert!(
        !answers.contains("login_required"),
        "the smuggled request was served: {answers}"
    );
    let cl_cl = b"POST /bff/logout HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde";
    let status = raw(port, cl_cl);
    assert!(
        status.starts_with("HTTP/1.1 400") || status.is_empty(),
        "CL+CL answered {status:?}"
    );

    // An oversized callback query: 400, not a provider call.
    let long = format!(
        "GET /bff/callback?state={}&code=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "s".repeat(9000)
    );
    assert!(
        raw(port, long.as_bytes()).starts_with("HTTP/1.1 400"),
        "long callback query"
    );

    // Garbage cookies of every shape: no session, never a 5xx.
    for cookie in [
        "sealgate.0=%%%",
        "sealgate.0=99.x; sealgate.1=y",
        "sealgate.0=1.AAAA",
        "=;;;=",
        "sealgate.00=1.x",
    ] {
        let req = format!(
            "GET /bff/user HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        );
        assert!(
            raw(port, req.as_bytes()).starts_with("HTTP/1.1 401"),
            "cookie {cookie:?}"
        );
    }

    // Hundreds of cookies: the first 128 are read, the rest ignored; still a clean 401.
    let many: Vec<String> = (0..600).map(|i| format!("c{i}=v{i}")).collect();
    let req = format!(
        "GET /bff/user HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        many.join("; ")
    );
    assert!(
        raw(port, req.as_bytes()).starts_with("HTTP/1.1 401"),
        "600 cookies"
    );

    assert!(
        healthy().starts_with("HTTP/1.1 200"),
        "still serving after all that"
    );
}

#[test]
fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    let (_tmp, _server, port) = start();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    // Others are served meanwhile.
    assert!(
        raw(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .starts_with("HTTP/1.1 200")
    );
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = started.elapsed();
    // hyper answers 408 or closes; either way the slot is freed after the 10 s head timeout.
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(14),
        "cut off after {waited:?}"
    );
}
