//! The session: what the sealed cookies hold, and the pure policy over it (still alive? due
//! for a token refresh? due for an idle-timer touch?).
//!
//! Never sees a header, a socket or a clock: `now` (Unix seconds) is always passed in.
//!
//! Two payloads, split by path as Curity's token handler does, so that every API call
//! carries only what it needs: the `Session` (tokens and timers) rides on `Path=/`; the
//! `Profile` (claims for `/bff/user`, the ID token for logout) only on `/bff/`. Both carry
//! the same random session id, so a profile never pairs with another login's session.
//!
//! The session payload is read on every API call the session cache does not answer, so it
//! has a compact binary layout (format 2, below); format 1, the JSON object of earlier
//! releases, still opens, so an upgrade logs no one out. The profile stays JSON: its claims
//! are JSON, and only `/bff/*` reads it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::secret::SecretString;

/// The limits of `[session]`, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Hard limit from login.
    pub absolute: u64,
    /// Limit since the last use.
    pub idle: u64,
    /// Refresh the access token this long before it expires.
    pub refresh_skew: u64,
}

impl Limits {
    /// How stale `last_seen` may get before a request re-seals the session to move it.
    /// Re-sealing on every request would put a `Set-Cookie` on every API answer; moving it
    /// in steps of a tenth of the idle limit (at most 5 minutes) means a session ends
    /// between `idle - step` and `idle` after its last use, never later.
    pub fn touch_step(&self) -> u64 {
        (self.idle / 10).clamp(1, 300)
    }
}

/// Why an otherwise authentic session is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// Past the absolute limit from login.
    #[error("absolute limit reached")]
    Absolute,
    /// Unused for longer than the idle limit.
    #[error("idle limit reached")]
    Idle,
    /// Timestamps from the future: not a session this code wrote.
    #[error("timestamps in the future")]
    Future,
}

/// What to do about the access token before forwarding a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessState {
    /// Good for at least `refresh_skew` more.
    Valid,
    /// Expired or about to: refresh it first.
    Refresh,
    /// Expired and there is no refresh token: the session can no longer call APIs.
    Dead,
}

/// The part of the session every API call needs, sealed into the `Path=/` cookie.
/// Field names are one letter: tokens dominate the size, the encoding should add little.
#[derive(Debug, Serialize, Deserialize)]
pub struct Session {
    /// Random session id (128 bits, base64url), shared with the profile.
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "a")]
    pub access_token: SecretString,
    /// When the access token expires (Unix seconds), when the provider said.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SecretString>,
    /// The provider's subject identifier.
    #[serde(rename = "s")]
    pub sub: String,
    /// The provider's session id (`sid` claim), for logout.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Login time (Unix seconds): start of the absolute limit.
    #[serde(rename = "c")]
    pub created_at: u64,
    /// Last recorded use (Unix seconds): start of the idle limit.
    #[serde(rename = "l")]
    pub last_seen: u64,
    /// The session's own DPoP proof key (RFC 9449) when `[oidc] dpop` is on, in its sealed
    /// form (`jws::DpopKey::sealed`: a P-256 key, or the Ed25519 seed of sessions from
    /// before ES256 proof keys). Generated at login, it never leaves the sealed cookie.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<SecretString>,
}

/// What only `/bff/*` needs, sealed into the `Path=/bff/` cookie.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profile {
    /// The id of the session this profile belongs to.
    #[serde(rename = "i")]
    pub session_id: String,
    /// The raw ID token, kept only as `id_token_hint` for RP-initiated logout.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<SecretString>,
    /// The user's claims as `/bff/user` returns them.
    #[serde(rename = "c", default)]
    pub claims: Map<String, Value>,
}

/// A payload that does not decode. Only possible for a value we sealed ourselves, e.g.
/// written by a newer version with an incompatible change: treated as "no session".
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A format-1 (JSON) payload, or a profile, that is not what this code writes.
    #[error("session payload does not decode: {0}")]
    Json(#[from] serde_json::Error),
    /// A format-2 payload that is truncated, too long, or has fields this code does not know.
    #[error("session payload does not decode: malformed binary layout")]
    Binary,
}

/// A payload that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("profile does not encode: {0}")]
    Json(#[from] serde_json::Error),
    /// A field longer than the layout's 16-bit length (far beyond what a cookie can carry).
    #[error("session field of {0} bytes exceeds 65535")]
    TooLong(usize),
}

