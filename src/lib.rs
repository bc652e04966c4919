//! sealgate: a stateless Backend-for-Frontend for OpenID Connect.
//!
//! The browser never holds a token: sealgate keeps them in sealed (XChaCha20-Poly1305),
//! chunked, `HttpOnly` cookies that any instance holding the key ring can open.
//!
//! Dependencies point one way: `server` -> `app` -> {`login`, `logout`, `user`,
//! `frontend`, `proxy`} -> {`oidc`, `jar`} -> {`session`, `cookies`} -> `seal` -> `keys`,
//! with `http_client` under `oidc` and `proxy`; `config`, `error`, `reply`, `secret` and
//! `metrics` sit below everything.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod cookies;
pub mod error;
pub mod frontend;
pub mod http_client;
pub mod jar;
pub mod keys;
pub mod login;
pub mod logout;
pub mod metrics;
pub mod oidc;
pub mod proxy;
pub mod refresh;
pub mod reply;
pub mod seal;
pub mod secret;
pub mod server;
pub mod session;
pub mod tls;
pub mod user;

/// Entry points for the `fuzz/` targets: the logic lives here so it is built and linted
/// with the crate, and each target stays five lines.
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
}
