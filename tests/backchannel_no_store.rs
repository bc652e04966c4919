//! `POST /bff/backchannel-logout` against the real binary without `[store]`: a logout that
//! no other instance would learn of is refused with 501, never pretended (200); other
//! methods are 405. The validation itself is unit-tested in `oidc::logout_token`, the
//! logout with a store and the real provider in `tests/e2e`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly by design"
)]

mod common;

use std::time::Duration;

use common::{Instance, exchange_lossy, head_and_body, metric, status_code, wait_until};

fn send(port: u16, request: &str) -> String {
    exchange_lossy(port, request.as_bytes(), Duration::from_secs(5))
}

#[test]
fn refuses_backchannel_logout_without_a_store() {
    let Instance {
        server: _server,
        port,
        tmp: _tmp,
        ..
    } = Instance::start("");
    wait_until("the server", || {
        status_code(&send(
            port,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )) == 200
    });

    let body = "logout_token=a.b.c";
    let answer = send(
        port,
        &format!(
            "POST /bff/backchannel-logout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status_code(&answer), 501, "{answer}");
    let (head, json) = head_and_body(&answer);
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(json).expect("a JSON body");
    assert_eq!(json["error"], "not_implemented");
    // Counted as the provider's call, not as a user's logout.
    assert_eq!(
        metric(
            port,
            "sealgate_requests_total{endpoint=\"backchannel\",code=\"5xx\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            port,
            "sealgate_requests_total{endpoint=\"logout\",code=\"5xx\"}"
        ),
        0
    );
    assert_eq!(
        metric(
            port,
            "sealgate_backchannel_logouts_total{outcome=\"no_store\"}"
        ),
        1
    );

    for method in ["GET", "PUT", "DELETE"] {
        let answer = send(
            port,
            &format!(
                "{method} /bff/backchannel-logout HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(status_code(&answer), 405, "{method}: {answer}");
        // RFC 9110 §15.5.6: a 405 names the methods that would work.
        assert!(
            answer.to_ascii_lowercase().contains("\r\nallow: post\r\n"),
            "{method}: {answer}"
        );
    }
}
