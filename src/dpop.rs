//! DPoP on proxied calls (RFC 9449 §7): the credential a session gives an API call
//! (`Bearer`, or `DPoP` with the session's own proof key), one fresh proof per request, the
//! resource servers' nonces (§9) remembered per origin, and when a call may be sent again
//! with a nonce. The transport (`proxy`) and the retry itself (`api`) are elsewhere.
//!
//! Pure but for the random part of `jti`s: no I/O, no clock (`now` is passed in). The proof key is
//! never logged or Debug-printed and never leaves the process but as signatures.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, StatusCode, Uri};
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::jws::DpopKey;
use crate::secret::SecretString;

/// The proof's header (RFC 9449 §4.1).
pub const DPOP: HeaderName = HeaderName::from_static("dpop");
/// A server's nonce for the next proofs (RFC 9449 §8.1, §9).
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");
/// Largest request body kept in memory so that a call can be sent again with a resource
/// server's nonce; a larger or unsized body streams, and a nonce challenge reaches the
/// client instead.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;
/// Origins whose latest nonce is kept. Routes are configured, so there are a handful; the
/// bound only makes the memory's size independent of anything an upstream does.
pub const MAX_ORIGINS: usize = 1024;

/// Why a session's credential could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    /// The sealed proof key is not one `jws::DpopKey::from_sealed` reads.
    #[error("the session's DPoP key is not a proof key")]
    BadKey,
    /// The access token cannot be written in a header.
    #[error("the access token is not a valid header value")]
    BadToken,
    /// The system random generator failed (the proof's `jti`, or ECDSA's nonce).
    #[error("the system random generator failed")]
    Random,
}

/// What a session sends on an API call: the `Authorization` value, and for a DPoP-bound
/// session its proof key, with which each request gets a proof of its own. Cheap to clone
/// (the session cache hands out one per hit).
#[derive(Clone)]
pub struct Credential {
    /// `Bearer <token>` or `DPoP <token>` (RFC 9449 §7.1), marked sensitive.
    pub authorization: HeaderValue,
    /// The session's proof key: `Some` exactly when `authorization` is `DPoP`.
    pub proof: Option<Arc<ProofKey>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("dpop", &self.proof.is_some())
            .finish_non_exhaustive()
    }
}

impl From<HeaderValue> for Credential {
    /// A Bearer credential of an `Authorization` value already made.
    fn from(authorization: HeaderValue) -> Self {
        Credential {
            authorization,
            proof: None,
        }
    }
}

impl Credential {
    /// The credential of a session: DPoP when it holds a proof key (`Session::dpop_key`),
    /// Bearer otherwise. A session is DPoP-bound from its login on, so the key alone decides.
    pub fn of(
        access_token: &SecretString,
        dpop_key: Option<&SecretString>,
    ) -> Result<Self, DpopError> {
        match dpop_key {
            None => Ok(authorization("Bearer", access_token)?.into()),
            Some(seed) => Ok(Credential {
                authorization: authorization("DPoP", access_token)?,
                proof: Some(Arc::new(ProofKey::new(seed, access_token)?)),
            }),
        }
    }
}

/// `SCHEME <token>` as a header value, marked sensitive (never indexed by HTTP/2 header
/// compression). Its bytes are zeroized when the last user of the value drops it; what
/// hyper copies into a connection's write buffer is not (see SECURITY.md).
fn authorization(scheme: &str, token: &SecretString) -> Result<HeaderValue, DpopError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(scheme.len() + 1 + token.len()));
    buf.extend_from_slice(scheme.as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(token.expose().as_bytes());
    let mut value =
        HeaderValue::from_maybe_shared(Bytes::from_owner(buf)).map_err(|_| DpopError::BadToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A session's proof key (ES256 or EdDSA), made once when its cookie is opened, with
/// everything of a proof that does not change from call to call worked out then: the JWS
/// header (it holds the public key, RFC 9449 §4.2) already base64url-encoded, and `ath`,
/// the access token's hash. A proof then costs one signature and a few hundred bytes of
/// writing.
pub struct ProofKey {
    pair: DpopKey,
    /// `base64url({"alg":"ES256","typ":"dpop+jwt","jwk":{"crv":"P-256","kty":"EC",..}})`.
    header: Box<str>,
    /// `base64url(SHA-256(access token))` (RFC 9449 §4.2).
    ath: Box<str>,
    /// The proofs' `jti` is these 96 random bits then a count of this key's proofs: unique
    /// as RFC 9449 §4.2 asks (a "negligible probability" of any other proof's value, also
    /// another instance's or a later opening's of the same session: their random part
    /// differs), without a system call per proof. Nothing needs a `jti` unpredictable.
    jti_prefix: [u8; 12],
    proofs: AtomicU64,
}

impl fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofKey").finish_non_exhaustive()
    }
}

