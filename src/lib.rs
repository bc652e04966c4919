//! sealgate: a stateless Backend-for-Frontend for OpenID Connect.
//!
//! The browser never holds a token: sealgate keeps them in sealed (XChaCha20-Poly1305),
//! chunked, `HttpOnly` cookies that any instance holding the key ring can open.
//!
//! Dependencies point one way (README "Layout"; `tests/module_graph.rs` checks it):
//! `server` -> `router` -> the handlers (`login`, `user`, `logout`, `api`, `frontend`) ->
//! {`app` (the shared state), `guard`, `jar`, `oidc`, `proxy` (the transport)} ->
//! {`session`, `cookies`, `session_cache`, `refresh`} -> {`seal`, `keys`, `http_client`} ->
//! {`config`, `error`, `reply`, `secret`, `clock`}; `metrics` and `tls` beside them.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod backchannel;
pub mod clock;
pub mod config;
pub mod cookies;
pub mod dpop;
pub mod error;
pub mod flight;
pub mod frontend;
pub mod guard;
pub mod http_client;
pub mod jar;
pub mod jwks;
pub mod jws;
pub mod key_admin;
pub mod keys;
pub mod login;
pub mod logout;
pub mod metrics;
pub mod oidc;
pub mod proxy;
pub mod refresh;
pub mod reply;
pub mod revocations;
pub mod router;
pub mod seal;
pub mod secret;
pub mod server;
pub mod session;
pub mod session_cache;
pub mod store;
pub mod sync;
pub mod tls;
pub mod user;

/// Entry points for the `fuzz/` targets: the logic lives here so it is built and linted
/// with the crate, and each target stays five lines. Behind the `fuzzing` feature: its ring's
/// key is public, so a production build must not carry it.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::OnceLock;

    use crate::config::SameSite;
    use crate::cookies::{CookieSpec, RequestCookies};
    use crate::keys::{KeyRing, MasterKey};

    /// The fixed ring the fuzz seeds were sealed with (kid `fz`, key bytes all 0x01),
    /// built once.
    pub fn ring() -> Option<&'static KeyRing> {
        static RING: OnceLock<Option<KeyRing>> = OnceLock::new();
        RING.get_or_init(|| {
            let key =
                MasterKey::parse("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE", "fuzz").ok()?;
            KeyRing::new(vec![("fz".to_owned(), key)], "fz", "fuzz").ok()
        })
        .as_ref()
    }

    /// The session cookie the fuzz target reads.
    pub fn spec() -> CookieSpec {
        CookieSpec::new("sealgate", "/", true, SameSite::Lax, 4)
    }

    /// The instant the fuzz target opens at.
    pub const NOW: u64 = 1_800_000_000;

    /// Parses `data` as `Cookie` header values (split on newlines, as several headers),
    /// then joins, opens and clears the session cookie.
    pub fn cookie_header(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Some(ring) = ring() else { return };
        let spec = spec();
        let jar = RequestCookies::parse(text.split('\n'));
        if let Ok(opened) = spec.open(&jar, ring, NOW) {
            let _ = crate::session::Session::from_bytes(opened.payload());
        }
        let _ = spec.clear(&jar);
    }

    /// A session payload (format 2, binary, or format 1, JSON) and a profile payload
    /// through their decoders; a format-2 payload that decodes must be exactly what encoding
    /// its session gives (one spelling per session: the decoder accepts nothing else).
    pub fn session_payload(data: &[u8]) {
        if let Ok(session) = crate::session::Session::from_bytes(data)
            && data.first() == Some(&crate::session::FORMAT_BINARY)
        {
            let again = session.to_bytes().ok();
            assert_eq!(
                again.as_deref().map(Vec::as_slice),
                Some(data),
                "not canonical"
            );
        }
        let _ = crate::session::Profile::from_bytes(data);
    }

    /// A callback query and a `returnTo` through their parsers.
    pub fn callback_query(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let _ = crate::login::CallbackParams::parse(&text);
        let _ = crate::login::local_path(&text);
    }

    /// A configuration file, and environment variables after a NUL byte (`NAME=value` lines),
    /// through the loader.
    pub fn config(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let (file, env) = text.split_once('\0').unwrap_or((&text, ""));
        let vars = env.lines().filter_map(|l| l.split_once('='));
        let _ = crate::config::Config::load(file, vars);
    }

    /// Header lines (`name: value`) and a request target through the proxy's rewriting:
    /// hop-by-hop removal, sealgate's cookies out of `Cookie` and `Set-Cookie`, the
    /// upstream URI.
    pub fn proxy_headers(data: &[u8]) {
        use http::header::{HeaderMap, HeaderName, HeaderValue};
        let text = String::from_utf8_lossy(data);
        let mut lines = text.lines();
        let target = lines.next().unwrap_or("/");
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':')
                && let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.trim().as_bytes()),
                    HeaderValue::from_str(value.trim()),
                )
            {
                headers.append(n, v);
            }
        }
        let ours = crate::jar::Cookies::new(false, SameSite::Lax, 4);
        crate::proxy::strip_hop_by_hop(&mut headers);
        crate::proxy::rewrite_cookies(
            &ours,
            &mut headers,
            crate::proxy::ForwardCookies::AllButOurs,
        );
        crate::proxy::drop_our_set_cookies(&ours, &mut headers);
        if let (Ok(base), Ok(uri)) = (
            url::Url::parse("http://127.0.0.1:9/base/"),
            target.parse::<http::Uri>(),
        ) {
            let _ = crate::proxy::upstream_uri(&base, &uri, Some("/api/"));
        }
    }
}
