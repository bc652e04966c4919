//! The session cache of proxied calls, against the real binary and a real upstream on a
//! socket: a cached session is served only for its exact sealed value and under the key ring
//! it was opened with, and never for a call that needs a write (touch) or a refresh.
//! Sessions are sealed here with the library from the same key folder, as another instance
//! of the fleet would seal them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{
    Instance, exchange_lossy, head_and_body, keygen, metric, now, sealed_cookie, start_serving,
    status_code, upstream, wait_until,
};
use sealgate::session::Session;

/// The configuration's defaults (`common::LIMITS`): absolute 12h, idle 1h (touch step
/// 300 s), skew 60 s.
const HIT: &str = common::CACHE_HIT;
const MISS: &str = common::CACHE_MISS;
const RELOAD_OK: &str = "sealgate_key_reloads_total{outcome=\"ok\"}";

/// An upstream that answers every request with the `Authorization` value it received.
fn echo_upstream() -> u16 {
    upstream(|mut stream: TcpStream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut auth = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("authorization: ") {
                auth = v.trim_end().to_owned();
            }
        }
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{auth}",
            auth.len()
        );
    })
}

struct Answer {
    status: u16,
    set_cookie: bool,
    body: String,
}

fn call(port: u16, path: &str, cookie: &str) -> Answer {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    let text = exchange_lossy(port, request.as_bytes(), Duration::from_secs(10));
    let (head, body) = head_and_body(&text);
    Answer {
        status: status_code(head),
        set_cookie: head
            .to_ascii_lowercase()
            .contains("\r\nset-cookie: sealgate.0="),
        body: body.to_owned(),
    }
}

/// The session cookie header for `session`, sealed with the folder's ring as it is now.
fn seal(dir: &Path, session: &Session) -> String {
    sealed_cookie(dir, session)
}

/// A session with a 3 KB access token (two cookie chunks), valid for an hour.
fn session(token: &str) -> Session {
    let now = now();
    Session {
        id: sealgate::session::random_id().unwrap(),
        access_token: token.into(),
        access_expires_at: Some(now + 3600),
        refresh_token: Some("rt".into()),
        sub: "alice".into(),
        sid: None,
        created_at: now,
        last_seen: now,
        dpop_key: None,
    }
}

fn token(tag: char) -> String {
    format!("{tag}{}", "A".repeat(2999))
}

/// Replaces one character in the middle of the value of cookie `name`.
fn tamper(cookie: &str, name: &str) -> String {
    cookie
        .split("; ")
        .map(|pair| match pair.strip_prefix(name) {
            Some(value) => {
                let mut v = value.to_owned().into_bytes();
                let i = v.len() / 2;
                v[i] = if v[i] == b'A' { b'B' } else { b'A' };
                format!("{name}{}", String::from_utf8(v).unwrap())
            }
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn start(session_toml: &str) -> Instance {
    let up = echo_upstream();
    start_serving(&format!(
        "[cookies]\nsecure = false\n[session]\n{session_toml}\n\
         [[routes]]\nprefix = \"/api/\"\nupstream = \"http://127.0.0.1:{up}\"\n"
    ))
}

#[test]
fn a_cached_session_is_served_only_for_its_exact_value_and_under_its_key_ring() {
    let s = start("");
    let port = s.port;
    let t = token('x');
    let cookie = seal(&s.keys, &session(&t));
    assert_eq!(
        cookie.matches("sealgate.").count(),
        2,
        "two chunks: {cookie}"
    );

    let first = call(port, "/api/a", &cookie);
    assert_eq!(
        (first.status, first.body.as_str()),
        (200, &*format!("Bearer {t}"))
    );
    assert_eq!((metric(port, HIT), metric(port, MISS)), (0, 1));
    let second = call(port, "/api/b", &cookie);
    assert_eq!(
        (second.status, second.body.as_str()),
        (200, &*format!("Bearer {t}"))
    );
    assert!(!second.set_cookie);
    assert_eq!(
        (metric(port, HIT), metric(port, MISS)),
        (1, 1),
        "served from the cache"
    );

    // The same nonce with other bytes anywhere after it: refused, as opening would.
    for name in ["sealgate.0=", "sealgate.1="] {
        let forged = tamper(&cookie, name);
        assert_ne!(forged, cookie);
        assert_eq!(call(port, "/api/c", &forged).status, 401, "{name} tampered");
    }
    assert_eq!(
        call(port, "/api/d", &cookie).status,
        200,
        "a miss evicts nothing"
    );
    assert_eq!(metric(port, HIT), 2);

    // Promote a new key, then retire the one the session was sealed with: from the reload
    // that drops the old key on, the cached session is refused.
    let old = std::fs::read_to_string(s.keys.join("primary")).unwrap();
    let new = keygen(&s.keys);
    let dir = s.keys.to_str().unwrap();
    for args in [
        ["keys", "promote", "--dir", dir, &new],
        ["keys", "retire", "--dir", dir, old.trim()],
    ] {
        let reloads = metric(port, RELOAD_OK);
        let out = common::bin().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until("the reload", || metric(port, RELOAD_OK) > reloads);
        if args[1] == "promote" {
            // Its key is no longer primary: the call re-seals it, never from the cache.
            let hits = metric(port, HIT);
            let a = call(port, "/api/g", &cookie);
            assert_eq!(a.status, 200);
            assert!(a.set_cookie, "re-sealed under the new primary");
            assert_eq!(metric(port, HIT), hits);
        }
    }
    assert_eq!(
        call(port, "/api/e", &cookie).status,
        401,
        "a session cached under the retired key is refused"
    );
    assert_eq!(
        call(port, "/api/f", &seal(&s.keys, &session(&t))).status,
        200,
        "a session under the new key opens"
    );
    drop(s.server);
}

#[test]
fn calls_that_need_a_touch_or_a_refresh_never_come_from_the_cache() {
    let s = start("");
    let port = s.port;
    // last_seen older than the touch step (300 s): every call re-seals it.
    let mut stale = session(&token('y'));
    stale.last_seen -= 400;
    stale.created_at -= 400;
    let cookie = seal(&s.keys, &stale);
    for _ in 0..2 {
        let a = call(port, "/api/a", &cookie);
        assert_eq!(a.status, 200);
        assert!(a.set_cookie, "the touch is written on every such call");
    }
    // An access token inside the refresh skew, and a provider that is down: forwarded with
    // the current token while it lasts, each call trying (or backing off) the refresh.
    let mut due = session(&token('z'));
    due.access_expires_at = Some(now() + 30);
    let cookie = seal(&s.keys, &due);
    for _ in 0..2 {
        assert_eq!(call(port, "/api/a", &cookie).status, 200);
    }
    // Expired, and the provider down: 503 each time.
    let mut expired = session(&token('x'));
    expired.access_expires_at = Some(now() - 1);
    let cookie = seal(&s.keys, &expired);
    for _ in 0..2 {
        assert_eq!(call(port, "/api/a", &cookie).status, 503);
    }
    assert_eq!(metric(port, HIT), 0);
}

#[test]
fn cache_entries_0_disables_the_cache() {
    let s = start("cache_entries = 0");
    let cookie = seal(&s.keys, &session(&token('w')));
    for _ in 0..3 {
        assert_eq!(call(s.port, "/api/a", &cookie).status, 200);
    }
    assert_eq!((metric(s.port, HIT), metric(s.port, MISS)), (0, 3));
}
