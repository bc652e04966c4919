//! Connection slots against the real binary, with raw sockets: clients that send nothing, one
//! byte, only the HTTP/2 preface, or sit idle after a request cannot hold `max_connections`
//! for ever; WebSocket tunnels hold a slot, close when idle and at the end of the drain;
//! SIGTERM is honoured with every slot held; `/metrics` moves to `admin_listen`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Instance, exchange, free_port, upstream, wait_until};

/// The server's head timeout (a constant in `server.rs`).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The `idle_timeout` these tests configure.
const IDLE: Duration = Duration::from_secs(2);
/// Slack for a loaded CI machine.
const SLACK: Duration = Duration::from_secs(3);

/// The HTTP/2 client connection preface (RFC 9113 §3.4) and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// A started server, its slots free again after the probe that waited for it.
fn start(extra: &str) -> Instance {
    let run = Instance::start(extra);
    wait_until("the server", || get(run.port, "/healthz").is_ok());
    // The probes' slots are given back as their sockets close.
    std::thread::sleep(Duration::from_millis(200));
    run
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// One `GET` on a fresh connection (`Connection: close`), the whole answer.
fn get(port: u16, path: &str) -> std::io::Result<String> {
    get_within(port, path, Duration::from_secs(5))
}

fn get_within(port: u16, path: &str, within: Duration) -> std::io::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(port, request.as_bytes(), within)
}

/// Reads until the peer closes (EOF or reset) and returns how long that took; fails when it
/// is still open after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "connection still open after {within:?}");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("connection still open after {within:?}")
            }
            Err(_) => return started.elapsed(),
        }
    }
}

/// An HTTP/1.1 keep-alive connection that has been answered once and now sits idle.
fn idle_h1(port: u16) -> TcpStream {
    let mut s = connect(port);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    s
}

/// An HTTP/2 (h2c, prior knowledge) connection that has been answered once and now sits
/// idle. The request is one HEADERS frame written by hand (RFC 7541 static table).
fn idle_h2(port: u16) -> TcpStream {
    let mut s = connect(port);
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    block.extend_from_slice(b"\x04\x08/healthz"); // :path, literal
    block.extend_from_slice(b"\x01\x01x"); // :authority, literal
    let mut frame = vec![
        0,
        0,
        u8::try_from(block.len()).unwrap(),
        0x01,
        0x05,
        0,
        0,
        0,
        1,
    ];
    frame.extend_from_slice(&block); // HEADERS, END_STREAM | END_HEADERS, stream 1
    s.write_all(H2_PREFACE).unwrap();
    s.write_all(&frame).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Frames until the answer's HEADERS on stream 1.
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).unwrap();
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        if head[3] == 0x04 && head[4] & 0x01 == 0 {
            s.write_all(b"\0\0\0\x04\x01\0\0\0\0").unwrap(); // SETTINGS ACK
        }
        if head[3] == 0x01 && head[5..9] == [0, 0, 0, 1] {
            assert_eq!(payload.first(), Some(&0x88), ":status 200");
            return s;
        }
    }
}

#[test]
fn serves_a_new_client_when_every_slot_is_held_by_clients_that_send_no_request() {
    let run = start("[server]\nmax_connections = 3\n");
    let held = Instant::now();
    let mut silent = connect(run.port);
    let mut one_byte = connect(run.port);
    one_byte.write_all(b"G").unwrap();
    let mut preface = connect(run.port);
    preface.write_all(H2_PREFACE).unwrap();

    let answer = get_within(run.port, "/healthz", HEAD_TIMEOUT + SLACK)
        .expect("a new client served within the head timeout");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let waited = held.elapsed();
    assert!(
        waited > HEAD_TIMEOUT - SLACK,
        "served after {waited:?}: the slots were not all held"
    );
    for holder in [&mut silent, &mut one_byte, &mut preface] {
        closed_within(
            holder,
            HEAD_TIMEOUT + SLACK - held.elapsed().min(HEAD_TIMEOUT),
        );
    }
}