// The session payload, format 2 (all integers big-endian):
//
//   format[1] = 2 | flags[1] | created_at[8] | last_seen[8] | access_expires_at[8]?
//   | id | sub | access_token | refresh_token? | sid? | dpop_key?
//
// each string being `len[2] | UTF-8 bytes`, and `?` a field present exactly when its flag
// bit is set. Format 1 is a JSON object, so its first byte is `{`: the first byte tells the
// two apart. Unknown flag bits, a truncated field or trailing bytes are refused, never
// guessed at.
pub(crate) const FORMAT_BINARY: u8 = 2;
const HAS_EXPIRY: u8 = 1;
const HAS_REFRESH: u8 = 1 << 1;
const HAS_SID: u8 = 1 << 2;
const HAS_DPOP: u8 = 1 << 3;
const KNOWN_FLAGS: u8 = HAS_EXPIRY | HAS_REFRESH | HAS_SID | HAS_DPOP;

/// Appends `len[2] | bytes`.
fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::TooLong(bytes.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a format-2 payload front to back; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(DecodeError::Binary)?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Binary)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Binary)
    }

    fn secret(&mut self) -> Result<SecretString, DecodeError> {
        self.str().map(SecretString::from)
    }
}

/// A new random session id: 128 bits, base64url.
pub fn random_id() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

impl Session {
    /// The sealed expiry: the earlier of the absolute and the idle limit.
    pub fn expires_at(&self, limits: &Limits) -> u64 {
        self.created_at
            .saturating_add(limits.absolute)
            .min(self.last_seen.saturating_add(limits.idle))
    }

    /// Whether the session is still within its limits at `now`. The sealed expiry already
    /// enforces both; this re-checks them against the payload, so that shortening a limit
    /// in the configuration takes effect for sessions sealed before the change.
    pub fn check(&self, limits: &Limits, now: u64) -> Result<(), Ended> {
        // A little clock skew between instances is normal; more is not a session we wrote.
        const SKEW: u64 = 300;
        if self.created_at > now.saturating_add(SKEW) || self.last_seen > now.saturating_add(SKEW) {
            return Err(Ended::Future);
        }
        if now >= self.created_at.saturating_add(limits.absolute) {
            return Err(Ended::Absolute);
        }
        if now >= self.last_seen.saturating_add(limits.idle) {
            return Err(Ended::Idle);
        }
        Ok(())
    }

    /// Whether the access token is good to forward at `now`.
    pub fn access_state(&self, limits: &Limits, now: u64) -> AccessState {
        match self.access_expires_at {
            Some(exp) if now.saturating_add(limits.refresh_skew) >= exp => {
                if self.refresh_token.is_some() {
                    AccessState::Refresh
                } else if now >= exp {
                    AccessState::Dead
                } else {
                    // Inside the skew but no way to refresh: use it while it lasts.
                    AccessState::Valid
                }
            }
            _ => AccessState::Valid,
        }
    }

    /// Records a use at `now`. Returns true when the session moved enough that it must be
    /// re-sealed (see `Limits::touch_step`).
    pub fn touch(&mut self, limits: &Limits, now: u64) -> bool {
        if now >= self.last_seen.saturating_add(limits.touch_step()) {
            self.last_seen = now;
            true
        } else {
            false
        }
    }

    /// The first second at which a call on this session needs more than forwarding its
    /// access token: a limit is reached, the token is due for a refresh, or `last_seen` is
    /// due for a touch. Before it, for a session that passed `check`, `check` still passes,
    /// `access_state` is `Valid` and `touch` changes nothing, so an answer worked out once
    /// holds until then (see `session_cache`).
    pub fn quiet_until(&self, limits: &Limits) -> u64 {
        let access = match self.access_expires_at {
            Some(exp) if self.refresh_token.is_some() => exp.saturating_sub(limits.refresh_skew),
            Some(exp) => exp,
            None => u64::MAX,
        };
        self.created_at
            .saturating_add(limits.absolute)
            .min(self.last_seen.saturating_add(limits.idle))
            .min(self.last_seen.saturating_add(limits.touch_step()))
            .min(access)
    }

