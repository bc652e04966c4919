//! Refreshing an access token exactly once per refresh token on this instance, and not
//! hammering a provider that is failing.
//!
//! Providers rotate refresh tokens, and a rotated-away refresh token is dead: replaying it
//! (oidc-provider, Keycloak and others) revokes the whole grant and logs the user out. So:
//!
//! - **single flight**: concurrent requests carrying the same refresh token share one
//!   refresh grant; the grant runs in its own task, so a client that disconnects cannot
//!   cancel it half-way (which would make a waiter replay the token);
//! - **grace window**: for `GRACE` after it, requests that still carry the old cookie
//!   (the browser has not stored the new one yet) get the same result instead of
//!   replaying the dead token. A fatal answer (`invalid_grant`) is remembered as long, and
//!   so is a 200 that gave nothing usable (`RefreshFailure::spent`): the provider may have
//!   rotated the token, so sending it again this soon would be a replay;
//! - **backoff**: any other failure (the provider is down, refuses our client, answers
//!   nonsense) keeps the session and is shared for a jittered second or two
//!   (`backoff`), so a busy tab costs a failing provider at most one grant per second
//!   per refresh token, and a recovered one is used again within seconds;
//! - entries are keyed by SHA-256 of the refresh token, never the token itself, and
//!   `sweep` drops every entry whose window has passed (results holding live refresh
//!   tokens are never kept beyond `GRACE`).
//!
//! With `[store]`, the grant a flight runs is `flight::run`, which makes the single flight
//! fleet-wide; the grant then reports where its answer came from (`Granted::source`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::oidc::{RefreshError, RefreshFailure, RefreshedTokens};
use crate::secret::SecretString;

/// How long a refresh result is reused for requests still carrying the old cookie.
pub const GRACE: Duration = Duration::from_secs(60);
/// How long the first transient failure is shared; doubled for the next ones in a row, up
/// to `BACKOFF_MAX`, and stretched by a random 0-50 % so that sessions that failed together
/// do not retry together. Never below one second: at most one grant per second per token.
const BACKOFF: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a transient entry outlives its window, so that the next failure in a row
/// still finds the count (it holds no token).
const STREAK_MEMORY: Duration = Duration::from_secs(10);

/// The outcome every request of a flight sees.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// New tokens.
    Refreshed(Arc<RefreshedTokens>),
    /// The refresh token is dead: the session is over.
    Fatal,
    /// The provider failed, by class: keep the session, try again later.
    Transient(RefreshFailure),
}

/// A flight's key: SHA-256 of the refresh token.
pub type Key = [u8; 32];

/// Who answered a flight's grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This instance sent the grant (alone, or holding the fleet's lock).
    Grant,
    /// Another instance's grant, whose outcome the fleet's store held.
    Fleet,
    /// This instance sent the grant without the fleet's lock: the store failed.
    Fallback,
}

/// What a flight's grant brought, and from whom. A plain grant's result converts into it.
#[derive(Debug)]
pub struct Granted {
    pub result: Result<RefreshedTokens, RefreshError>,
    pub source: Source,
}

impl From<Result<RefreshedTokens, RefreshError>> for Granted {
    fn from(result: Result<RefreshedTokens, RefreshError>) -> Self {
        Granted {
            result,
            source: Source::Grant,
        }
    }
}

/// A flight's result, until when it is shared, and who answered it.
#[derive(Clone, Debug)]
struct Settled {
    outcome: Outcome,
    until: Instant,
    source: Source,
}

struct Slot {
    /// `None` while the grant runs; the result once it is known.
    state: watch::Receiver<Option<Settled>>,
    /// Transient failures of this refresh token in a row before this flight.
    streak: u32,
}

impl Slot {
    /// Whether the slot's result is known and may still be shared: `Some(true)`; known and
    /// past its window: `Some(false)`; still running: `None`. A grant task that ended
    /// without a result (it panicked) counts as past.
    fn live(&self, now: Instant) -> Option<bool> {
        match &*self.state.borrow() {
            Some(settled) => Some(now < settled.until),
            None if self.state.has_changed().is_err() => Some(false),
            None => None,
        }
    }

    /// Whether the sweep may drop it.
    fn expired(&self, now: Instant) -> bool {
        match &*self.state.borrow() {
            Some(Settled {
                outcome: Outcome::Transient(class),
                until,
                ..
            }) if !class.spent() => now >= *until + STREAK_MEMORY,
            Some(settled) => now >= settled.until,
            None => self.state.has_changed().is_err(),
        }
    }

