//! The optional shared store (`[store]`, Redis): what a fleet of instances must agree on
//! and a cookie cannot carry. Revocations (back-channel logout, `sealgate sessions
//! revoke`), the `jti`s of logout tokens already used, and the fleet-wide single flight of
//! refresh grants (a lock per refresh token and the sealed outcome for the grace window).
//!
//! Holds no token in plaintext and no cookie: identifiers as digests (`revocations`),
//! refresh outcomes sealed under the ring's primary key by the caller, lock keys as
//! SHA-256 of the refresh token.
//!
//! A store that fails never loses a session: revocations are checked against the copy in
//! memory (kept current by pub/sub and a periodic full resync), a revocation that cannot
//! be written is applied here at once and written when the store is back, and refresh
//! falls back to this instance's single flight.
//!
//! SKELETON: the API the rest of the crate codes against; the Redis side is filled in by
//! the store work (see the brief).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::revocations::{Record, Revocations};
use crate::sync;

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, timed out, or an error answer: the caller falls back.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Where a revocation went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the store and published: every instance applies it.
    Written,
    /// The store is down: applied on this instance, written when the store is back.
    Queued,
}

/// A held lock of the fleet-wide single flight.
#[derive(Debug)]
pub struct Lock {
    pub key: [u8; 32],
    /// The random value that proves ownership (renew and release compare it).
    pub token: String,
}

/// The shared store's client and this instance's copy of the revocations.
pub struct Store {
    revocations: RwLock<Arc<Revocations>>,
    /// Bumped whenever a revocation is learned: the session cache is emptied on each.
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store {
            revocations: RwLock::new(Arc::new(Revocations::default())),
            changes: watch::Sender::new(0),
        }
    }
}

impl Store {
    /// Whether the session (`sub`, `sid`, login time) is revoked, from memory.
    pub fn is_revoked(&self, sub: &str, sid: Option<&str>, created_at: u64, now: u64) -> bool {
        let r = sync::read(&self.revocations).clone();
        !r.is_empty() && r.is_revoked(sub, sid, created_at, now)
    }

    /// Changes whenever a revocation is learned.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Applies `record` here and now, and writes and publishes it to the fleet.
    pub async fn revoke(&self, record: Record, now: u64) -> Result<Delivery, StoreError> {
        self.learn(record, now);
        Ok(Delivery::Queued)
    }

    /// Records that a logout token's `jti` was used, until `expires_at`: `true` the first
    /// time, `false` for a replay.
    pub async fn first_use(&self, _jti: &str, _expires_at: u64) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    /// Takes the refresh lock for `key` for `ttl`; `None` when another holds it.
    pub async fn lock(&self, _key: [u8; 32], _ttl: Duration) -> Result<Option<Lock>, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    /// Extends a held lock; `false` when it was lost.
    pub async fn renew(&self, _lock: &Lock, _ttl: Duration) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    /// Releases a held lock (only if still ours).
    pub async fn unlock(&self, _lock: Lock) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    /// Stores a refresh outcome (already sealed by the caller) for `ttl`.
    pub async fn put_outcome(
        &self,
        _key: [u8; 32],
        _sealed: &str,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    /// The refresh outcome stored for `key`, if any.
    pub async fn outcome(&self, _key: [u8; 32]) -> Result<Option<String>, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    fn learn(&self, record: Record, now: u64) {
        let mut guard = sync::write(&self.revocations);
        let mut next = (**guard).clone();
        if next.insert(record, now) {
            next.prune(now);
            *guard = Arc::new(next);
            drop(guard);
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}
