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
//! This file holds the API and the state in memory; `backend` the Redis connections, the
//! commands and the background task (`Store::run`).

mod backend;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::metrics::StoreMetrics;
use crate::revocations::{Record, Revocations};
use crate::{clock, sync};

/// Most revocations kept waiting for the store while it is down; past that the oldest is
/// dropped (it still applies on this instance).
const MAX_PENDING: usize = 10_000;
/// Most logout-token `jti`s remembered on this instance (about 50 bytes each).
const MAX_LOCAL_JTIS: usize = 100_000;

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, timed out, or an error answer: the caller falls back.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// `store.ca_file` cannot be read or holds no certificate (a configuration error).
    #[error("{0}")]
    CaFile(String),
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

/// Whether the store answered lately: logged on each change only, not per request.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The shared store's client and this instance's copy of the revocations.
pub struct Store {
    revocations: RwLock<Arc<Revocations>>,
    /// Bumped whenever a revocation is learned: the session cache is emptied on each.
    changes: watch::Sender<u64>,
    /// Revocations applied here that the store has not taken yet, oldest first.
    pending: Mutex<VecDeque<Record>>,
    /// `jti` digest -> expiry: replays on this instance are caught even without the store.
    jtis: Mutex<HashMap<[u8; 32], u64>>,
    state: AtomicU8,
    /// A full resync has succeeded at least once: this instance knows the fleet's
    /// revocations, not only those published since it started.
    synced: AtomicBool,
    metrics: StoreMetrics,
    /// `None`: no store configured (`Store::default`, for tests); every command fails.
    redis: Option<backend::Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Default for Store {
    /// A store with nothing behind it: revocations stay on this instance (queued), `jti`s
    /// are remembered here, the flight methods fail.
    fn default() -> Self {
        Store::with(None)
    }
}

impl Store {
    /// A client for the configured store. Connects in the background (`run`): an
    /// unreachable store at start-up is an outage like any other, not a failed start.
    /// Call it inside a tokio runtime (the client spawns its connection task).
    pub fn new(config: &crate::config::Store) -> Result<Store, StoreError> {
        Ok(Store::with(Some(backend::Backend::new(config)?)))
    }

    fn with(redis: Option<backend::Backend>) -> Store {
        Store {
            revocations: RwLock::new(Arc::new(Revocations::default())),
            changes: watch::Sender::new(0),
            pending: Mutex::new(VecDeque::new()),
            jtis: Mutex::new(HashMap::new()),
            state: AtomicU8::new(UNKNOWN),
            synced: AtomicBool::new(false),
            metrics: StoreMetrics::default(),
            redis,
        }
    }

    /// The store's metric handles, for `Metrics::register_store`.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

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
        self.learn([record.clone()], now);
        match self.write_record(&record).await {
            Ok(()) => Ok(Delivery::Written),
            Err(_) => {
                self.queue(record);
                Ok(Delivery::Queued)
            }
        }
    }

    /// Records that a logout token's `jti` was used, until `expires_at`: `true` the first
    /// time, `false` for a replay. Without the store, only this instance's memory decides.
    pub async fn first_use(&self, jti: &str, expires_at: u64) -> Result<bool, StoreError> {
        let digest: [u8; 32] = Sha256::digest(jti.as_bytes()).into();
        let now = clock::now_secs();
        if !self.remember_jti(digest, expires_at, now) {
            return Ok(false);
        }
        let Some(r) = &self.redis else {
            return Ok(true);
        };
        // EXAT in the past would be refused; a token that old was refused earlier anyway.
        let at = expires_at.max(now + 1);
        match self.ok("jti", r.first_use(&b64(&digest), at).await) {
            Ok(first) => Ok(first),
            Err(_) => Ok(true),
        }
    }

    /// Takes the refresh lock for `key` for `ttl`; `None` when another holds it.
    pub async fn lock(&self, key: [u8; 32], ttl: Duration) -> Result<Option<Lock>, StoreError> {
        let r = self.redis()?;
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let token = b64(&raw);
        let taken = self.ok("lock", r.lock(&b64(&key), &token, ttl).await)?;
        Ok(taken.then_some(Lock { key, token }))
    }

    /// Extends a held lock; `false` when it was lost.
    pub async fn renew(&self, lock: &Lock, ttl: Duration) -> Result<bool, StoreError> {
        let r = self.redis()?;
        self.ok("lock", r.renew(&b64(&lock.key), &lock.token, ttl).await)
    }

    /// Releases a held lock (only if still ours).
    pub async fn unlock(&self, lock: Lock) -> Result<(), StoreError> {
        let r = self.redis()?;
        self.ok("lock", r.unlock(&b64(&lock.key), &lock.token).await)
    }

    /// Stores a refresh outcome (already sealed by the caller) for `ttl`.
    pub async fn put_outcome(
        &self,
        key: [u8; 32],
        sealed: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.redis()?;
        self.ok("outcome", r.put_outcome(&b64(&key), sealed, ttl).await)
    }

    /// The refresh outcome stored for `key`, if any.
    pub async fn outcome(&self, key: [u8; 32]) -> Result<Option<String>, StoreError> {
        let r = self.redis()?;
        self.ok("outcome", r.outcome(&b64(&key)).await)
    }

    /// Writes and publishes `record` without applying it here or queueing it (`sealgate
    /// sessions revoke`: a command that cannot reach the store must say so).
    pub async fn publish(&self, record: &Record) -> Result<(), StoreError> {
        let r = self.redis()?;
        r.connect().await?;
        r.write_record(record).await
    }

