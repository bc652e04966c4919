//! The session as a request carries it: which cookies sealgate owns, opening the session
//! and profile cookies under the session policy, and the `Set-Cookie` values that write
//! or clear them.
//!
//! Sits between the endpoints and {`session`, `cookies`}; knows nothing of OIDC or paths.

use crate::config::SameSite;
use crate::cookies::{CookieSpec, ReadError, RequestCookies, WriteError};
use crate::error::Error;
use crate::keys::KeyRing;
use crate::session::{Limits, Profile, Session};

/// Base name of the session cookie (`Path=/`).
const SESSION: &str = "sealgate";
/// Base name of the profile cookie (`Path=/bff/`).
const PROFILE: &str = "sealgate-user";
/// Base name of login-transaction cookies, followed by 8 characters of the state.
const TX: &str = "sealgate-tx-";
/// Characters of the state that name a login-transaction cookie.
pub const TX_ID_LEN: usize = 8;
/// Most login transactions kept at once (several tabs logging in); older ones are dropped,
/// so repeated `/bff/login` cannot grow the `Cookie` header without bound.
pub const MAX_PENDING_LOGINS: usize = 4;

/// The cookies sealgate owns, with their attributes.
#[derive(Clone, Debug)]
pub struct Cookies {
    pub session: CookieSpec,
    pub profile: CookieSpec,
    secure: bool,
    same_site: SameSite,
    tx_prefix: String,
}

impl Cookies {
    pub fn new(secure: bool, same_site: SameSite, max_chunks: usize) -> Self {
        let tx_prefix = CookieSpec::new(TX, "/", secure, same_site, 1)
            .name()
            .to_owned();
        Self {
            session: CookieSpec::new(SESSION, "/", secure, same_site, max_chunks),
            profile: CookieSpec::new(PROFILE, "/bff/", secure, same_site, max_chunks),
            secure,
            same_site,
            tx_prefix,
        }
    }

    /// The login-transaction cookie for `state`, or `None` when the state cannot name one.
    /// The transaction cookie is `SameSite=Lax` whatever the session's setting: the
    /// callback arrives by a cross-site top-level navigation from the provider, on which
    /// browsers send `Lax` cookies but never `Strict` ones.
    pub fn transaction(&self, state: &str) -> Option<CookieSpec> {
        let id = state.get(..TX_ID_LEN)?;
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let same_site = match self.same_site {
            SameSite::None => SameSite::None,
            SameSite::Lax | SameSite::Strict => SameSite::Lax,
        };
        Some(CookieSpec::new(
            &format!("{TX}{id}"),
            "/",
            self.secure,
            same_site,
            1,
        ))
    }

    /// The login-transaction cookies the request carries.
    pub fn transactions(&self, jar: &RequestCookies<'_>) -> Vec<CookieSpec> {
        let mut found: Vec<CookieSpec> = jar
            .pairs()
            .iter()
            .filter_map(|(name, _)| {
                let id = name.strip_prefix(&self.tx_prefix)?.strip_suffix(".0")?;
                if id.len() == TX_ID_LEN {
                    self.transaction(id)
                } else {
                    None
                }
            })
            .collect();
        found.dedup_by(|a, b| a.name() == b.name());
        found
    }

    /// Whether a cookie of this name is one of sealgate's own (never forwarded upstream).
    pub fn is_ours(&self, name: &str) -> bool {
        RequestCookies::is_chunk_of(name, self.session.name())
            || RequestCookies::is_chunk_of(name, self.profile.name())
            || name.starts_with(&self.tx_prefix)
    }

    /// Expires every chunk of the session and profile cookies the request carried.
    pub fn clear_session(&self, jar: &RequestCookies<'_>) -> Vec<String> {
        let mut out = self.session.clear(jar);
        out.extend(self.profile.clear(jar));
        out
    }
}

/// Why a request has no session: logged, and counted in
/// `sealgate_sessions_rejected_total{reason}`. An enum, so that a new reason is a decision
/// the compiler asks for, never a typo counted as `invalid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// No session cookie at all.
    Missing,
    /// Authentic, past its sealed expiry.
    Expired,
    /// Sealed under a key the ring no longer holds.
    UnknownKey,
    /// Chunks missing, mixed or tampered with.
    Invalid,
    /// Opened, but the payload does not decode.
    Undecodable,
    /// Past the absolute limit from login.
    Absolute,
    /// Unused for longer than the idle limit.
    Idle,
    /// Timestamps in the future.
    Future,
    /// The session opened, its profile cookie did not.
    Profile,
}

