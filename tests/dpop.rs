//! DPoP on API calls (RFC 9449 §7, §9), against the real binary and a resource server
//! written here that accepts only DPoP-bound calls with valid proofs: the signature by the
//! header's `jwk`, `typ` dpop+jwt, `htm`, `htu` (the URI it was sent, without query), `iat`
//! within 60 s, a `jti` never seen before, `ath` = SHA-256 of the token, and its current
//! nonce (else 401 `use_dpop_nonce` with a `DPoP-Nonce`). Sessions are sealed here with the
//! library from the same key folder, with a proof key as the login seals it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use common::{
    Instance, exchange_lossy, head_and_body, metric, now, sealed_cookie, start_serving, status_code,
};
use sealgate::jws::{EdKey, jwk_thumbprint};
use sealgate::session::Session;

const HIT: &str = common::CACHE_HIT;

/// What the resource server has seen.
#[derive(Default)]
struct Seen {
    /// The nonce it currently requires.
    nonce: String,
    jtis: HashSet<String>,
    requests: usize,
    /// Answers 401 `use_dpop_nonce`.
    challenges: usize,
}

/// The resource server on a free port of 127.0.0.1, served by a runtime of its own until
/// the returned runtime is dropped. Its routes live under `/v1/` (sealgate strips `/api`).
fn resource_server() -> (tokio::runtime::Runtime, u16, Arc<Mutex<Seen>>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen {
        nonce: "n-0".into(),
        ..Seen::default()
    }));
    let state = seen.clone();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(req, port, &state).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (rt, port, seen)
}

async fn answer(
    req: Request<Incoming>,
    port: u16,
    seen: &Mutex<Seen>,
) -> Response<Full<bytes::Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        let all: Vec<_> = parts.headers.get_all(name).iter().collect();
        assert!(all.len() <= 1, "one {name} header at most");
        all.first().map(|v| v.to_str().unwrap().to_owned())
    };
    let reply = |status: u16, value: Value| {
        let mut r = Response::new(Full::new(value.to_string().into()));
        *r.status_mut() = status.try_into().unwrap();
        r
    };
    let mut seen = seen.lock().unwrap();
    seen.requests += 1;
    let auth = header("authorization").unwrap_or_default();
    if let Some(_token) = auth.strip_prefix("Bearer ") {
        return reply(
            200,
            json!({"scheme": "Bearer", "dpop": header("dpop").is_some()}),
        );
    }
    let Some(token) = auth.strip_prefix("DPoP ") else {
        return reply(401, json!({"error": "no token"}));
    };
    let proof = header("dpop").unwrap_or_default();
    let htu = format!("http://127.0.0.1:{port}{}", parts.uri.path());
    let claims = match verify(&proof, parts.method.as_str(), &htu, token, &mut seen.jtis) {
        Ok(c) => c,
        Err(e) => return reply(400, json!({"error": e})),
    };
    if claims["nonce"].as_str() != Some(&seen.nonce) {
        seen.challenges += 1;
        let mut r = reply(401, json!({"error": "use_dpop_nonce"}));
        let h = r.headers_mut();
        h.insert(
            "www-authenticate",
            "DPoP error=\"use_dpop_nonce\", error_description=\"nonce required\""
                .parse()
                .unwrap(),
        );
        h.insert("dpop-nonce", seen.nonce.parse().unwrap());
        return r;
    }
    reply(
        200,
        json!({
            "scheme": "DPoP",
            "jkt": claims["jkt"],
            "jti": claims["jti"],
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "body": String::from_utf8_lossy(&body),
        }),
    )
}

