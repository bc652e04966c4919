//! The fleet-wide single flight of refresh grants: with `[store]`, one grant per refresh
//! token across every instance, not one per instance (`refresh` keeps it to one per
//! instance, and runs `run` as its grant, so an instance sends one waiter per token here).
//!
//! Why: providers rotate refresh tokens and revoke the whole grant when a rotated-away one
//! comes back (OAuth 2.0 Security BCP, RFC 9700 §4.14.2). A browser whose calls a load
//! balancer spreads over three instances made three grants with one token, and was logged
//! out.
//!
//! How, for one refresh token (its flight key is SHA-256 of the token):
//!
//! 1. an outcome in the store: another instance's grant answered; use it;
//! 2. else take the lock (`SET NX PX`, `Timing::lock_ttl`). Got it: look for an outcome
//!    AGAIN (a winner may have stored it and released the lock between 1 and 2, and
//!    granting now would replay the token it rotated away), then send the grant, renewing
//!    the lock every third of its lifetime while the grant runs; store the outcome for the
//!    grace window and release the lock (in that order: whoever finds the lock free finds
//!    the outcome);
//! 3. the lock is held: poll 1 and 2 every `Timing::poll` (jittered) until an outcome
//!    appears, or the lock is free (its holder finished without sharing, or died), up to
//!    `Timing::wait`; past it, a transient failure (the session stays).
//!
//! New tokens and a dead token (`invalid_grant`) are shared, and so is a 200 that gave
//! nothing usable (`RefreshFailure::spent`: the token may be rotated away). Other
//! failures are not: the next instance takes the lock and tries, one at a time.
//!
//! The outcome is sealed (`seal`) under the ring's primary key, for the purpose
//! `flight:<key>`, so the store holds no token in plaintext and a record cannot be moved to
//! another refresh token. A record that does not open (garbage, another ring, another
//! key) counts as absent: someone with write access to the store can delay refreshes,
//! never inject tokens. Any store error: this instance sends the grant alone, as without a
//! store (one warn line); a store never costs a session.

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::keys::KeyRing;
use crate::oidc::{RefreshError, RefreshFailure, RefreshedTokens};
use crate::refresh::{self, GRACE, Granted, Key, Source};
use crate::secret::SecretString;
use crate::store::{Lock, Store, StoreError};

/// The five operations of the store the fleet's single flight needs (`Store` in
/// production; an in-memory one in the tests).
pub trait Shared: Send + Sync {
    /// Takes the lock of `key` for `ttl`; `None` when another holds it.
    fn lock(
        &self,
        key: Key,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Lock>, StoreError>> + Send;
    /// Extends a held lock; `false` when it was lost.
    fn renew(
        &self,
        lock: &Lock,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Releases a held lock, if still ours.
    fn unlock(&self, lock: Lock) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Stores a sealed outcome for `ttl`.
    fn put_outcome(
        &self,
        key: Key,
        sealed: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The sealed outcome stored for `key`, if any.
    fn outcome(&self, key: Key) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}

impl Shared for Store {
    async fn lock(&self, key: Key, ttl: Duration) -> Result<Option<Lock>, StoreError> {
        Store::lock(self, key, ttl).await
    }
    async fn renew(&self, lock: &Lock, ttl: Duration) -> Result<bool, StoreError> {
        Store::renew(self, lock, ttl).await
    }
    async fn unlock(&self, lock: Lock) -> Result<(), StoreError> {
        Store::unlock(self, lock).await
    }
    async fn put_outcome(&self, key: Key, sealed: &str, ttl: Duration) -> Result<(), StoreError> {
        Store::put_outcome(self, key, sealed, ttl).await
    }
    async fn outcome(&self, key: Key) -> Result<Option<String>, StoreError> {
        Store::outcome(self, key).await
    }
}

/// How long the lock lives, how often a waiter looks, how long it waits.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The lock's lifetime, renewed every third of it while the grant runs: a holder that
    /// dies frees the token within this.
    pub lock_ttl: Duration,
    /// A waiter's period (stretched by 0-50 % at random, so waiters do not poll together).
    pub poll: Duration,
    /// How long a waiter waits for the holder: above the provider timeout (10 s), so a
    /// grant that runs to its timeout still answers every waiter.
    pub wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lock_ttl: Duration::from_secs(5),
            poll: Duration::from_millis(40),
            wait: Duration::from_secs(13),
        }
    }
}

