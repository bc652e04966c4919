//! Revoked sessions, as every instance keeps them in memory: by the provider's session id
//! (`sid`), or by subject with a time (every session of that `sub` created at or before it
//! is over). Fed by back-channel logout and `sealgate sessions revoke`, shared through the
//! store (see `store`), checked on every session opened.
//!
//! Identifiers are kept and shared as SHA-256 digests (base64url): the store learns who
//! was logged out only as well as someone who already knows the `sub` or `sid` can guess.
//!
//! Pure: no I/O, no clock (`now` is passed in).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// What a revocation ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The session with this provider session id (digest).
    Sid(String),
    /// Every session of this subject (digest) created at or before `at` (Unix seconds).
    Sub { sub: String, at: u64 },
}

/// One revocation, as stored and published: what it ends and until when it matters (the
/// last second a session it ends could still be alive: `session.absolute` after it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub target: Target,
    pub expires_at: u64,
}

/// The digest under which a `sid` or `sub` is stored: base64url SHA-256, domain-separated.
pub fn digest(kind: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

impl Record {
    /// A revocation of the session with provider session id `sid`.
    pub fn sid(sid: &str, expires_at: u64) -> Record {
        Record {
            target: Target::Sid(digest("sid", sid)),
            expires_at,
        }
    }

    /// A revocation of every session of `sub` created at or before `at`.
    pub fn sub(sub: &str, at: u64, expires_at: u64) -> Record {
        Record {
            target: Target::Sub {
                sub: digest("sub", sub),
                at,
            },
            expires_at,
        }
    }

    /// The record's member string: `d:<digest>` or `s:<digest>:<at>`. Unique per
    /// revocation, so a sorted set scored by `expires_at` holds each once.
    pub fn member(&self) -> String {
        match &self.target {
            Target::Sid(d) => format!("d:{d}"),
            Target::Sub { sub, at } => format!("s:{sub}:{at}"),
        }
    }

    /// Parses a member string and its expiry back; `None` for anything else (a record of
    /// a newer version, or garbage someone with store access wrote).
    pub fn from_member(member: &str, expires_at: u64) -> Option<Record> {
        let valid_digest = |d: &str| {
            d.len() == 43
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let target = if let Some(d) = member.strip_prefix("d:") {
            valid_digest(d).then(|| Target::Sid(d.to_owned()))?
        } else if let Some(rest) = member.strip_prefix("s:") {
            let (d, at) = rest.split_once(':')?;
            if !valid_digest(d) || at.is_empty() || !at.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Target::Sub {
                sub: d.to_owned(),
                at: at.parse().ok()?,
            }
        } else {
            return None;
        };
        Some(Record { target, expires_at })
    }

    /// The pub/sub message: `<expires_at> <member>`.
    pub fn message(&self) -> String {
        format!("{} {}", self.expires_at, self.member())
    }

    /// Parses a pub/sub message back.
    pub fn from_message(message: &str) -> Option<Record> {
        let (exp, member) = message.split_once(' ')?;
        if exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Record::from_member(member, exp.parse().ok()?)
    }
}

/// The live revocations of this instance.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    /// sid digest -> expiry.
    sids: HashMap<String, u64>,
    /// sub digest -> (latest `at`, its expiry).
    subs: HashMap<String, (u64, u64)>,
}

impl Revocations {
    /// Adds `record`; returns whether it changed anything (a record already known, or
    /// already past at `now`, does not).
    pub fn insert(&mut self, record: Record, now: u64) -> bool {
        if record.expires_at <= now {
            return false;
        }
        match record.target {
            Target::Sid(d) => match self.sids.get_mut(&d) {
                Some(exp) if *exp >= record.expires_at => false,
                Some(exp) => {
                    *exp = record.expires_at;
                    true
                }
                None => {
                    self.sids.insert(d, record.expires_at);
                    true
                }
            },
            Target::Sub { sub, at } => match self.subs.get_mut(&sub) {
                Some((known, exp)) if *known >= at => {
                    *exp = (*exp).max(record.expires_at);
                    false
                }
                Some(entry) => {
                    *entry = (at, entry.1.max(record.expires_at));
                    true
                }
                None => {
                    self.subs.insert(sub, (at, record.expires_at));
                    true
                }
            },
        }
    }

    /// Whether a session of `sub` with provider session id `sid`, created at `created_at`,
    /// is revoked at `now`. Digests are worked out only when there is something to compare.
    pub fn is_revoked(&self, sub: &str, sid: Option<&str>, created_at: u64, now: u64) -> bool {
        if let Some(sid) = sid
            && !self.sids.is_empty()
            && self
                .sids
                .get(&digest("sid", sid))
                .is_some_and(|exp| now < *exp)
        {
            return true;
        }
        !self.subs.is_empty()
            && self
                .subs
                .get(&digest("sub", sub))
                .is_some_and(|(at, exp)| now < *exp && created_at <= *at)
    }

    /// Drops every revocation past its expiry.
    pub fn prune(&mut self, now: u64) {
        self.sids.retain(|_, exp| now < *exp);
        self.subs.retain(|_, (_, exp)| now < *exp);
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.sids.len() + self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sids.is_empty() && self.subs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn a_sid_revocation_ends_that_session_only() {
        let mut r = Revocations::default();
        assert!(r.insert(Record::sid("s1", T0 + 100), T0));
        assert!(r.is_revoked("alice", Some("s1"), T0 - 50, T0));
        assert!(!r.is_revoked("alice", Some("s2"), T0 - 50, T0));
        assert!(!r.is_revoked("alice", None, T0 - 50, T0));
        assert!(!r.is_revoked("alice", Some("s1"), T0 - 50, T0 + 100), "expired");
    }

    #[test]
    fn a_sub_revocation_ends_sessions_created_up_to_its_time() {
        let mut r = Revocations::default();
        assert!(r.insert(Record::sub("alice", T0, T0 + 100), T0));
        assert!(r.is_revoked("alice", Some("x"), T0 - 1, T0));
        assert!(r.is_revoked("alice", None, T0, T0), "same second counts as before");
        assert!(!r.is_revoked("alice", None, T0 + 1, T0 + 1), "a later login lives");
        assert!(!r.is_revoked("bob", None, T0 - 1, T0));
        // A later revocation of the same subject moves the time forward, never back.
        assert!(r.insert(Record::sub("alice", T0 + 10, T0 + 110), T0));
        assert!(!r.insert(Record::sub("alice", T0 + 5, T0 + 105), T0));
        assert!(r.is_revoked("alice", None, T0 + 9, T0 + 9));
    }

    #[test]
    fn known_or_past_records_change_nothing_and_prune_forgets() {
        let mut r = Revocations::default();
        assert!(!r.insert(Record::sid("old", T0), T0), "already past");
        assert!(r.insert(Record::sid("s", T0 + 10), T0));
        assert!(!r.insert(Record::sid("s", T0 + 10), T0), "already known");
        assert!(r.insert(Record::sub("u", T0, T0 + 20), T0));
        assert_eq!(r.len(), 2);
        r.prune(T0 + 10);
        assert_eq!(r.len(), 1);
        r.prune(T0 + 20);
        assert!(r.is_empty());
    }

    #[test]
    fn members_and_messages_hold_no_identifier_in_clear() {
        let rec = Record::sub("alice@example.com", T0, T0 + 5);
        assert!(!rec.member().contains("alice"));
        assert_eq!(Record::from_message(&rec.message()), Some(rec.clone()));
        assert_eq!(Record::from_member(&rec.member(), T0 + 5), Some(rec));
        let sid = Record::sid("sid-1", T0);
        assert_eq!(Record::from_member(&sid.member(), T0), Some(sid));
    }

    #[test]
    fn refuses_garbage_members() {
        for m in [
            "",
            "d:",
            "d:short",
            "x:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "s:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "s:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:",
            "s:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:-1",
            "s:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:99999999999999999999999",
            "d:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!",
        ] {
            assert_eq!(Record::from_member(m, T0), None, "{m:?}");
        }
        for m in ["", " ", "x d:a", "-1 d:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            assert_eq!(Record::from_message(m), None, "{m:?}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in "\\PC{0,80}", sub in "\\PC{0,40}",
                                                at in any::<u64>(), exp in any::<u64>()) {
            let _ = Record::from_message(&s);
            let _ = Record::from_member(&s, exp);
            let rec = Record::sub(&sub, at, exp);
            prop_assert_eq!(Record::from_message(&rec.message()), Some(rec));
        }

        #[test]
        fn revoked_exactly_when_a_live_record_covers_it(at in 0u64..1000, created in 0u64..1000,
                                                         exp in 0u64..2000, now in 0u64..2000) {
            let mut r = Revocations::default();
            r.insert(Record::sub("u", at, exp), now.min(exp.saturating_sub(1)));
            prop_assert_eq!(r.is_revoked("u", None, created, now), now < exp && created <= at && exp > 0);
        }
    }
}