/// RFC 9449 §4.3's checks of a proof; its claims, with `jkt` (the key's RFC 7638
/// thumbprint) added.
fn verify(
    proof: &str,
    htm: &str,
    htu: &str,
    token: &str,
    jtis: &mut HashSet<String>,
) -> Result<Value, String> {
    let (input, sig) = proof.rsplit_once('.').ok_or("not a JWS")?;
    let (h, c) = input.split_once('.').ok_or("not a JWS")?;
    let dec = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string());
    let header: Value = serde_json::from_slice(&dec(h)?).map_err(|e| e.to_string())?;
    let mut claims: Value = serde_json::from_slice(&dec(c)?).map_err(|e| e.to_string())?;
    if header["typ"] != "dpop+jwt" || header["alg"] != "EdDSA" || header["jwk"]["crv"] != "Ed25519"
    {
        return Err(format!("header {header}"));
    }
    let x = dec(header["jwk"]["x"].as_str().ok_or("no x")?)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x)
        .verify(input.as_bytes(), &dec(sig)?)
        .map_err(|_| "bad signature")?;
    if claims["htm"] != htm || claims["htu"] != htu {
        return Err(format!("htm/htu {claims} for {htm} {htu}"));
    }
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if iat.abs_diff(now()) > 60 {
        return Err("iat".into());
    }
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
    if claims["ath"] != ath.as_str() {
        return Err("ath".into());
    }
    let jti = claims["jti"].as_str().ok_or("no jti")?.to_owned();
    if !jtis.insert(jti) {
        return Err("jti replayed".into());
    }
    claims["jkt"] = jwk_thumbprint(&header["jwk"]).ok_or("jkt")?.into();
    Ok(claims)
}

/// sealgate with `/api/` routed (prefix stripped) to the resource server's `/v1/`.
fn start(rs: u16) -> Instance {
    start_serving(&format!(
        "[cookies]\nsecure = false\n\
         [[routes]]\nprefix = \"/api/\"\nupstream = \"http://127.0.0.1:{rs}/v1/\"\nstrip_prefix = true\n"
    ))
}

/// A session sealed under the folder's ring, with `key` as its proof key (or Bearer).
fn cookie(dir: &Path, token: &str, key: Option<&EdKey>) -> String {
    let now = now();
    sealed_cookie(
        dir,
        &Session {
            id: sealgate::session::random_id().unwrap(),
            access_token: token.into(),
            access_expires_at: Some(now + 3600),
            refresh_token: None,
            sub: "alice".into(),
            sid: None,
            created_at: now,
            last_seen: now,
            dpop_key: key.map(EdKey::sealed_seed),
        },
    )
}

struct Answer {
    status: u16,
    head: String,
    json: Value,
}