    /// The failures in a row, this flight's included, when it failed transiently.
    fn failures(&self) -> u32 {
        match &*self.state.borrow() {
            Some(Settled {
                outcome: Outcome::Transient(_),
                ..
            }) => self.streak.saturating_add(1),
            _ => 0,
        }
    }
}

/// The flights and recent results of this instance.
#[derive(Default)]
pub struct Refresher {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher").finish_non_exhaustive()
    }
}

/// Whether this request started the grant or joined someone else's (or a remembered one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Started this instance's flight, and its grant went to the provider.
    Leader,
    /// Joined this instance's flight, or reused its remembered result.
    Follower,
    /// Started this instance's flight, which took another instance's outcome.
    Fleet,
    /// Started this instance's flight, whose grant went to the provider without the
    /// fleet's lock (the store failed).
    Fallback,
}

impl Refresher {
    /// Refreshes `refresh_token` with `grant`, unless a flight for it is under way or its
    /// result is still shared (see the module), in which case that outcome is returned. The
    /// grant runs in its own task, started under the lock that registers it: no waiter,
    /// cancelled or not, can cause a second grant for the same token within the window.
    /// The leader's role says who answered its grant (`Granted::source`).
    pub async fn refresh<F, Fut>(&self, refresh_token: &SecretString, grant: F) -> (Outcome, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Into<Granted>,
    {
        let (mut rx, role) = self.join_or_start(key(refresh_token), grant);
        let (outcome, source) = match rx.wait_for(Option::is_some).await {
            Ok(settled) => settled.as_ref().map_or(
                (Outcome::Transient(RefreshFailure::Network), Source::Grant),
                |s| (s.outcome.clone(), s.source),
            ),
            // The task ended without an answer (it panicked): treat as transient.
            Err(_) => (Outcome::Transient(RefreshFailure::Network), Source::Grant),
        };
        let role = match (role, source) {
            (Role::Leader, Source::Fleet) => Role::Fleet,
            (Role::Leader, Source::Fallback) => Role::Fallback,
            (role, _) => role,
        };
        (outcome, role)
    }

    /// Marks the flight of `refresh_token` as failed: its tokens could not be used (too
    /// large for the cookies). Requests still carrying that refresh token get a transient
    /// `UnusableTokens` until its grace window ends, never a second grant with it.
    pub fn fail(&self, refresh_token: &SecretString) {
        let key = key(refresh_token);
        let mut slots = self.lock();
        let until = slots
            .get(&key)
            .and_then(|s| s.state.borrow().as_ref().map(|s| s.until))
            .unwrap_or_else(|| Instant::now() + GRACE);
        let (_, rx) = watch::channel(Some(Settled {
            outcome: Outcome::Transient(RefreshFailure::UnusableTokens),
            until,
            source: Source::Grant,
        }));
        slots.insert(
            key,
            Slot {
                state: rx,
                streak: 0,
            },
        );
    }

    /// Drops every entry whose window has passed. Called on a timer: nothing holding a
    /// refresh token outlives `GRACE` by more than the timer's period.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, s| !s.expired(now));
    }