/// Runs `grant` for `refresh_token` at most once across the fleet that shares `store`
/// (see the module); `ring` seals and opens the shared outcomes.
pub async fn run<S, F, Fut>(
    store: &S,
    ring: &KeyRing,
    refresh_token: &SecretString,
    timing: Timing,
    grant: F,
) -> Granted
where
    S: Shared,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<RefreshedTokens, RefreshError>>,
{
    let key = refresh::key(refresh_token);
    let purpose = purpose(&key);
    let deadline = Instant::now() + timing.wait;
    loop {
        match store.outcome(key).await {
            Ok(Some(sealed)) => {
                if let Some(result) = open(ring, &purpose, &sealed) {
                    return fleet(result);
                }
            }
            Ok(None) => {}
            Err(e) => return fallback(e, grant).await,
        }
        match store.lock(key, timing.lock_ttl).await {
            Ok(Some(lock)) => return lead(store, ring, &purpose, lock, timing, grant).await,
            Ok(None) => {}
            Err(e) => return fallback(e, grant).await,
        }
        if Instant::now() >= deadline {
            return fleet(Err(RefreshError {
                class: RefreshFailure::Timeout,
                detail: "another instance's refresh did not answer in time".into(),
            }));
        }
        tokio::time::sleep(jittered(timing.poll)).await;
    }
}

/// Holding the lock: the outcome once more, else the grant, shared.
async fn lead<S, F, Fut>(
    store: &S,
    ring: &KeyRing,
    purpose: &str,
    lock: Lock,
    timing: Timing,
    grant: F,
) -> Granted
where
    S: Shared,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<RefreshedTokens, RefreshError>>,
{
    let key = lock.key;
    match store.outcome(key).await {
        Ok(Some(sealed)) => {
            if let Some(result) = open(ring, purpose, &sealed) {
                release(store, lock).await;
                return fleet(result);
            }
        }
        Ok(None) => {}
        Err(e) => {
            release(store, lock).await;
            return fallback(e, grant).await;
        }
    }
    let result = renewing(store, &lock, timing.lock_ttl, grant()).await;
    if let Some(record) = Record::of(&result) {
        match seal_record(ring, purpose, &record) {
            Some(sealed) => {
                if let Err(e) = store.put_outcome(key, &sealed, GRACE).await {
                    tracing::warn!(error = %e, "refresh outcome not shared: another instance may replay the refresh token");
                }
            }
            None => tracing::warn!("refresh outcome could not be sealed: not shared"),
        }
    }
    release(store, lock).await;
    Granted {
        result,
        source: Source::Grant,
    }
}

/// Awaits `grant`, renewing `lock` every third of `ttl` meanwhile. A lost lock (the store
/// restarted, or a renewal came late) does not cancel the grant: it is sent already.
async fn renewing<S, Fut>(store: &S, lock: &Lock, ttl: Duration, grant: Fut) -> Fut::Output
where
    S: Shared,
    Fut: Future,
{
    let mut grant = std::pin::pin!(grant);
    let mut every = tokio::time::interval_at(Instant::now() + ttl / 3, ttl / 3);
    loop {
        tokio::select! {
            result = &mut grant => return result,
            _ = every.tick() => match store.renew(lock, ttl).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!("refresh lock lost while the grant runs"),
                Err(e) => tracing::debug!(error = %e, "refresh lock not renewed"),
            },
        }
    }
}

async fn release<S: Shared>(store: &S, lock: Lock) {
    if let Err(e) = store.unlock(lock).await {
        // It expires on its own within `lock_ttl`.
        tracing::debug!(error = %e, "refresh lock not released");
    }
}

/// Without the store: this instance's grant, as if there were none.
async fn fallback<F, Fut>(e: StoreError, grant: F) -> Granted
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<RefreshedTokens, RefreshError>>,
{
    tracing::warn!(error = %e, "store unavailable: refreshing without the fleet's single flight");
    Granted {
        result: grant().await,
        source: Source::Fallback,
    }
}