impl Rejected {
    /// Every reason, for metrics and tests.
    pub const ALL: [Rejected; 9] = [
        Rejected::Missing,
        Rejected::Expired,
        Rejected::UnknownKey,
        Rejected::Invalid,
        Rejected::Undecodable,
        Rejected::Absolute,
        Rejected::Idle,
        Rejected::Future,
        Rejected::Profile,
    ];

    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Missing => "missing",
            Rejected::Expired => "expired",
            Rejected::UnknownKey => "unknown_key",
            Rejected::Invalid => "invalid",
            Rejected::Undecodable => "undecodable",
            Rejected::Absolute => "absolute",
            Rejected::Idle => "idle",
            Rejected::Future => "future",
            Rejected::Profile => "profile",
        }
    }
}

impl From<ReadError> for Rejected {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Missing => Rejected::Missing,
            ReadError::Expired => Rejected::Expired,
            ReadError::UnknownKey => Rejected::UnknownKey,
            ReadError::Invalid => Rejected::Invalid,
        }
    }
}

/// What every read or write of sealgate's cookies within one request needs: the request's
/// cookies, the key ring, the cookie specs, the session policy and the time. Built once
/// per request by the handler, so no call repeats the five of them.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub jar: &'a RequestCookies<'a>,
    pub ring: &'a KeyRing,
    pub cookies: &'a Cookies,
    pub limits: &'a Limits,
    pub now: u64,
}

impl Ctx<'_> {
    /// `load`: the session, within its limits.
    pub fn load(&self) -> Result<Loaded, Rejected> {
        load(self.jar, self.ring, self.cookies, self.limits, self.now)
    }

    /// `open_profile`: the profile of `session`.
    pub fn open_profile(&self, session: &Session) -> Result<LoadedProfile, ReadError> {
        open_profile(self.jar, self.ring, self.cookies, session, self.now)
    }

    /// `load_profile`: the profile of `session`, if it opens.
    pub fn load_profile(&self, session: &Session) -> Option<Profile> {
        load_profile(self.jar, self.ring, self.cookies, session, self.now)
    }

    /// `write_session`: `Set-Cookie` values storing `session`.
    pub fn write_session(&self, session: &Session) -> Result<Vec<String>, WriteError> {
        write_session(
            self.jar,
            self.ring,
            self.cookies,
            self.limits,
            self.now,
            session,
        )
    }

    /// `write_profile`: `Set-Cookie` values storing `profile` of `session`.
    pub fn write_profile(
        &self,
        session: &Session,
        profile: &Profile,
    ) -> Result<Vec<String>, WriteError> {
        write_profile(
            self.jar,
            self.ring,
            self.cookies,
            self.limits,
            self.now,
            session,
            profile,
        )
    }
}

/// A session that opened and is within its limits.
#[derive(Debug)]
pub struct Loaded {
    pub session: Session,
    /// Sealed under a key that is no longer primary: re-seal on the next write.
    pub by_primary: bool,
    /// The sealed expiry of the cookie it came from.
    pub expires_at: u64,
}

/// Opens the session cookie and applies the policy (absolute and idle limits).
pub fn load(
    jar: &RequestCookies<'_>,
    ring: &KeyRing,
    cookies: &Cookies,
    limits: &Limits,
    now: u64,
) -> Result<Loaded, Rejected> {
    let opened = cookies
        .session
        .open(jar, ring, now)
        .map_err(Rejected::from)?;
    let session = Session::from_bytes(opened.payload()).map_err(|_| Rejected::Undecodable)?;
    session.check(limits, now).map_err(|e| match e {
        crate::session::Ended::Absolute => Rejected::Absolute,
        crate::session::Ended::Idle => Rejected::Idle,
        crate::session::Ended::Future => Rejected::Future,
    })?;
    Ok(Loaded {
        session,
        by_primary: opened.by_primary,
        expires_at: opened.expires_at,
    })
}

/// A profile that opened and belongs to the session.
#[derive(Debug)]
pub struct LoadedProfile {
    pub profile: Profile,
    /// Sealed under a key that is no longer primary: re-seal it while that key still opens.
    pub by_primary: bool,
}