impl ProofKey {
    /// The key of its sealed form (`jws::DpopKey::sealed`), for proofs that go with
    /// `access_token`.
    pub fn new(sealed: &SecretString, access_token: &SecretString) -> Result<Self, DpopError> {
        let pair = DpopKey::from_sealed(sealed).map_err(|_| DpopError::BadKey)?;
        // The key's own JWK: its thumbprint is the `jkt` the login bound the tokens to.
        let header = json!({"alg": pair.alg().name(), "typ": "dpop+jwt", "jwk": pair.public_jwk()})
            .to_string();
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.expose().as_bytes()));
        let mut jti_prefix = [0u8; 12];
        getrandom::fill(&mut jti_prefix).map_err(|_| DpopError::Random)?;
        Ok(ProofKey {
            pair,
            header: URL_SAFE_NO_PAD.encode(header).into(),
            ath: ath.into(),
            jti_prefix,
            proofs: AtomicU64::new(0),
        })
    }

    /// A fresh proof (RFC 9449 §4.2) for `method` on `uri` at `now`: `htu` is `uri`
    /// without its query (§4.3 compares the target URI without query and fragment; an
    /// `http::Uri` has no fragment), a unique 160-bit `jti` (see `jti_prefix`), the
    /// server's `nonce` when it gave one, `ath`. Written straight into the header value's
    /// buffer.
    pub fn proof(
        &self,
        method: &Method,
        uri: &Uri,
        now: u64,
        nonce: Option<&HeaderValue>,
    ) -> Result<HeaderValue, DpopError> {
        let mut jti = [0u8; 20];
        let (random, count) = jti.split_at_mut(12);
        random.copy_from_slice(&self.jti_prefix);
        count.copy_from_slice(&self.proofs.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let mut claims = String::with_capacity(256);
        claims.push_str("{\"htm\":");
        json_str(&mut claims, &[method.as_str()]);
        claims.push_str(",\"htu\":");
        let authority = uri.authority().map_or("", Authority::as_str);
        json_str(
            &mut claims,
            &[
                uri.scheme_str().unwrap_or("http"),
                "://",
                authority,
                uri.path(),
            ],
        );
        let _ = write!(claims, ",\"iat\":{now},\"jti\":\"");
        URL_SAFE_NO_PAD.encode_string(jti, &mut claims);
        claims.push('"');
        if let Some(nonce) = nonce.and_then(|n| n.to_str().ok()) {
            claims.push_str(",\"nonce\":");
            json_str(&mut claims, &[nonce]);
        }
        claims.push_str(",\"ath\":\"");
        claims.push_str(&self.ath);
        claims.push_str("\"}");

        // header . claims . signature, each base64url without padding (RFC 7515 §7.1).
        let mut out = String::with_capacity(self.header.len() + claims.len() * 4 / 3 + 92);
        out.push_str(&self.header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
        let signature = self
            .pair
            .sign(out.as_bytes())
            .map_err(|_| DpopError::Random)?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut out);
        HeaderValue::from_maybe_shared(Bytes::from(out)).map_err(|_| DpopError::BadToken)
    }
}