/// `METHOD path` through sealgate with the session `cookie`, extra header lines and body.
fn call(port: u16, method: &str, path: &str, cookie: &str, extra: &str, body: &str) -> Answer {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\nCookie: {cookie}\r\n{extra}Connection: close\r\n\r\n{body}"
    );
    let text = exchange_lossy(port, request.as_bytes(), Duration::from_secs(10));
    let (head, body) = head_and_body(&text);
    Answer {
        status: status_code(head),
        head: head.to_ascii_lowercase(),
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn get(port: u16, path: &str, cookie: &str) -> Answer {
    call(port, "GET", path, cookie, "", "")
}

#[test]
fn retries_a_nonce_challenge_once_when_the_body_can_be_sent_again() {
    let (_rt, rs, seen) = resource_server();
    let s = start(rs);
    let key = EdKey::generate().unwrap();
    let c = cookie(&s.keys, "at-1", Some(&key));
    let counts = || {
        let s = seen.lock().unwrap();
        (s.requests, s.challenges)
    };

    let first = get(s.port, "/api/items?x=1", &c);
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.json["scheme"], "DPoP");
    assert_eq!(first.json["jkt"], key.thumbprint(), "the session's own key");
    assert_eq!(first.json["path"], "/v1/items", "htu named the path sent");
    assert_eq!(first.json["query"], "x=1");
    assert_eq!(
        counts(),
        (2, 1),
        "challenged once, sent again with the nonce"
    );

    // The nonce is remembered for the origin; a cache hit still signs a proof of its own.
    let second = get(s.port, "/api/items", &c);
    assert_eq!(second.status, 200, "{}", second.json);
    assert_eq!(counts(), (3, 1), "no new challenge");
    assert_ne!(second.json["jti"], first.json["jti"]);
    assert_eq!(metric(s.port, HIT), 1, "served from the session cache");

    // A new nonce: a small POST with a length is read whole and sent again, body and all.
    seen.lock().unwrap().nonce = "n-1".into();
    let post = call(
        s.port,
        "POST",
        "/api/items",
        &c,
        "Content-Length: 5\r\n",
        "hello",
    );
    assert_eq!(post.status, 200, "{}", post.json);
    assert_eq!(post.json["body"], "hello");
    assert_eq!(counts(), (5, 2));

    // A streamed body cannot be sent twice: the challenge reaches the client, and its
    // nonce serves the next call.
    seen.lock().unwrap().nonce = "n-2".into();
    let streamed = call(
        s.port,
        "POST",
        "/api/items",
        &c,
        "Transfer-Encoding: chunked\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(streamed.status, 401);
    assert!(
        streamed.head.contains("use_dpop_nonce"),
        "{}",
        streamed.head
    );
    assert!(
        streamed.head.contains("\r\ndpop-nonce: n-2"),
        "the nonce is passed on: {}",
        streamed.head
    );
    assert_eq!(counts(), (6, 3), "sent once");
    let after = get(s.port, "/api/items", &c);
    assert_eq!(after.status, 200, "{}", after.json);
    assert_eq!(counts(), (7, 3));
    drop(s.server);
}

#[test]
fn each_session_proves_its_own_key_and_bearer_sessions_stay_bearer() {
    let (_rt, rs, seen) = resource_server();
    let s = start(rs);
    let (k1, k2) = (EdKey::generate().unwrap(), EdKey::generate().unwrap());
    let (c1, c2) = (
        cookie(&s.keys, "at-1", Some(&k1)),
        cookie(&s.keys, "at-2", Some(&k2)),
    );
    let a1 = get(s.port, "/api/a", &c1);
    let a2 = get(s.port, "/api/a", &c2);
    assert_eq!(
        (a1.status, a2.status),
        (200, 200),
        "{} {}",
        a1.json,
        a2.json
    );
    assert_eq!(a1.json["jkt"], k1.thumbprint());
    assert_eq!(a2.json["jkt"], k2.thumbprint());
    assert_ne!(a1.json["jkt"], a2.json["jkt"]);
    assert_eq!(
        seen.lock().unwrap().challenges,
        1,
        "one nonce for the origin"
    );

    let bearer = get(s.port, "/api/a", &cookie(&s.keys, "at-3", None));
    assert_eq!(bearer.status, 200);
    assert_eq!(bearer.json, json!({"scheme": "Bearer", "dpop": false}));
    drop(s.server);
}

#[test]
fn a_websocket_handshake_carries_a_proof_and_is_never_sent_twice() {
    let (_rt, rs, seen) = resource_server();
    let s = start(rs);
    let key = EdKey::generate().unwrap();
    let c = cookie(&s.keys, "at-1", Some(&key));
    let handshake = format!(
        "Origin: http://127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        s.port
    );
    // The resource server checked the proof (htm GET, htu, signature...) and wants a nonce:
    // the challenge reaches the client.
    let first = call(s.port, "GET", "/api/socket", &c, &handshake, "");
    assert_eq!(first.status, 401, "{}", first.json);
    let counts = {
        let seen = seen.lock().unwrap();
        (seen.requests, seen.challenges)
    };
    assert_eq!(counts, (1, 1), "sent once");
    // The next handshake carries the nonce: accepted (this server answers 200, not 101).
    let second = call(s.port, "GET", "/api/socket", &c, &handshake, "");
    assert_eq!(second.status, 200, "{}", second.json);
    assert_eq!(second.json["path"], "/v1/socket");
    drop(s.server);
}
