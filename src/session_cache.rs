//! A bounded, short-lived cache of session cookies this instance has already opened, for
//! proxied calls.
//!
//! A browser sends the same sealed value on every API call until the session is next
//! re-sealed. Opening it (base64, XChaCha20-Poly1305, JSON, zeroizing the copies) is most of
//! what sealgate adds to a call, so the first call keeps the one thing later calls need, the
//! session's `dpop::Credential` (the `Authorization` value, and for a DPoP-bound session its
//! proof key, made once, with the token's `ath`), and they skip the rest: a hit on a DPoP
//! session costs one signature, its fresh proof.
//!
//! A hit answers exactly what opening the cookie again would, never more:
//! - only the whole sealed value, byte for byte, hits (compared in constant time): a value
//!   that differs anywhere, tampered with or forged, misses and takes the full path;
//! - an entry belongs to the key ring it was opened under: once the ring is replaced
//!   (rotation, retirement) nothing opened under the old one is served;
//! - an entry is served only from the second it was opened (a clock stepped back misses, as
//!   opening could then find the session in the future) until the first second the session
//!   needs more than forwarding (`Session::quiet_until`: a limit, a refresh, a touch), its
//!   sealed expiry, and at most `TTL` after it was opened; the caller only inserts a session
//!   that needed no write.
//!
//! No I/O and no clock: `now` is passed in. The `Authorization` values are zeroized when the
//! last request using one is done with it (see `dpop::Credential`).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::dpop::Credential;
use crate::seal;

/// Longest an entry is served after the value was opened, in seconds: bounds how long a
/// token stays in memory beyond its last use here.
pub const TTL: u64 = 60;
/// Independent locks, so calls on different sessions rarely wait for each other.
const SHARDS: usize = 16;

/// The start of a sealed value, which holds its random nonce: unique to one seal.
type Key = [u8; seal::UNIQUE_PREFIX_LEN];

struct Entry {
    sealed: Box<str>,
    ring: u64,
    /// Served from `from` (when it was opened) until before `until`.
    from: u64,
    until: u64,
    credential: Credential,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.from <= now && now < self.until
    }
}

/// Opened sessions, at most `capacity` of them; a capacity of 0 disables the cache.
/// An entry holds the sealed value and the `Authorization` value: about twice the session
/// cookie's size (8 KB for a 3 KB access token); a DPoP proof key adds about 400 bytes.
pub struct SessionCache {
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
    per_shard: usize,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl SessionCache {
    pub fn new(capacity: usize) -> Self {
        let shards = capacity.min(SHARDS);
        Self {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.checked_div(shards).unwrap_or(0),
        }
    }

    /// The credential for the sealed value made of the chunks `sealed`, if it was opened
    /// under `ring` and needs nothing but forwarding at `now`.
    pub fn get(&self, ring: u64, sealed: &[&str], now: u64) -> Option<Credential> {
        let (key, shard) = self.locate(sealed)?;
        let map = lock(shard);
        let entry = map.get(&key)?;
        // `live` also refuses a clock that went back past the opening: opening again could
        // then find the session's timestamps in the future.
        (entry.ring == ring && entry.live(now) && constant_time_eq(&entry.sealed, sealed))
            .then(|| entry.credential.clone())
    }

    /// Remembers that the sealed value made of the chunks `sealed` opened under `ring` to a
    /// session that needs nothing but forwarding with `credential` until `until` (at most
    /// `TTL` from `now`).
    pub fn insert(
        &self,
        ring: u64,
        sealed: &[&str],
        now: u64,
        until: u64,
        credential: impl Into<Credential>,
    ) {
        let until = until.min(now.saturating_add(TTL));
        if until <= now {
            return;
        }
        let Some((key, shard)) = self.locate(sealed) else {
            return;
        };
        let mut map = lock(shard);
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            // Full: drop a dead entry among the first few, else the first one. The map's
            // iteration order is randomly seeded, so which one is arbitrary; the sweep drops
            // the rest of the dead ones. Constant work under the lock, whatever the size.
            let victim = map
                .iter()
                .take(8)
                .find(|(_, e)| !e.live(now))
                .or_else(|| map.iter().next())
                .map(|(k, _)| *k);
            if let Some(victim) = victim {
                map.remove(&victim);
            }
        }
        map.insert(
            key,
            Entry {
                sealed: sealed.concat().into_boxed_str(),
                ring,
                from: now,
                until,
                credential: credential.into(),
            },
        );
    }

    /// Drops every entry that can no longer be served at `now`.
    pub fn sweep(&self, now: u64) {
        for shard in &self.shards {
            let mut map = lock(shard);
            map.retain(|_, e| e.live(now));
        }
    }