/// Appends the concatenation of `parts` as one JSON string (RFC 8259 §7): quotes,
/// backslashes and control characters escaped.
fn json_str(out: &mut String, parts: &[&str]) {
    out.push('"');
    for c in parts.iter().flat_map(|p| p.chars()) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An upstream origin, as nonces are kept (RFC 9449 §9: a nonce is the server's, and
/// servers are origins). The host compares case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin(Option<Scheme>, Option<Authority>);

impl Origin {
    /// The origin of an absolute URI (what the proxy sends to); shares the URI's bytes.
    pub fn of(uri: &Uri) -> Self {
        Origin(uri.scheme().cloned(), uri.authority().cloned())
    }
}

/// The latest `DPoP-Nonce` each upstream origin gave, at most `MAX_ORIGINS` of them.
#[derive(Debug, Default)]
pub struct Nonces {
    map: Mutex<HashMap<Origin, HeaderValue>>,
}

impl Nonces {
    /// The nonce to put in the next proof to `origin`, if it gave one.
    pub fn get(&self, origin: &Origin) -> Option<HeaderValue> {
        crate::sync::lock(&self.map).get(origin).cloned()
    }

    /// Keeps the nonce of an answer from `origin` (its `DPoP-Nonce`, when it has one of the
    /// right syntax) and returns it.
    pub fn remember(&self, origin: &Origin, answer: &HeaderMap) -> Option<HeaderValue> {
        let nonce = answer.get(DPOP_NONCE).filter(|n| is_nonce(n))?;
        let mut map = crate::sync::lock(&self.map);
        if map.len() >= MAX_ORIGINS && !map.contains_key(origin) {
            // Full: forget any one (arbitrary: the map's order is randomly seeded). Costs
            // that origin one nonce challenge later.
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        map.insert(origin.clone(), nonce.clone());
        Some(nonce.clone())
    }

    /// Origins held.
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// RFC 9449 §8.1: `nonce = 1*NQCHAR`, NQCHAR = %x21 / %x23-5B / %x5D-7E (no quote, no
/// backslash, no space: it goes into JSON as it is).
fn is_nonce(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|&c| matches!(c, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// How a DPoP call's request body is sent, which decides whether the call can be sent a
/// second time with a resource server's nonce (RFC 9449 §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// No body: the call can be sent again as it is.
    Empty,
    /// A body of this announced length, at most `MAX_REPLAY_BODY`: read whole first, then
    /// sent (again when needed) from memory.
    Buffer(u64),
    /// Streamed as it arrives (no length, or a large one; or a WebSocket handshake): sent
    /// once, and a nonce challenge reaches the client, whose next call carries the nonce.
    Stream,
}

/// The replay plan of a request body, from what the server knows of it before reading:
/// whether it already ended (no body at all) and its exact length when announced
/// (`Content-Length`).
pub fn replay(ended: bool, exact_len: Option<u64>) -> Replay {
    match exact_len {
        _ if ended => Replay::Empty,
        Some(0) => Replay::Empty,
        Some(n) if n <= MAX_REPLAY_BODY => Replay::Buffer(n),
        Some(_) | None => Replay::Stream,
    }
}

/// Whether an answer asks for the call again with a nonce (RFC 9449 §9): 401 with a
/// `WWW-Authenticate: DPoP` challenge whose `error` is `use_dpop_nonce`. (The nonce itself
/// comes in `DPoP-Nonce`; see `Nonces::remember`.)
pub fn is_nonce_challenge(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| dpop_error(v) == Some("use_dpop_nonce"))
}

/// The `error` parameter of the `DPoP` challenge in a `WWW-Authenticate` value, which may
/// hold several challenges (RFC 9110 §11.6.1: `scheme param=value, ..., scheme ...`).
fn dpop_error(value: &str) -> Option<&str> {
    let mut rest = value.trim_start();
    let mut in_dpop = false;
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let name_len = rest.find(['=', ',', ' ', '\t']).unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_len);
        let after_ws = after.trim_start_matches([' ', '\t']);
        let Some(value_part) = after_ws.strip_prefix('=') else {
            // A token not followed by `=`: the next challenge's scheme.
            in_dpop = name.eq_ignore_ascii_case("DPoP");
            rest = after;
            continue;
        };
        let value_part = value_part.trim_start_matches([' ', '\t']);
        let (param, tail) = match value_part.strip_prefix('"') {
            // quoted-string; the values DPoP uses hold no escapes.
            Some(quoted) => match quoted.split_once('"') {
                Some((inner, tail)) => (inner, tail),
                None => (quoted, ""),
            },
            None => {
                let end = value_part
                    .find([',', ' ', '\t'])
                    .unwrap_or(value_part.len());
                value_part.split_at(end)
            }
        };
        if in_dpop && name.eq_ignore_ascii_case("error") {
            return Some(param);
        }
        rest = tail;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::{DpopAlg, DpopKey, EdKey, jwk_thumbprint};
    use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};
    use serde_json::Value;

    fn key() -> (DpopKey, SecretString) {
        let key = DpopKey::generate(DpopAlg::Es256).unwrap();
        let sealed = key.sealed();
        (key, sealed)
    }

    /// The proof's header and claims, after checking its signature with the header's key.
    fn open(proof: &HeaderValue) -> (Value, Value) {
        let text = proof.to_str().unwrap();
        let (input, sig) = text.rsplit_once('.').unwrap();
        let (h, c) = input.split_once('.').unwrap();
        let dec = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        let header: Value = serde_json::from_slice(&dec(h)).unwrap();
        let x = dec(header["jwk"]["x"].as_str().unwrap());
        let verified = match header["alg"].as_str().unwrap() {
            "ES256" => {
                let point = [&[4u8][..], &x, &dec(header["jwk"]["y"].as_str().unwrap())].concat();
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(input.as_bytes(), &dec(sig))
            }
            _ => UnparsedPublicKey::new(&ED25519, x).verify(input.as_bytes(), &dec(sig)),
        };
        verified.unwrap();
        (header, serde_json::from_slice(&dec(c)).unwrap())
    }

    #[test]
    fn proofs_name_the_upstream_target_without_query_and_bind_the_token() {
        let (bound, seed) = key();
        let token = SecretString::from("at-123");
        let cred = Credential::of(&token, Some(&seed)).unwrap();
        assert_eq!(cred.authorization, "DPoP at-123");
        assert!(cred.authorization.is_sensitive());
        let key = cred.proof.unwrap();
        // What the proxy sends for `/api/items/7?x=1` on a strip_prefix route to `/v1/`.
        let base = url::Url::parse("http://127.0.0.1:9100/v1/").unwrap();
        let uri =
            crate::proxy::upstream_uri(&base, &"/api/items/7?x=1".parse().unwrap(), Some("/api/"))
                .unwrap();
        let nonce = HeaderValue::from_static("n-1");
        let p1 = key.proof(&Method::POST, &uri, 1000, Some(&nonce)).unwrap();
        let (header, claims) = open(&p1);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["crv"], "P-256");
        assert_eq!(
            jwk_thumbprint(&header["jwk"]).unwrap(),
            bound.thumbprint(),
            "the key login bound"
        );
        assert!(header["jwk"].get("d").is_none());
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "http://127.0.0.1:9100/v1/items/7");
        assert_eq!(claims["iat"], 1000);
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"at-123"))
        );
        assert_eq!(claims.as_object().unwrap().len(), 6);
        // The same claims as the reference builder (RFC 9449 §4.2), but the jti.
        let url = url::Url::parse(&uri.to_string()).unwrap();
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(jti).unwrap().len(), 20);
        assert_eq!(
            claims,
            crate::jws::dpop_claims("POST", &url, 1000, jti, Some("n-1"), Some("at-123"))
        );
        let (_, again) = open(&key.proof(&Method::POST, &uri, 1000, Some(&nonce)).unwrap());
        assert_ne!(again["jti"], claims["jti"], "a fresh jti per proof");
        // The same session opened again (another instance, or after the cache let it go)
        // signs with the same key but never repeats a jti of the first opening.
        let reopened = Credential::of(&token, Some(&seed)).unwrap().proof.unwrap();
        let (_, other) = open(
            &reopened
                .proof(&Method::POST, &uri, 1000, Some(&nonce))
                .unwrap(),
        );
        assert_ne!(other["jti"], claims["jti"]);
        assert_ne!(other["jti"], again["jti"]);
        let (_, bare) = open(&key.proof(&Method::GET, &uri, 1000, None).unwrap());
        assert!(bare.get("nonce").is_none());
    }

    #[test]
    fn sessions_sealed_with_an_ed25519_seed_still_sign_eddsa_proofs() {
        // Before ES256 proof keys, `Session.dpop_key` was an Ed25519 seed; such sessions
        // keep their key (their tokens are bound to it) and so their algorithm.
        let old = EdKey::generate().unwrap();
        let token = SecretString::from("at-old");
        let cred = Credential::of(&token, Some(&old.sealed_seed())).unwrap();
        let uri: Uri = "http://127.0.0.1:9100/v1/x".parse().unwrap();
        let (header, claims) = open(
            &cred
                .proof
                .unwrap()
                .proof(&Method::GET, &uri, 5, None)
                .unwrap(),
        );
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["jwk"]["crv"], "Ed25519");
        assert_eq!(jwk_thumbprint(&header["jwk"]).unwrap(), old.thumbprint());
        assert_eq!(claims["htu"], "http://127.0.0.1:9100/v1/x");
    }

    #[test]
    fn sessions_without_a_key_stay_bearer_and_bad_keys_are_refused() {
        let token = SecretString::from("at");
        let cred = Credential::of(&token, None).unwrap();
        assert_eq!(cred.authorization, "Bearer at");
        assert!(cred.proof.is_none() && cred.authorization.is_sensitive());
        for bad in ["", "AAAA", "!!!!", &"A".repeat(44)] {
            assert!(
                matches!(
                    Credential::of(&token, Some(&SecretString::from(bad))),
                    Err(DpopError::BadKey)
                ),
                "{bad}"
            );
        }
        let (_, seed) = key();
        assert!(
            format!("{:?}", Credential::of(&token, Some(&seed)).unwrap())
                .find(seed.expose())
                .is_none()
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_str(&mut out, &["a\"b", "\\c\n", "é"]);
        assert_eq!(out, r#""a\"b\\c\u000aé""#);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\"b\\c\né");
    }

    #[test]
    fn nonce_memory_keeps_the_latest_per_origin_and_is_bounded() {
        let n = Nonces::default();
        let origin = |port: u16| Origin::of(&format!("http://127.0.0.1:{port}/x").parse().unwrap());
        let answer = |nonce: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(DPOP_NONCE, HeaderValue::from_static(nonce));
            h
        };
        assert!(n.get(&origin(1)).is_none());
        n.remember(&origin(1), &answer("n1"));
        n.remember(&origin(1), &answer("n2"));
        assert_eq!(n.get(&origin(1)).unwrap(), "n2", "the latest");
        assert!(n.get(&origin(2)).is_none(), "per origin");
        let upper = Origin::of(&"http://LOCALHOST:1/".parse().unwrap());
        n.remember(&upper, &answer("n3"));
        assert_eq!(
            n.get(&Origin::of(&"http://localhost:1/y".parse().unwrap()))
                .unwrap(),
            "n3"
        );
        let https = Origin::of(&"https://localhost:1/".parse().unwrap());
        assert!(n.get(&https).is_none(), "the scheme is part of the origin");
        for bad in ["has space", "quo\"te", "back\\slash"] {
            assert!(n.remember(&origin(3), &answer(bad)).is_none(), "{bad}");
        }
        assert!(n.remember(&origin(3), &HeaderMap::new()).is_none());
        assert!(n.get(&origin(3)).is_none());
        for port in 10..(10 + 2 * MAX_ORIGINS as u16) {
            n.remember(&origin(port), &answer("n"));
            assert!(n.get(&origin(port)).is_some(), "the newest is always kept");
        }
        assert_eq!(n.len(), MAX_ORIGINS);
    }

    #[test]
    fn only_bodies_known_small_are_replayed() {
        assert_eq!(replay(true, None), Replay::Empty, "no body");
        assert_eq!(replay(true, Some(0)), Replay::Empty);
        assert_eq!(replay(false, Some(0)), Replay::Empty, "Content-Length: 0");
        assert_eq!(replay(false, Some(5)), Replay::Buffer(5));
        assert_eq!(
            replay(false, Some(MAX_REPLAY_BODY)),
            Replay::Buffer(MAX_REPLAY_BODY)
        );
        assert_eq!(
            replay(false, Some(MAX_REPLAY_BODY + 1)),
            Replay::Stream,
            "too large"
        );
        assert_eq!(replay(false, None), Replay::Stream, "chunked, no length");
    }

    #[test]
    fn retries_only_a_dpop_use_dpop_nonce_challenge() {
        let with = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
            }
            h
        };
        let yes = [
            &[
                "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\"",
            ][..],
            &["dpop algs=\"ES256 EdDSA\", error=use_dpop_nonce"],
            &["Bearer realm=\"api\", DPoP error=\"use_dpop_nonce\""],
            &["Bearer realm=\"api\"", "DPoP error=\"use_dpop_nonce\""],
        ];
        for h in yes {
            assert!(
                is_nonce_challenge(StatusCode::UNAUTHORIZED, &with(h)),
                "{h:?}"
            );
        }
        let no = [
            &["DPoP error=\"invalid_dpop_proof\""][..],
            &["Bearer error=\"use_dpop_nonce\""],
            &["DPoP realm=\"a, error=use_dpop_nonce\""],
            &["DPoP algs=\"EdDSA\", Bearer error=\"use_dpop_nonce\""],
            &[],
        ];
        for h in no {
            assert!(
                !is_nonce_challenge(StatusCode::UNAUTHORIZED, &with(h)),
                "{h:?}"
            );
        }
        let challenge = with(&["DPoP error=\"use_dpop_nonce\""]);
        assert!(
            !is_nonce_challenge(StatusCode::BAD_REQUEST, &challenge),
            "401 only"
        );
        assert!(!is_nonce_challenge(StatusCode::OK, &challenge));
    }
}