#[test]
fn closes_idle_h1_and_h2_connections_after_idle_timeout() {
    let run = start("[server]\nmax_connections = 2\nidle_timeout = \"2s\"\n");
    let mut h1 = idle_h1(run.port);
    let mut h2 = idle_h2(run.port);
    let answered = Instant::now();
    // Both slots are held: a third client waits for an idle one to be closed.
    let answer = get_within(run.port, "/healthz", IDLE + SLACK).expect("served once idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answered.elapsed() > IDLE - Duration::from_millis(500));
    for idle in [&mut h1, &mut h2] {
        closed_within(idle, IDLE + SLACK - answered.elapsed().min(IDLE));
    }
}

#[test]
fn exits_on_sigterm_with_every_slot_held() {
    let mut run = start("[server]\nmax_connections = 2\ndrain_timeout = \"2s\"\n");
    let _silent = connect(run.port);
    let _idle = idle_h1(run.port);
    // A client waiting in the accept queue too.
    let mut waiting = connect(run.port);
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    run.server.terminate();
    assert_eq!(
        run.server
            .wait_exit(Duration::from_secs(2) + Duration::from_secs(5)),
        Some(0)
    );
}

/// An upstream that answers every request with a WebSocket 101 and then echoes.
fn echo_websocket_upstream() -> u16 {
    upstream(|mut s| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let _ = s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

fn websocket_config(max_connections: usize, extra: &str) -> String {
    format!(
        "[server]\nmax_connections = {max_connections}\n{extra}\n\
         [[routes]]\nprefix = \"/ws/\"\nupstream = \"http://127.0.0.1:{}\"\ntoken = \"none\"\n",
        echo_websocket_upstream()
    )
}

/// A WebSocket through sealgate, switched and echoing.
fn open_websocket(port: u16) -> TcpStream {
    let mut s = connect(port);
    write!(
        s,
        "GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed during the handshake");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_echoes(&mut s);
    s
}

fn assert_echoes(s: &mut TcpStream) {
    s.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
}

#[test]
fn closes_idle_websocket_tunnel_which_holds_a_connection_slot() {
    let run = start(&websocket_config(1, "idle_timeout = \"2s\""));
    let mut ws = open_websocket(run.port);
    let quiet = Instant::now();
    // The tunnel holds the only slot until it has been idle for idle_timeout.
    let answer = get_within(run.port, "/healthz", IDLE + SLACK).expect("served once idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        quiet.elapsed() > IDLE - Duration::from_millis(500),
        "served after {:?} while the tunnel held the only slot",
        quiet.elapsed()
    );
    closed_within(&mut ws, SLACK);
}

#[test]
fn keeps_websocket_tunnel_through_the_drain_then_closes_it() {
    let mut run = start(&websocket_config(4, "drain_timeout = \"2s\""));
    let mut ws = open_websocket(run.port);
    run.server.terminate();
    std::thread::sleep(Duration::from_millis(500));
    assert_echoes(&mut ws);
    let closed = closed_within(&mut ws, Duration::from_secs(2) + SLACK);
    assert!(
        closed > Duration::from_millis(1000),
        "closed after {closed:?}"
    );
    assert_eq!(run.server.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn serves_metrics_only_on_the_admin_listener() {
    let admin = free_port();
    let mut run = start(&format!("[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n"));
    let main_metrics = get(run.port, "/metrics").unwrap();
    assert!(main_metrics.starts_with("HTTP/1.1 404"), "{main_metrics}");
    let metrics = get(admin, "/metrics").unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("sealgate_"), "{metrics}");
    for port in [run.port, admin] {
        assert!(get(port, "/healthz").unwrap().starts_with("HTTP/1.1 200"));
        assert!(get(port, "/readyz").unwrap().starts_with("HTTP/1.1 503"));
    }
    assert!(get(admin, "/bff/user").unwrap().starts_with("HTTP/1.1 404"));
    run.server.terminate();
    assert_eq!(run.server.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(get(admin, "/metrics").is_err(), "admin listener still open");
}