    /// Drops every entry (the key ring changed).
    pub fn clear(&self) {
        for shard in &self.shards {
            lock(shard).clear();
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key and shard of a sealed value, from the start of its first chunk (which always
    /// holds the whole unique prefix: chunks hold kilobytes).
    fn locate(&self, sealed: &[&str]) -> Option<(Key, &Mutex<HashMap<Key, Entry>>)> {
        let key: Key = sealed
            .first()?
            .as_bytes()
            .get(..seal::UNIQUE_PREFIX_LEN)?
            .try_into()
            .ok()?;
        let last = usize::from(*key.last()?);
        let shard = self.shards.get(last.checked_rem(self.shards.len())?)?;
        Some((key, shard))
    }
}

/// A shard's map. A panic while it was held cannot leave it half-updated (every change is
/// one map operation), so a poisoned lock is simply taken over.
fn lock(shard: &Mutex<HashMap<Key, Entry>>) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
    crate::sync::lock(shard)
}

/// Whether `whole` is the concatenation of `parts`, in time that depends on the lengths
/// only, never on where they differ.
fn constant_time_eq(whole: &str, parts: &[&str]) -> bool {
    if parts.iter().map(|p| p.len()).sum::<usize>() != whole.len() {
        return false;
    }
    let mut rest = whole.as_bytes();
    let mut diff = 0u8;
    for part in parts {
        let Some((head, tail)) = rest.split_at_checked(part.len()) else {
            return false;
        };
        // No early exit: a plain fold, which compilers turn into wide XOR/OR.
        diff |= head
            .iter()
            .zip(part.as_bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        rest = tail;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn value(nonce: char, body: &str) -> String {
        format!(
            "{}{body}",
            nonce.to_string().repeat(seal::UNIQUE_PREFIX_LEN)
        )
    }

    /// `v` as a request carries it in two chunks.
    fn two(v: &str) -> [&str; 2] {
        v.split_at(seal::UNIQUE_PREFIX_LEN + 3).into()
    }

    fn bearer(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn serves_only_the_same_value_under_the_same_ring_until_its_time() {
        let c = SessionCache::new(64);
        let v = value('a', "ciphertext-and-tag");
        c.insert(1, &two(&v), NOW, NOW + 30, bearer("Bearer t1"));
        assert_eq!(c.get(1, &two(&v), NOW).unwrap().authorization, "Bearer t1");
        assert_eq!(
            c.get(1, &[&v], NOW + 29).unwrap().authorization,
            "Bearer t1",
            "same value"
        );
        assert!(c.get(1, &two(&v), NOW + 30).is_none(), "past until");
        assert!(c.get(2, &two(&v), NOW).is_none(), "another ring");
        let tampered = value('a', "ciphertext-and-tah");
        assert!(
            c.get(1, &two(&tampered), NOW).is_none(),
            "same nonce, other bytes"
        );
        assert!(
            c.get(1, &two(&value('a', "ciphertext-and-ta")), NOW)
                .is_none()
        );
        assert!(
            c.get(1, &two(&value('b', "ciphertext-and-tag")), NOW)
                .is_none()
        );
        let (head, tail) = v.split_at(seal::UNIQUE_PREFIX_LEN + 3);
        let extra = format!("{tail}x");
        assert!(c.get(1, &[head, &extra], NOW).is_none(), "a longer value");
        assert!(c.get(1, &[head], NOW).is_none(), "a chunk left out");
        assert!(c.get(1, &["short"], NOW).is_none());
        assert!(c.get(1, &[], NOW).is_none());
        assert_eq!(
            c.get(1, &two(&v), NOW).unwrap().authorization,
            "Bearer t1",
            "a miss evicts nothing"
        );
    }

    #[test]
    fn entries_live_at_most_the_ttl() {
        let c = SessionCache::new(64);
        let v = value('a', "x");
        c.insert(1, &[&v], NOW, u64::MAX, bearer("Bearer t"));
        assert!(c.get(1, &[&v], NOW + TTL - 1).is_some());
        assert!(c.get(1, &[&v], NOW + TTL).is_none());
        assert!(c.get(1, &[&v], NOW - 1).is_none(), "the clock went back");
        let w = value('b', "x");
        c.insert(1, &[&w], NOW, NOW, bearer("Bearer t"));
        assert!(
            c.get(1, &[&w], NOW).is_none(),
            "nothing already due is kept"
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn clear_and_sweep_drop_entries() {
        let c = SessionCache::new(64);
        for (i, n) in ['a', 'b', 'c'].into_iter().enumerate() {
            let until = NOW + 10 * (i as u64 + 1);
            c.insert(1, &[&value(n, "x")], NOW, until, bearer("Bearer t"));
        }
        assert_eq!(c.len(), 3);
        c.sweep(NOW + 15);
        assert_eq!(c.len(), 2);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn a_dpop_entry_hands_out_its_one_proof_key() {
        use base64::Engine;
        let c = SessionCache::new(64);
        let v = value('a', "x");
        let seed = crate::secret::SecretString::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]),
        );
        let token = crate::secret::SecretString::from("at");
        let cred = Credential::of(&token, Some(&seed)).unwrap();
        c.insert(1, &[&v], NOW, NOW + 10, cred);
        let (a, b) = (c.get(1, &[&v], NOW).unwrap(), c.get(1, &[&v], NOW).unwrap());
        assert_eq!(a.authorization, "DPoP at");
        let (ka, kb) = (a.proof.unwrap(), b.proof.unwrap());
        assert!(
            std::sync::Arc::ptr_eq(&ka, &kb),
            "made once when the cookie was opened, not per call"
        );
    }

    #[test]
    fn zero_capacity_disables() {
        let c = SessionCache::new(0);
        let v = value('a', "x");
        c.insert(1, &[&v], NOW, NOW + 10, bearer("Bearer t"));
        assert!(c.get(1, &[&v], NOW).is_none());
        assert!(c.is_empty());
    }

    proptest! {
        #[test]
        fn never_holds_more_than_its_capacity(capacity in 1usize..100, n in 0usize..400) {
            let c = SessionCache::new(capacity);
            for i in 0..n {
                let v = format!("{i:0width$}", width = seal::UNIQUE_PREFIX_LEN + 4);
                c.insert(1, &[&v], NOW, NOW + 10, bearer("Bearer t"));
                prop_assert!(c.get(1, &[&v], NOW).is_some(), "the newest entry is always served");
            }
            prop_assert!(c.len() <= capacity);
        }

        #[test]
        fn constant_time_eq_is_concatenation_eq(whole in "[a-c]{0,40}", parts in proptest::collection::vec("[a-c]{0,10}", 0..5)) {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            prop_assert_eq!(constant_time_eq(&whole, &refs), whole == parts.concat());
            prop_assert!(constant_time_eq(&parts.concat(), &refs));
        }
    }
}