    /// The payload in format 2, in a buffer sized once (no reallocation leaves a copy of
    /// a token behind) and zeroized when dropped.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        let strings = [
            Some(self.id.as_bytes()),
            Some(self.sub.as_bytes()),
            Some(self.access_token.expose().as_bytes()),
            self.refresh_token.as_ref().map(|t| t.expose().as_bytes()),
            self.sid.as_ref().map(|s| s.as_bytes()),
            self.dpop_key.as_ref().map(|k| k.expose().as_bytes()),
        ];
        let expiry = if self.access_expires_at.is_some() {
            8
        } else {
            0
        };
        let len = 2 + 16 + expiry + strings.iter().flatten().map(|s| 2 + s.len()).sum::<usize>();
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        let flag = |present: bool, bit: u8| if present { bit } else { 0 };
        let flags = flag(self.access_expires_at.is_some(), HAS_EXPIRY)
            | flag(self.refresh_token.is_some(), HAS_REFRESH)
            | flag(self.sid.is_some(), HAS_SID)
            | flag(self.dpop_key.is_some(), HAS_DPOP);
        out.extend_from_slice(&[FORMAT_BINARY, flags]);
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.last_seen.to_be_bytes());
        if let Some(exp) = self.access_expires_at {
            out.extend_from_slice(&exp.to_be_bytes());
        }
        for field in strings.into_iter().flatten() {
            put(&mut out, field)?;
        }
        Ok(out)
    }

    /// Decodes a payload of either format: 2 (binary) as written today, 1 (JSON) as
    /// written by releases before it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(&FORMAT_BINARY) => Self::from_binary(bytes.get(1..).unwrap_or_default()),
            Some(b'{') => Ok(serde_json::from_slice(bytes)?),
            _ => Err(DecodeError::Binary),
        }
    }

    fn from_binary(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let [flags] = r.array()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::Binary);
        }
        let has = |bit: u8| flags & bit != 0;
        let created_at = r.u64()?;
        let last_seen = r.u64()?;
        let access_expires_at = has(HAS_EXPIRY).then(|| r.u64()).transpose()?;
        let id = r.str()?.to_owned();
        let sub = r.str()?.to_owned();
        let access_token = r.secret()?;
        let refresh_token = has(HAS_REFRESH).then(|| r.secret()).transpose()?;
        let sid = has(HAS_SID)
            .then(|| r.str().map(str::to_owned))
            .transpose()?;
        let dpop_key = has(HAS_DPOP).then(|| r.secret()).transpose()?;
        if !r.0.is_empty() {
            return Err(DecodeError::Binary);
        }
        Ok(Session {
            id,
            access_token,
            access_expires_at,
            refresh_token,
            sub,
            sid,
            created_at,
            last_seen,
            dpop_key,
        })
    }
}