    fn join_or_start<F, Fut>(&self, key: Key, grant: F) -> (watch::Receiver<Option<Settled>>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Into<Granted>,
    {
        let mut slots = self.lock();
        let now = Instant::now();
        let streak = match slots.get(&key) {
            Some(slot) if slot.live(now) != Some(false) => {
                return (slot.state.clone(), Role::Follower);
            }
            Some(slot) => slot.failures(),
            None => 0,
        };
        let (tx, rx) = watch::channel(None);
        let fut = grant();
        tokio::spawn(async move {
            let Granted { result, source } = fut.await.into();
            let outcome = match result {
                Ok(tokens) => Outcome::Refreshed(Arc::new(tokens)),
                Err(e) if e.class.is_fatal() => {
                    tracing::info!(class = e.class.as_str(), error = %e.detail, "refresh token refused");
                    Outcome::Fatal
                }
                Err(e) => {
                    tracing::warn!(class = e.class.as_str(), error = %e.detail, failures = streak + 1, "refresh failed; session kept");
                    Outcome::Transient(e.class)
                }
            };
            let window = match &outcome {
                Outcome::Transient(class) if !class.spent() => backoff(streak),
                _ => GRACE,
            };
            let _ = tx.send(Some(Settled {
                outcome,
                until: Instant::now() + window,
                source,
            }));
        });
        slots.insert(
            key,
            Slot {
                state: rx.clone(),
                streak,
            },
        );
        (rx, Role::Leader)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Slot>> {
        crate::sync::lock(&self.slots)
    }
}

/// The key of `refresh_token`'s flight, here and in the fleet's store.
pub fn key(refresh_token: &SecretString) -> Key {
    Sha256::digest(refresh_token.expose().as_bytes()).into()
}

/// How long the transient failure after `streak` others in a row is shared: `BACKOFF`
/// doubled per earlier failure, at most `BACKOFF_MAX`, plus 0-50 % at random.
fn backoff(streak: u32) -> Duration {
    let base = BACKOFF.saturating_mul(1 << streak.min(8)).min(BACKOFF_MAX);
    // A random generator that fails only costs the jitter.
    let jitter = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
    base.mul_f64(1.0 + jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tokens(n: usize) -> RefreshedTokens {
        RefreshedTokens {
            access_token: SecretString::new(format!("at-{n}")),
            access_expires_at: Some(1),
            refresh_token: Some(SecretString::new(format!("rt-{n}"))),
        }
    }

    fn failed(class: RefreshFailure) -> Result<RefreshedTokens, RefreshError> {
        Err(RefreshError {
            class,
            detail: "test".into(),
        })
    }

    async fn must_not_run() -> Result<RefreshedTokens, RefreshError> {
        panic!("no grant may be sent within the window")
    }

    /// Ends the window of `rt`'s result now, as if its time had passed.
    fn expire(r: &Refresher, rt: &SecretString) {
        let mut slots = r.lock();
        let slot = slots.get_mut(&key(rt)).unwrap();
        let settled = slot.state.borrow().clone().unwrap();
        let (_, rx) = watch::channel(Some(Settled {
            until: Instant::now(),
            ..settled
        }));
        slot.state = rx;
    }

    /// How long `rt`'s result is still shared.
    fn window(r: &Refresher, rt: &SecretString) -> Duration {
        let slots = r.lock();
        let until = slots[&key(rt)].state.borrow().as_ref().unwrap().until;
        until.saturating_duration_since(Instant::now())
    }

    #[tokio::test]
    async fn fifty_concurrent_requests_cause_one_grant() {
        let r = Arc::new(Refresher::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let rt = SecretString::from("old-refresh-token");
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (r, calls, rt) = (r.clone(), calls.clone(), rt.clone());
            tasks.push(tokio::spawn(async move {
                r.refresh(&rt, || {
                    let calls = calls.clone();
                    async move {
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(tokens(n))
                    }
                })
                .await
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (outcome, role) = t.await.unwrap();
            assert!(
                matches!(outcome, Outcome::Refreshed(ref t) if t.access_token.expose() == "at-0")
            );
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
    }

    #[tokio::test]
    async fn later_request_with_the_old_token_reuses_the_result() {
        let r = Refresher::default();
        let rt = SecretString::from("rt");
        let (first, _) = r.refresh(&rt, || async { Ok(tokens(1)) }).await;
        let (again, role) = r.refresh(&rt, must_not_run).await;
        assert_eq!(role, Role::Follower);
        match (first, again) {
            (Outcome::Refreshed(a), Outcome::Refreshed(b)) => assert!(Arc::ptr_eq(&a, &b)),
            other => panic!("{other:?}"),
        }
        assert!(window(&r, &rt) > GRACE - Duration::from_secs(1));
    }

    #[tokio::test]
    async fn refuses_a_second_grant_for_a_dead_token_within_the_window() {
        let r = Refresher::default();
        let dead = SecretString::from("dead");
        let (o, _) = r
            .refresh(&dead, || async { failed(RefreshFailure::InvalidGrant) })
            .await;
        assert!(matches!(o, Outcome::Fatal));
        let (o, role) = r.refresh(&dead, must_not_run).await;
        assert!(matches!(o, Outcome::Fatal) && role == Role::Follower);
    }

    #[tokio::test]
    async fn keeps_the_session_on_every_failure_but_invalid_grant() {
        for class in RefreshFailure::ALL {
            let r = Refresher::default();
            let rt = SecretString::from("rt");
            let (o, _) = r.refresh(&rt, || async move { failed(class) }).await;
            match o {
                Outcome::Fatal => assert_eq!(class, RefreshFailure::InvalidGrant),
                Outcome::Transient(c) => assert_eq!(c, class),
                Outcome::Refreshed(_) => panic!("{class:?}"),
            }
        }
    }

    #[tokio::test]
    async fn backs_off_a_failing_provider_then_tries_again() {
        let r = Refresher::default();
        let rt = SecretString::from("flaky");
        let (o, role) = r
            .refresh(&rt, || async {
                failed(RefreshFailure::TemporarilyUnavailable)
            })
            .await;
        assert!(matches!(
            o,
            Outcome::Transient(RefreshFailure::TemporarilyUnavailable)
        ));
        assert_eq!(role, Role::Leader);
        let w = window(&r, &rt);
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_millis(1500),
            "{w:?}"
        );
        // Within the window: the remembered failure, no grant.
        for _ in 0..20 {
            let (o, role) = r.refresh(&rt, must_not_run).await;
            assert!(matches!(
                o,
                Outcome::Transient(RefreshFailure::TemporarilyUnavailable)
            ));
            assert_eq!(role, Role::Follower);
        }
        // After it: a new grant; a second failure in a row waits longer.
        expire(&r, &rt);
        let (_, role) = r
            .refresh(&rt, || async { failed(RefreshFailure::Network) })
            .await;
        assert_eq!(role, Role::Leader);
        let w = window(&r, &rt);
        assert!(
            w > Duration::from_millis(1900) && w <= Duration::from_secs(3),
            "{w:?}"
        );
        // The provider is back: the next grant after the window succeeds.
        expire(&r, &rt);
        let (o, role) = r.refresh(&rt, || async { Ok(tokens(2)) }).await;
        assert!(matches!(o, Outcome::Refreshed(_)) && role == Role::Leader);
    }

    #[tokio::test]
    async fn refuses_to_replay_a_token_spent_on_an_unusable_answer() {
        let r = Refresher::default();
        let rt = SecretString::from("spent");
        let (o, _) = r
            .refresh(&rt, || async { failed(RefreshFailure::Unparsable) })
            .await;
        assert!(matches!(o, Outcome::Transient(RefreshFailure::Unparsable)));
        assert!(window(&r, &rt) > GRACE - Duration::from_secs(1));
        let (o, role) = r.refresh(&rt, must_not_run).await;
        assert!(matches!(o, Outcome::Transient(RefreshFailure::Unparsable)));
        assert_eq!(role, Role::Follower);
    }

    #[tokio::test]
    async fn refuses_to_replay_a_token_whose_new_tokens_did_not_fit() {
        let r = Refresher::default();
        let rt = SecretString::from("rt");
        let (o, _) = r.refresh(&rt, || async { Ok(tokens(1)) }).await;
        assert!(matches!(o, Outcome::Refreshed(_)));
        let before = window(&r, &rt);
        r.fail(&rt);
        let (o, role) = r.refresh(&rt, must_not_run).await;
        assert!(matches!(
            o,
            Outcome::Transient(RefreshFailure::UnusableTokens)
        ));
        assert_eq!(role, Role::Follower);
        assert!(
            window(&r, &rt) <= before,
            "not longer than the grace window"
        );
    }

    #[tokio::test]
    async fn sweep_keeps_nothing_past_its_window() {
        let r = Refresher::default();
        let (old, live) = (SecretString::from("old"), SecretString::from("live"));
        r.refresh(&old, || async { Ok(tokens(1)) }).await;
        r.refresh(&live, || async { Ok(tokens(2)) }).await;
        expire(&r, &old);
        r.sweep();
        let slots = r.lock();
        assert!(
            !slots.contains_key(&key(&old)),
            "a refresh token past GRACE"
        );
        assert!(slots.contains_key(&key(&live)));
    }

    #[test]
    fn backoff_is_between_one_and_three_seconds() {
        for streak in [0, 1, 2, 40, u32::MAX] {
            let b = backoff(streak);
            let base = if streak == 0 { BACKOFF } else { BACKOFF_MAX };
            assert!(b >= base && b <= base.mul_f64(1.5), "{streak}: {b:?}");
        }
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_cancel_the_grant() {
        let r = Arc::new(Refresher::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let rt = SecretString::from("rt");
        let grant = |calls: Arc<AtomicUsize>| {
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(tokens(0))
            }
        };
        let leader = {
            let (r, rt, g) = (r.clone(), rt.clone(), grant(calls.clone()));
            tokio::spawn(async move { r.refresh(&rt, g).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let (o, _) = r.refresh(&rt, grant(calls.clone())).await;
        assert!(matches!(o, Outcome::Refreshed(_)));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a cancelled waiter must not cause a second grant"
        );
    }

    #[tokio::test]
    async fn keys_are_hashes_not_tokens() {
        let r = Refresher::default();
        let rt = SecretString::from("secret-refresh-token");
        r.refresh(&rt, || async { Ok(tokens(1)) }).await;
        let slots = r.slots.lock().unwrap();
        let expected: Key = Sha256::digest(b"secret-refresh-token").into();
        assert!(slots.contains_key(&expected));
        assert_eq!(slots.len(), 1);
    }
}