fn fleet(result: Result<RefreshedTokens, RefreshError>) -> Granted {
    Granted {
        result,
        source: Source::Fleet,
    }
}

/// The seal purpose of a flight's outcome: bound to its key, so a record stored for one
/// refresh token never opens as another's.
fn purpose(key: &Key) -> String {
    format!("flight:{}", URL_SAFE_NO_PAD.encode(key))
}

/// A shared outcome, as sealed: `{"a": access, "e": expires_at, "r": refresh}`,
/// `{"dead": true}` or `{"spent": class}`.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<SecretString>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dead: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spent: Option<String>,
}

impl Record {
    /// What of a grant's result the fleet shares: `None` for a failure that left the
    /// refresh token usable (the next instance may try it).
    fn of(result: &Result<RefreshedTokens, RefreshError>) -> Option<Record> {
        let empty = Record {
            a: None,
            e: None,
            r: None,
            dead: false,
            spent: None,
        };
        match result {
            Ok(t) => Some(Record {
                a: Some(t.access_token.clone()),
                e: t.access_expires_at,
                r: t.refresh_token.clone(),
                ..empty
            }),
            Err(e) if e.class.is_fatal() => Some(Record {
                dead: true,
                ..empty
            }),
            Err(e) if e.class.spent() => Some(Record {
                spent: Some(e.class.as_str().to_owned()),
                ..empty
            }),
            Err(_) => None,
        }
    }

    fn into_result(self) -> Option<Result<RefreshedTokens, RefreshError>> {
        let shared = |class| {
            Err(RefreshError {
                class,
                detail: "another instance's refresh".into(),
            })
        };
        if self.dead {
            return Some(shared(RefreshFailure::InvalidGrant));
        }
        if let Some(spent) = self.spent {
            return RefreshFailure::ALL
                .into_iter()
                .find(|c| c.spent() && c.as_str() == spent)
                .map(shared);
        }
        Some(Ok(RefreshedTokens {
            access_token: self.a?,
            access_expires_at: self.e,
            refresh_token: self.r,
        }))
    }
}

fn seal_record(ring: &KeyRing, purpose: &str, record: &Record) -> Option<String> {
    let json = Zeroizing::new(serde_json::to_vec(record).ok()?);
    let expires_at = crate::clock::now_secs().saturating_add(GRACE.as_secs());
    crate::seal::seal(ring, purpose, expires_at, &json).ok()
}

/// The outcome `sealed` holds, or `None` when it does not open here (treated as absent).
fn open(
    ring: &KeyRing,
    purpose: &str,
    sealed: &str,
) -> Option<Result<RefreshedTokens, RefreshError>> {
    let opened = match crate::seal::open(ring, purpose, crate::clock::now_secs(), sealed) {
        Ok(opened) => opened,
        Err(e) => {
            tracing::debug!(reason = e.as_str(), "shared refresh outcome ignored");
            return None;
        }
    };
    let result = serde_json::from_slice::<Record>(opened.payload())
        .ok()
        .and_then(Record::into_result);
    if result.is_none() {
        tracing::debug!("shared refresh outcome ignored: not a record");
    }
    result
}