impl Profile {
    /// The payload (JSON), zeroized when dropped: it holds the ID token. Measured first and
    /// written into a buffer of that size, so no reallocation leaves a copy behind.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        let mut counted = Counter(0);
        serde_json::to_writer(&mut counted, self)?;
        let mut out = Zeroizing::new(Vec::with_capacity(counted.0));
        serde_json::to_writer(&mut *out, self)?;
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Whether this profile belongs to `session`.
    pub fn belongs_to(&self, session: &Session) -> bool {
        // Ids are random and public to no one but the sealed cookies: plain comparison.
        self.session_id == session.id
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const LIMITS: Limits = Limits {
        absolute: 12 * 3600,
        idle: 3600,
        refresh_skew: 60,
    };
    pub(crate) const T0: u64 = 1_800_000_000;

    pub(crate) fn session(now: u64) -> Session {
        Session {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            access_token: "at".into(),
            access_expires_at: Some(now + 300),
            refresh_token: Some("rt".into()),
            sub: "alice".into(),
            sid: Some("sid-1".into()),
            created_at: now,
            last_seen: now,
            dpop_key: None,
        }
    }

    #[test]
    fn sealed_expiry_is_the_earlier_limit() {
        let mut s = session(T0);
        assert_eq!(s.expires_at(&LIMITS), T0 + 3600);
        s.last_seen = T0 + 12 * 3600 - 60;
        assert_eq!(s.expires_at(&LIMITS), T0 + 12 * 3600);
    }

    #[test]
    fn refuses_idle_absolute_and_future_sessions() {
        let mut s = session(T0);
        assert_eq!(s.check(&LIMITS, T0 + 3599), Ok(()));
        assert_eq!(s.check(&LIMITS, T0 + 3600), Err(Ended::Idle));
        s.last_seen = T0 + 12 * 3600 - 1;
        assert_eq!(s.check(&LIMITS, T0 + 12 * 3600), Err(Ended::Absolute));
        assert_eq!(session(T0 + 1000).check(&LIMITS, T0), Err(Ended::Future));
        assert_eq!(
            session(T0 + 100).check(&LIMITS, T0),
            Ok(()),
            "small skew is tolerated"
        );
    }

    #[test]
    fn access_token_is_refreshed_within_the_skew() {
        let mut s = session(T0);
        assert_eq!(s.access_state(&LIMITS, T0), AccessState::Valid);
        assert_eq!(s.access_state(&LIMITS, T0 + 239), AccessState::Valid);
        assert_eq!(s.access_state(&LIMITS, T0 + 240), AccessState::Refresh);
        assert_eq!(s.access_state(&LIMITS, T0 + 10_000), AccessState::Refresh);
        s.refresh_token = None;
        assert_eq!(s.access_state(&LIMITS, T0 + 240), AccessState::Valid);
        assert_eq!(s.access_state(&LIMITS, T0 + 300), AccessState::Dead);
        s.access_expires_at = None;
        assert_eq!(s.access_state(&LIMITS, T0 + 10_000), AccessState::Valid);
    }

    #[test]
    fn touch_moves_last_seen_only_in_steps() {
        let mut s = session(T0);
        assert_eq!(LIMITS.touch_step(), 300);
        assert!(!s.touch(&LIMITS, T0 + 299));
        assert_eq!(s.last_seen, T0);
        assert!(s.touch(&LIMITS, T0 + 300));
        assert_eq!(s.last_seen, T0 + 300);
        let tiny = Limits { idle: 5, ..LIMITS };
        assert_eq!(tiny.touch_step(), 1);
    }

    #[test]
    fn profile_pairs_only_with_its_session() {
        let s = session(T0);
        let p = Profile {
            session_id: s.id.clone(),
            ..Profile::default()
        };
        assert!(p.belongs_to(&s));
        let other = Profile {
            session_id: "BBBBBBBBBBBBBBBBBBBBBB".into(),
            ..Profile::default()
        };
        assert!(!other.belongs_to(&s));
    }

    #[test]
    fn payload_debug_shows_no_token() {
        let s = session(T0);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("\"at\"") && !shown.contains("\"rt\""),
            "{shown}"
        );
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn random_ids_are_distinct_and_128_bit() {
        let a = random_id().unwrap();
        assert_eq!(a.len(), 22);
        assert_ne!(a, random_id().unwrap());
    }

    fn full(now: u64) -> Session {
        Session {
            dpop_key: Some("k".repeat(97).as_str().into()),
            ..session(now)
        }
    }

    fn same(a: &Session, b: &Session) -> bool {
        let secret = |t: &Option<SecretString>| t.as_ref().map(|t| t.expose().to_owned());
        a.id == b.id
            && a.access_token.expose() == b.access_token.expose()
            && a.access_expires_at == b.access_expires_at
            && secret(&a.refresh_token) == secret(&b.refresh_token)
            && a.sub == b.sub
            && a.sid == b.sid
            && a.created_at == b.created_at
            && a.last_seen == b.last_seen
            && secret(&a.dpop_key) == secret(&b.dpop_key)
    }

    #[test]
    fn writes_the_binary_format_and_still_reads_the_json_one() {
        let s = full(T0);
        let binary = s.to_bytes().unwrap();
        assert_eq!(binary.first(), Some(&FORMAT_BINARY));
        assert!(same(&Session::from_bytes(&binary).unwrap(), &s));
        // Format 1, as releases before format 2 sealed it.
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(json.first(), Some(&b'{'));
        assert!(same(&Session::from_bytes(&json).unwrap(), &s));
        assert!(
            binary.len() < json.len(),
            "{} vs {}",
            binary.len(),
            json.len()
        );
        let bare = Session {
            access_expires_at: None,
            refresh_token: None,
            sid: None,
            ..session(T0)
        };
        assert!(same(
            &Session::from_bytes(&bare.to_bytes().unwrap()).unwrap(),
            &bare
        ));
    }

    #[test]
    fn refuses_a_binary_payload_cut_short_extended_or_with_unknown_fields() {
        let bytes = full(T0).to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(Session::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(Session::from_bytes(&longer).is_err(), "trailing byte");
        let mut unknown = bytes.to_vec();
        unknown[1] |= 1 << 4;
        assert!(Session::from_bytes(&unknown).is_err(), "unknown flag");
        let mut other = bytes.to_vec();
        other[0] = 3;
        assert!(Session::from_bytes(&other).is_err(), "unknown format");
    }

    #[test]
    fn a_profile_payload_is_written_into_a_buffer_of_its_exact_size() {
        let mut claims = Map::new();
        claims.insert("name".into(), Value::String("Jürgen \"x\"".repeat(50)));
        let p = Profile {
            session_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            id_token: Some("eyJ.id.sig".repeat(200).as_str().into()),
            claims,
        };
        let bytes = p.to_bytes().unwrap();
        assert_eq!(bytes.capacity(), bytes.len());
        assert_eq!(Profile::from_bytes(&bytes).unwrap().claims, p.claims);
    }

    #[test]
    fn refuses_to_encode_a_field_beyond_the_layout() {
        let mut s = session(T0);
        s.access_token = "a".repeat(70_000).as_str().into();
        assert!(matches!(s.to_bytes(), Err(EncodeError::TooLong(70_000))));
    }

    proptest! {
        #[test]
        fn any_session_round_trips_in_either_format(
            id in "[A-Za-z0-9_-]{0,30}", at in "\\PC{0,3000}", rt in proptest::option::of("\\PC{0,300}"),
            exp in proptest::option::of(any::<u64>()), sub in "\\PC{0,80}", sid in proptest::option::of("\\PC{0,60}"),
            created in any::<u64>(), seen in any::<u64>(), key in proptest::option::of("[A-Za-z0-9_-]{43,130}"),
        ) {
            let s = Session {
                id, access_token: at.as_str().into(), access_expires_at: exp,
                refresh_token: rt.as_deref().map(SecretString::from), sub, sid,
                created_at: created, last_seen: seen, dpop_key: key.as_deref().map(SecretString::from),
            };
            let bytes = s.to_bytes().unwrap();
            prop_assert_eq!(bytes.capacity(), bytes.len(), "sized once, exactly");
            prop_assert!(same(&Session::from_bytes(&bytes).unwrap(), &s));
            prop_assert!(same(&Session::from_bytes(&serde_json::to_vec(&s).unwrap()).unwrap(), &s));
        }

        #[test]
        fn arbitrary_binary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut payload = vec![FORMAT_BINARY];
            payload.extend(bytes);
            let _ = Session::from_bytes(&payload);
        }

        #[test]
        fn nothing_changes_before_quiet_until_and_something_does_at_it(
            created in 0u64..1_000_000, seen in 0u64..100_000, exp in proptest::option::of(0u64..2_000_000),
            refreshable in any::<bool>(), absolute in 1u64..100_000, idle in 1u64..50_000,
            skew in 0u64..1000, after in 0u64..200_000,
        ) {
            let limits = Limits { absolute, idle: idle.min(absolute), refresh_skew: skew };
            let mut s = session(created);
            s.last_seen = created + seen;
            s.access_expires_at = exp;
            if !refreshable { s.refresh_token = None; }
            let start = s.last_seen;
            let quiet = s.quiet_until(&limits);
            let fine = |s: &Session, t: u64| {
                let mut touched = Session { id: s.id.clone(), access_token: "at".into(), refresh_token: None, sub: String::new(), sid: None, dpop_key: None, ..*s };
                s.check(&limits, t).is_ok() && s.access_state(&limits, t) == AccessState::Valid && !touched.touch(&limits, t)
            };
            if fine(&s, start) {
                let t = start + after;
                prop_assert_eq!(fine(&s, t), t < quiet, "t={} quiet={}", t, quiet);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Session::from_bytes(&bytes);
            let _ = Profile::from_bytes(&bytes);
        }

        #[test]
        fn a_live_session_never_outlives_either_limit(created in 0u64..u64::MAX / 4, used in 0u64..100_000,
                                                      later in 0u64..100_000) {
            let mut s = session(created);
            s.touch(&LIMITS, created + used);
            let now = created + used + later;
            if s.check(&LIMITS, now).is_ok() {
                prop_assert!(now < created + LIMITS.absolute);
                prop_assert!(now < created + used + LIMITS.idle);
                prop_assert!(now < s.expires_at(&LIMITS));
            }
        }
    }
}
