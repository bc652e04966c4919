//! Graceful shutdown of the real binary: on SIGTERM it stops accepting, lets an in-flight
//! request finish, and exits 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly by design"
)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Instance, exchange, upstream, wait_until};

/// An upstream that answers every request after `delay`.
fn slow_upstream(delay: Duration) -> u16 {
    upstream(move |mut stream| {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        std::thread::sleep(delay);
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone");
    })
}

fn request(port: u16, path: &str) -> std::io::Result<String> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n");
    exchange(port, request.as_bytes(), Duration::from_secs(10))
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let upstream = slow_upstream(Duration::from_millis(1500));
    let routes = format!(
        "[server]\ndrain_timeout = \"5s\"\n\
         [[routes]]\nprefix = \"/public/\"\nupstream = \"http://127.0.0.1:{upstream}\"\ntoken = \"none\"\n"
    );
    let Instance {
        mut server,
        port,
        tmp: _tmp,
        ..
    } = Instance::start(&routes);
    wait_until("the server", || request(port, "/healthz").is_ok());

    let in_flight = std::thread::spawn(move || request(port, "/public/slow"));
    std::thread::sleep(Duration::from_millis(300));
    server.terminate();

    let answer = in_flight.join().unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    // New connections are no longer accepted once draining started.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        request(port, "/healthz").is_err(),
        "still accepting after SIGTERM"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(8)), Some(0));
}

#[test]
fn shutdown_delay_keeps_accepting_with_readyz_503_then_stops() {
    let Instance {
        mut server,
        port,
        tmp: _tmp,
        ..
    } = Instance::start("[server]\nshutdown_delay = \"1500ms\"\n");
    wait_until("the server", || request(port, "/healthz").is_ok());
    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    // Lame duck: still accepting, but no longer ready.
    let ready = request(port, "/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(
        request(port, "/healthz")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    std::thread::sleep(Duration::from_millis(1700));
    assert!(
        request(port, "/healthz").is_err(),
        "still accepting after the delay"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
}