/// Opens the profile cookie; `Invalid` when it does not decode or belongs to another
/// session than `session`.
pub fn open_profile(
    jar: &RequestCookies<'_>,
    ring: &KeyRing,
    cookies: &Cookies,
    session: &Session,
    now: u64,
) -> Result<LoadedProfile, ReadError> {
    let opened = cookies.profile.open(jar, ring, now)?;
    let profile = Profile::from_bytes(opened.payload()).map_err(|_| ReadError::Invalid)?;
    if !profile.belongs_to(session) {
        return Err(ReadError::Invalid);
    }
    Ok(LoadedProfile {
        profile,
        by_primary: opened.by_primary,
    })
}

/// Opens the profile cookie; `None` unless it opens and belongs to `session`.
pub fn load_profile(
    jar: &RequestCookies<'_>,
    ring: &KeyRing,
    cookies: &Cookies,
    session: &Session,
    now: u64,
) -> Option<Profile> {
    open_profile(jar, ring, cookies, session, now)
        .ok()
        .map(|p| p.profile)
}

/// The answer when a session cannot be written: tokens too large for the chunk cap are the
/// provider's doing (502), anything else cannot happen for sizes below the cap.
pub fn write_failure(e: WriteError) -> Error {
    match e {
        WriteError::TooManyChunks { .. } => Error::SessionTooLarge(e.to_string()),
        WriteError::Seal(_) | WriteError::Encode(_) => Error::Internal(e.to_string()),
    }
}

fn encode_failure(e: crate::session::EncodeError) -> WriteError {
    WriteError::Encode(e.to_string())
}

/// `Set-Cookie` values storing `session`, sealed until its policy expiry.
pub fn write_session(
    jar: &RequestCookies<'_>,
    ring: &KeyRing,
    cookies: &Cookies,
    limits: &Limits,
    now: u64,
    session: &Session,
) -> Result<Vec<String>, WriteError> {
    let bytes = session.to_bytes().map_err(encode_failure)?;
    cookies
        .session
        .seal(jar, ring, now, session.expires_at(limits), &bytes)
}

/// `Set-Cookie` values storing `profile`, sealed until the session's absolute limit (the
/// idle limit is the session cookie's business; the profile is never read without it).
pub fn write_profile(
    jar: &RequestCookies<'_>,
    ring: &KeyRing,
    cookies: &Cookies,
    limits: &Limits,
    now: u64,
    session: &Session,
    profile: &Profile,
) -> Result<Vec<String>, WriteError> {
    let bytes = profile.to_bytes().map_err(encode_failure)?;
    let until = session.created_at.saturating_add(limits.absolute);
    cookies.profile.seal(jar, ring, now, until, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_is_counted_under_its_own_label() {
        for reason in Rejected::ALL {
            let m = crate::metrics::Metrics::new(Vec::new());
            m.rejected(reason.as_str());
            let text = m.render();
            let line = text
                .lines()
                .find(|l| l.contains(&format!("reason=\"{}\"", reason.as_str())))
                .unwrap_or_else(|| panic!("{reason:?} has no series"));
            assert!(line.ends_with(" 1"), "{reason:?} counted elsewhere: {line}");
        }
    }

    #[test]
    fn transaction_cookies_are_named_by_state_and_found_again() {
        let c = Cookies::new(true, SameSite::Strict, 4);
        let spec = c.transaction("AbCdEfGh-rest-of-state").unwrap();
        assert_eq!(spec.name(), "__Host-Http-sealgate-tx-AbCdEfGh");
        assert!(c.transaction("short").is_none());
        assert!(c.transaction("a;b=c...rest").is_none());
        let header = "__Host-Http-sealgate-tx-AbCdEfGh.0=x; __Host-Http-sealgate-tx-12345678.0=y; \
                      __Host-Http-sealgate.0=z; __Host-Http-sealgate-tx-toolong99.0=w";
        let jar = RequestCookies::parse([header]);
        let names: Vec<_> = c
            .transactions(&jar)
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "__Host-Http-sealgate-tx-AbCdEfGh",
                "__Host-Http-sealgate-tx-12345678"
            ]
        );
    }

    #[test]
    fn transaction_cookie_is_lax_even_when_the_session_is_strict() {
        let c = Cookies::new(true, SameSite::Strict, 4);
        let jar = RequestCookies::default();
        let ring = crate::fuzzing::ring().unwrap();
        let set = c
            .transaction("AbCdEfGh")
            .unwrap()
            .seal(&jar, ring, 0, 600, b"tx")
            .unwrap();
        assert!(set[0].contains("SameSite=Lax"), "{}", set[0]);
    }
}