    /// Whether the store answered the last command (for tests and logs; `/readyz` does
    /// not depend on it).
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Whether a full resync has succeeded since start (see `App::is_ready`).
    pub fn has_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn mark_synced(&self) {
        if !self.synced.swap(true, Ordering::AcqRel) {
            tracing::info!("revocations loaded from the store");
        }
    }

    /// How many revocations wait for the store.
    pub fn pending(&self) -> usize {
        sync::lock(&self.pending).len()
    }

    /// Keeps the revocations current for the life of the process: subscribes, writes what
    /// is pending and reads the whole set after every (re)subscribe and every `resync`,
    /// applies what is published in between, reconnects with backoff. Returns at once
    /// without a store.
    pub async fn run(self: Arc<Self>) {
        if let Some(r) = &self.redis {
            r.run(&self).await;
        }
    }

    fn redis(&self) -> Result<&backend::Backend, StoreError> {
        self.redis
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no store configured".into()))
    }

    /// Writes and publishes one record.
    async fn write_record(&self, record: &Record) -> Result<(), StoreError> {
        let r = self.redis()?;
        self.ok("revoke", r.write_record(record).await)
    }

    /// Counts and logs a failure of `op` (or notes that the store answered), and hands the
    /// result back.
    fn ok<T>(&self, op: &str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.mark_up(),
            Err(e) => {
                self.metrics.error(op);
                self.mark_down(op, e);
            }
        }
        result
    }

    fn mark_up(&self) {
        if self.state.swap(UP, Ordering::AcqRel) != UP {
            self.metrics.set_up(true);
            tracing::info!("store reachable");
        }
    }

    fn mark_down(&self, op: &str, e: &StoreError) {
        if self.state.swap(DOWN, Ordering::AcqRel) != DOWN {
            self.metrics.set_up(false);
            tracing::warn!(op, error = %e, "store unreachable: revocations stay in memory and are written when it is back, refresh runs on this instance alone");
        }
    }

    /// Applies records; bumps `changes` when any of them was new.
    fn learn(&self, records: impl IntoIterator<Item = Record>, now: u64) {
        let mut guard = sync::write(&self.revocations);
        let mut next = (**guard).clone();
        let mut learned = false;
        for record in records {
            learned |= next.insert(record, now);
        }
        next.prune(now);
        self.metrics.set_revocations(next.len());
        if learned || next.len() != guard.len() {
            *guard = Arc::new(next);
        }
        drop(guard);
        if learned {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn queue(&self, record: Record) {
        let mut pending = sync::lock(&self.pending);
        if pending.len() >= MAX_PENDING {
            pending.pop_front();
            tracing::warn!(
                max = MAX_PENDING,
                "store down too long: dropped the oldest queued revocation (it still applies on this instance)"
            );
        }
        pending.push_back(record);
        self.metrics.set_pending(pending.len());
    }

    /// The pending records, oldest first (a copy: they stay queued until written).
    fn pending_records(&self) -> Vec<Record> {
        sync::lock(&self.pending).iter().cloned().collect()
    }

    /// Drops the first `n` pending records: they were written.
    fn written(&self, n: usize) {
        let mut pending = sync::lock(&self.pending);
        let n = n.min(pending.len());
        pending.drain(..n);
        self.metrics.set_pending(pending.len());
    }

    /// `false` when `digest` was already seen here (and is not past).
    fn remember_jti(&self, digest: [u8; 32], expires_at: u64, now: u64) -> bool {
        let mut jtis = sync::lock(&self.jtis);
        if jtis.get(&digest).is_some_and(|exp| now < *exp) {
            return false;
        }
        if jtis.len() >= MAX_LOCAL_JTIS {
            jtis.retain(|_, exp| now < *exp);
        }
        if jtis.len() >= MAX_LOCAL_JTIS
            && let Some(oldest) = jtis.iter().min_by_key(|(_, exp)| **exp).map(|(d, _)| *d)
        {
            jtis.remove(&oldest);
        }
        jtis.insert(digest, expires_at);
        true
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    #[tokio::test]
    async fn without_a_store_revocations_queue_and_apply_here() {
        let s = Store::default();
        let mut changes = s.changes();
        let d = s.revoke(Record::sid("s1", T0 + 60), T0).await.unwrap();
        assert_eq!(d, Delivery::Queued);
        assert!(s.is_revoked("u", Some("s1"), T0 - 1, T0));
        assert!(changes.has_changed().unwrap());
        assert_eq!(s.pending(), 1);
        changes.mark_unchanged();
        s.revoke(Record::sid("s1", T0 + 60), T0).await.unwrap();
        assert!(!changes.has_changed().unwrap(), "nothing new learned");
    }

    #[tokio::test]
    async fn refuses_a_jti_replay_without_the_store() {
        let s = Store::default();
        let exp = clock::now_secs() + 120;
        assert!(s.first_use("j1", exp).await.unwrap());
        assert!(!s.first_use("j1", exp).await.unwrap());
        assert!(s.first_use("j2", exp).await.unwrap());
        assert!(s.lock([0; 32], Duration::from_secs(1)).await.is_err());
    }

    #[test]
    fn pending_queue_is_bounded_dropping_the_oldest() {
        let s = Store::default();
        for i in 0..MAX_PENDING + 2 {
            s.queue(Record::sid(&i.to_string(), T0));
        }
        assert_eq!(s.pending(), MAX_PENDING);
        assert_eq!(s.pending_records()[0], Record::sid("2", T0));
        s.written(3);
        assert_eq!(s.pending(), MAX_PENDING - 3);
    }
}