/// `period` stretched by 0-50 % at random.
fn jittered(period: Duration) -> Duration {
    // A random generator that fails only costs the jitter.
    let jitter = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
    period.mul_f64(1.0 + jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use crate::keys::MasterKey;
    use crate::refresh::{Outcome, Refresher, Role};

    /// One store shared by the "instances" of a test, with Redis' semantics for what the
    /// flight uses: `SET NX PX` locks with an owner token, values with a TTL.
    #[derive(Default)]
    struct Memory {
        state: Mutex<State>,
        /// Every call fails, as an unreachable store does.
        down: AtomicBool,
        /// Stored (as a winner that just finished would) when the next lock is taken.
        sneak: Mutex<Option<String>>,
        /// The operations called, in order.
        calls: Mutex<Vec<&'static str>>,
    }

    #[derive(Default)]
    struct State {
        locks: HashMap<Key, (String, Instant)>,
        outcomes: HashMap<Key, (String, Instant)>,
        next: u64,
    }

    impl Memory {
        fn up(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
            self.calls.lock().unwrap().push(op);
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("test: down".into()));
            }
            Ok(self.state.lock().unwrap())
        }

        /// Holds `key`'s lock for `ttl` as another instance would.
        fn hold(&self, key: Key, ttl: Duration) {
            let mut s = self.state.lock().unwrap();
            s.locks
                .insert(key, ("elsewhere".into(), Instant::now() + ttl));
        }

        fn stored(&self, key: Key) -> Option<String> {
            let s = self.state.lock().unwrap();
            s.outcomes.get(&key).map(|(v, _)| v.clone())
        }

        fn put(&self, key: Key, value: String) {
            let mut s = self.state.lock().unwrap();
            s.outcomes.insert(key, (value, Instant::now() + GRACE));
        }
    }

    impl Shared for Memory {
        async fn lock(&self, key: Key, ttl: Duration) -> Result<Option<Lock>, StoreError> {
            let sneak = self.sneak.lock().unwrap().take();
            let mut s = self.up("lock")?;
            let now = Instant::now();
            if let Some(sealed) = sneak {
                s.outcomes.insert(key, (sealed, now + GRACE));
            }
            if s.locks.get(&key).is_some_and(|(_, until)| *until > now) {
                return Ok(None);
            }
            s.next += 1;
            let token = format!("owner-{}", s.next);
            s.locks.insert(key, (token.clone(), now + ttl));
            Ok(Some(Lock { key, token }))
        }
        async fn renew(&self, lock: &Lock, ttl: Duration) -> Result<bool, StoreError> {
            let mut s = self.up("renew")?;
            let now = Instant::now();
            match s.locks.get_mut(&lock.key) {
                Some((owner, until)) if *owner == lock.token && *until > now => {
                    *until = now + ttl;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        async fn unlock(&self, lock: Lock) -> Result<(), StoreError> {
            let mut s = self.up("unlock")?;
            if s.locks
                .get(&lock.key)
                .is_some_and(|(o, _)| *o == lock.token)
            {
                s.locks.remove(&lock.key);
            }
            Ok(())
        }
        async fn put_outcome(
            &self,
            key: Key,
            sealed: &str,
            ttl: Duration,
        ) -> Result<(), StoreError> {
            let mut s = self.up("put_outcome")?;
            s.outcomes
                .insert(key, (sealed.to_owned(), Instant::now() + ttl));
            Ok(())
        }
        async fn outcome(&self, key: Key) -> Result<Option<String>, StoreError> {
            let s = self.up("outcome")?;
            Ok(s.outcomes
                .get(&key)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(v, _)| v.clone()))
        }
    }

    fn ring(kid: &str) -> Arc<KeyRing> {
        let key = MasterKey::generate().unwrap();
        Arc::new(KeyRing::new(vec![(kid.to_owned(), key)], kid, "test").unwrap())
    }

    const FAST: Timing = Timing {
        lock_ttl: Duration::from_millis(300),
        poll: Duration::from_millis(10),
        wait: Duration::from_secs(3),
    };

    /// Counts grants, and the most that ran at once.
    #[derive(Default)]
    struct Provider {
        calls: AtomicUsize,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl Provider {
        /// A grant that takes `ms` and answers `answer(n)`, n counting the grants from 0.
        async fn grant(
            &self,
            ms: u64,
            answer: impl FnOnce(usize) -> Result<RefreshedTokens, RefreshError>,
        ) -> Result<RefreshedTokens, RefreshError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            answer(n)
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn tokens(n: usize) -> Result<RefreshedTokens, RefreshError> {
        Ok(RefreshedTokens {
            access_token: SecretString::new(format!("at-{n}")),
            access_expires_at: Some(1_900_000_000),
            refresh_token: Some(SecretString::new(format!("rt-{n}"))),
        })
    }

    fn failed(class: RefreshFailure) -> Result<RefreshedTokens, RefreshError> {
        Err(RefreshError {
            class,
            detail: "test".into(),
        })
    }

    /// One sealgate instance: its own local single flight, the fleet's store and ring.
    #[derive(Clone)]
    struct Instance {
        local: Arc<Refresher>,
        store: Arc<Memory>,
        ring: Arc<KeyRing>,
        provider: Arc<Provider>,
    }

    impl Instance {
        fn fleet(n: usize, store: &Arc<Memory>, provider: &Arc<Provider>) -> Vec<Instance> {
            let ring = ring("k1");
            (0..n)
                .map(|_| Instance {
                    local: Arc::new(Refresher::default()),
                    store: store.clone(),
                    ring: ring.clone(),
                    provider: provider.clone(),
                })
                .collect()
        }

        /// A request's refresh of `rt`, as `App::refresh` drives it.
        async fn refresh(
            &self,
            rt: &SecretString,
            ms: u64,
            answer: fn(usize) -> Result<RefreshedTokens, RefreshError>,
        ) -> (Outcome, Role) {
            let this = self.clone();
            let token = rt.clone();
            self.local
                .refresh(rt, move || async move {
                    let grant = || this.provider.grant(ms, answer);
                    run(&*this.store, &this.ring, &token, FAST, grant).await
                })
                .await
        }
    }

    fn access(outcome: &Outcome) -> Option<(String, Option<String>)> {
        match outcome {
            Outcome::Refreshed(t) => Some((
                t.access_token.expose().to_owned(),
                t.refresh_token.as_ref().map(|r| r.expose().to_owned()),
            )),
            _ => None,
        }
    }

    #[tokio::test]
    async fn three_instances_and_sixty_requests_cause_one_grant() {
        let (store, provider) = (Arc::default(), Arc::default());
        let fleet = Instance::fleet(3, &store, &provider);
        let rt = SecretString::from("old-refresh-token");
        let mut tasks = Vec::new();
        for i in 0..60 {
            let (instance, rt) = (fleet[i % 3].clone(), rt.clone());
            tasks.push(tokio::spawn(async move {
                instance.refresh(&rt, 100, tokens).await
            }));
        }
        let mut roles = Vec::new();
        for t in tasks {
            let (outcome, role) = t.await.unwrap();
            assert_eq!(
                access(&outcome),
                Some(("at-0".into(), Some("rt-0".into()))),
                "every request gets the one grant's tokens"
            );
            roles.push(role);
        }
        assert_eq!(provider.calls(), 1, "one grant in the fleet");
        let count = |r: Role| roles.iter().filter(|&&x| x == r).count();
        assert_eq!((count(Role::Leader), count(Role::Fleet)), (1, 2));
        assert_eq!(count(Role::Follower), 57);
    }

    #[tokio::test]
    async fn shares_the_outcome_before_releasing_the_lock() {
        let (store, provider) = (Arc::<Memory>::default(), Arc::default());
        let fleet = Instance::fleet(2, &store, &provider);
        let rt = SecretString::from("rt");
        fleet[0].refresh(&rt, 0, tokens).await;
        // Whoever finds the lock free must find the outcome: put, then unlock.
        let leader = ["outcome", "lock", "outcome", "put_outcome", "unlock"];
        assert_eq!(*store.calls.lock().unwrap(), leader);
        store.calls.lock().unwrap().clear();
        fleet[1].refresh(&rt, 0, |_| panic!("a replay")).await;
        assert_eq!(
            *store.calls.lock().unwrap(),
            ["outcome"],
            "a follower reads once"
        );
    }

    #[tokio::test]
    async fn later_request_on_another_instance_reuses_the_outcome() {
        let (store, provider) = (Arc::default(), Arc::default());
        let fleet = Instance::fleet(2, &store, &provider);
        let rt = SecretString::from("rt");
        let (first, role) = fleet[0].refresh(&rt, 0, tokens).await;
        assert_eq!(role, Role::Leader);
        let (again, role) = fleet[1].refresh(&rt, 0, |_| panic!("a replay")).await;
        assert_eq!(role, Role::Fleet);
        assert_eq!(access(&first), access(&again));
    }

    #[tokio::test]
    async fn a_dead_leader_lets_exactly_one_waiter_take_over() {
        let (store, provider) = (Arc::<Memory>::default(), Arc::default());
        let fleet = Instance::fleet(3, &store, &provider);
        let rt = SecretString::from("rt");
        // An instance took the lock and died: no outcome, no renewal.
        store.hold(refresh::key(&rt), Duration::from_millis(200));
        let mut tasks = Vec::new();
        for instance in fleet {
            let rt = rt.clone();
            tasks.push(tokio::spawn(async move {
                instance.refresh(&rt, 50, tokens).await
            }));
        }
        let mut roles = Vec::new();
        for t in tasks {
            let (outcome, role) = t.await.unwrap();
            assert_eq!(access(&outcome).map(|a| a.0).as_deref(), Some("at-0"));
            roles.push(role);
        }
        assert_eq!(provider.calls(), 1);
        assert_eq!(roles.iter().filter(|&&r| r == Role::Leader).count(), 1);
    }

    #[tokio::test]
    async fn keeps_the_lock_while_a_slow_grant_runs() {
        let (store, provider) = (Arc::default(), Arc::default());
        let fleet = Instance::fleet(2, &store, &provider);
        let rt = SecretString::from("rt");
        // The grant takes three lock lifetimes: only renewals keep the second instance out.
        let slow = FAST.lock_ttl.as_millis() as u64 * 3;
        let first = {
            let (i, rt) = (fleet[0].clone(), rt.clone());
            tokio::spawn(async move { i.refresh(&rt, slow, tokens).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (second, role) = fleet[1].refresh(&rt, 0, tokens).await;
        let (first, _) = first.await.unwrap();
        assert_eq!(provider.calls(), 1, "a second grant replayed the token");
        assert_eq!(role, Role::Fleet);
        assert_eq!(access(&first), access(&second));
    }

    #[tokio::test]
    async fn rechecks_for_an_outcome_after_taking_the_lock() {
        let (store, provider) = (Arc::<Memory>::default(), Arc::default());
        let fleet = Instance::fleet(2, &store, &provider);
        let rt = SecretString::from("rt");
        // Another instance finishes (stores its outcome, frees the lock) between this
        // instance's look for an outcome and its lock.
        let key = refresh::key(&rt);
        let record = Record::of(&tokens(7)).unwrap();
        let sealed = seal_record(&fleet[0].ring, &purpose(&key), &record).unwrap();
        *store.sneak.lock().unwrap() = Some(sealed);
        let (outcome, role) = fleet[0].refresh(&rt, 0, |_| panic!("a replay")).await;
        assert_eq!(access(&outcome).map(|a| a.0).as_deref(), Some("at-7"));
        assert_eq!(role, Role::Fleet);
        assert!(
            store.state.lock().unwrap().locks.is_empty(),
            "lock released"
        );
    }

    #[tokio::test]
    async fn shares_a_dead_token_as_dead() {
        let (store, provider) = (Arc::default(), Arc::default());
        let fleet = Instance::fleet(2, &store, &provider);
        let rt = SecretString::from("dead");
        let (o, _) = fleet[0]
            .refresh(&rt, 0, |_| failed(RefreshFailure::InvalidGrant))
            .await;
        assert!(matches!(o, Outcome::Fatal));
        let (o, role) = fleet[1].refresh(&rt, 0, |_| panic!("a replay")).await;
        assert!(matches!(o, Outcome::Fatal), "{o:?}");
        assert_eq!(role, Role::Fleet);
    }

    #[tokio::test]
    async fn shares_a_spent_token_as_spent() {
        let (store, provider) = (Arc::default(), Arc::default());
        let fleet = Instance::fleet(2, &store, &provider);
        let rt = SecretString::from("spent");
        fleet[0]
            .refresh(&rt, 0, |_| failed(RefreshFailure::Unparsable))
            .await;
        let (o, role) = fleet[1].refresh(&rt, 0, |_| panic!("a replay")).await;
        assert!(
            matches!(o, Outcome::Transient(RefreshFailure::Unparsable)),
            "{o:?}"
        );
        assert_eq!(role, Role::Fleet);
    }

    #[tokio::test]
    async fn does_not_share_a_transient_failure_and_retries_one_at_a_time() {
        let (store, provider) = (Arc::<Memory>::default(), Arc::<Provider>::default());
        let fleet = Instance::fleet(3, &store, &provider);
        let rt = SecretString::from("rt");
        let mut tasks = Vec::new();
        for instance in fleet {
            let rt = rt.clone();
            tasks.push(tokio::spawn(async move {
                instance
                    .refresh(&rt, 50, |_| failed(RefreshFailure::ServerError))
                    .await
            }));
        }
        for t in tasks {
            let (o, _) = t.await.unwrap();
            assert!(
                matches!(o, Outcome::Transient(RefreshFailure::ServerError)),
                "{o:?}"
            );
        }
        // Each instance tried itself (nothing shared), never two at once.
        assert_eq!(provider.calls(), 3);
        assert_eq!(provider.most.load(Ordering::SeqCst), 1);
        assert!(store.stored(refresh::key(&rt)).is_none());
    }

    #[tokio::test]
    async fn gives_up_waiting_with_a_transient_failure() {
        let (store, provider) = (Arc::<Memory>::default(), Arc::<Provider>::default());
        let fleet = Instance::fleet(1, &store, &provider);
        let rt = SecretString::from("rt");
        store.hold(refresh::key(&rt), Duration::from_secs(60));
        let timing = Timing {
            wait: Duration::from_millis(100),
            ..FAST
        };
        let i = &fleet[0];
        let granted = run(&*i.store, &i.ring, &rt, timing, || {
            i.provider.grant(0, tokens)
        })
        .await;
        assert!(
            matches!(&granted.result, Err(e) if e.class == RefreshFailure::Timeout),
            "{granted:?}"
        );
        assert_eq!(granted.source, Source::Fleet);
        assert_eq!(provider.calls(), 0);
    }

    #[tokio::test]
    async fn keeps_refreshing_when_the_store_is_down() {
        let (store, provider) = (Arc::<Memory>::default(), Arc::<Provider>::default());
        store.down.store(true, Ordering::SeqCst);
        let fleet = Instance::fleet(1, &store, &provider);
        let rt = SecretString::from("rt");
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (i, rt) = (fleet[0].clone(), rt.clone());
            tasks.push(tokio::spawn(
                async move { i.refresh(&rt, 50, tokens).await },
            ));
        }
        let mut fallbacks = 0;
        for t in tasks {
            let (o, role) = t.await.unwrap();
            assert_eq!(access(&o).map(|a| a.0).as_deref(), Some("at-0"));
            fallbacks += usize::from(role == Role::Fallback);
        }
        assert_eq!(provider.calls(), 1, "the local single flight still holds");
        assert_eq!(fallbacks, 1);
    }

    #[tokio::test]
    async fn refuses_records_that_do_not_open_here() {
        let store = Arc::<Memory>::default();
        let provider = Arc::<Provider>::default();
        let fleet = Instance::fleet(1, &store, &provider);
        let rt = SecretString::from("rt");
        let key = refresh::key(&rt);
        let forged = Record::of(&tokens(666)).unwrap();
        let moved = seal_record(
            &fleet[0].ring,
            &purpose(&refresh::key(&SecretString::from("other"))),
            &forged,
        )
        .unwrap();
        let other_ring = seal_record(&ring("k1"), &purpose(&key), &forged).unwrap();
        for bad in ["garbage".to_owned(), moved, other_ring] {
            store.state.lock().unwrap().outcomes.clear();
            store.put(key, bad);
            let i = &fleet[0];
            let n = provider.calls();
            let granted = run(&*i.store, &i.ring, &rt, FAST, || {
                i.provider.grant(0, tokens)
            })
            .await;
            let t = granted.result.unwrap();
            assert_eq!(t.access_token.expose(), format!("at-{n}"), "injected");
            assert_eq!(granted.source, Source::Grant);
        }
    }

    #[tokio::test]
    async fn stores_no_token_in_plaintext() {
        let (store, provider) = (Arc::<Memory>::default(), Arc::default());
        let fleet = Instance::fleet(1, &store, &provider);
        let rt = SecretString::from("the-refresh-token");
        fleet[0].refresh(&rt, 0, tokens).await;
        let s = store.state.lock().unwrap();
        let (key, (sealed, _)) = s.outcomes.iter().next().unwrap();
        assert_eq!(*key, refresh::key(&rt), "keyed by the token's SHA-256");
        for secret in ["at-0", "rt-0", "the-refresh-token"] {
            assert!(!sealed.contains(secret), "{secret} in the store");
        }
        let opened = crate::seal::open(&fleet[0].ring, &purpose(key), 0, sealed).unwrap();
        assert!(
            opened.expires_at <= crate::clock::now_secs() + GRACE.as_secs(),
            "sealed for the grace window only"
        );
    }
}
