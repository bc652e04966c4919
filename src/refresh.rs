//! Refreshing an access token exactly once per refresh token on this instance.
//!
//! Providers rotate refresh tokens, and a rotated-away refresh token is dead: replaying it
//! (oidc-provider, Keycloak and others) revokes the whole grant and logs the user out. So:
//!
//! - **single flight**: concurrent requests carrying the same refresh token share one
//!   refresh grant; the grant runs in its own task, so a client that disconnects cannot
//!   cancel it half-way (which would make a waiter replay the token);
//! - **grace window**: for `GRACE` after it, requests that still carry the old cookie
//!   (the browser has not stored the new one yet) get the same result instead of
//!   replaying the dead token;
//! - entries are keyed by SHA-256 of the refresh token, never the token itself.
//!
//! A fatal answer (`invalid_grant`) is remembered for the window too; a transient one
//! (provider unreachable) is not, so the next request tries again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::oidc::{OidcError, RefreshedTokens};
use crate::secret::SecretString;

/// How long a refresh result is reused for requests still carrying the old cookie.
pub const GRACE: Duration = Duration::from_secs(60);
/// Above this many remembered refreshes, expired ones are swept on insert.
const SWEEP_ABOVE: usize = 1024;

/// The outcome every request of a flight sees.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// New tokens.
    Refreshed(Arc<RefreshedTokens>),
    /// The refresh token is dead: the session is over.
    Fatal,
    /// The provider could not be reached: keep the session, try later.
    Transient,
}

type Key = [u8; 32];

struct Slot {
    /// `None` while the grant runs; the outcome once it is known.
    outcome: watch::Receiver<Option<Outcome>>,
    created: Instant,
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

/// Whether this request started the grant or joined someone else's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl Refresher {
    /// Refreshes `refresh_token` with `grant`, unless a flight for it is under way or
    /// finished within `GRACE`, in which case its outcome is shared. The grant runs in
    /// its own task, started under the lock that registers it: no waiter, cancelled or
    /// not, can cause a second grant for the same token within the window.
    pub async fn refresh<F, Fut>(&self, refresh_token: &SecretString, grant: F) -> (Outcome, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<RefreshedTokens, OidcError>> + Send + 'static,
    {
        let key: Key = Sha256::digest(refresh_token.expose().as_bytes()).into();
        let (mut rx, role) = self.join_or_start(key, grant);
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(o) => o.clone().unwrap_or(Outcome::Transient),
            // The task ended without an answer (it panicked): treat as transient.
            Err(_) => Outcome::Transient,
        };
        if matches!(outcome, Outcome::Transient) {
            self.forget(&key, &rx);
        }
        (outcome, role)
    }

    fn join_or_start<F, Fut>(&self, key: Key, grant: F) -> (watch::Receiver<Option<Outcome>>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<RefreshedTokens, OidcError>> + Send + 'static,
    {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if slots.len() > SWEEP_ABOVE {
            slots.retain(|_, s| now.duration_since(s.created) < GRACE);
        }
        if let Some(slot) = slots.get(&key)
            && now.duration_since(slot.created) < GRACE
        {
            return (slot.outcome.clone(), Role::Follower);
        }
        let (tx, rx) = watch::channel(None);
        let fut = grant();
        tokio::spawn(async move {
            let outcome = match fut.await {
                Ok(tokens) => Outcome::Refreshed(Arc::new(tokens)),
                Err(OidcError::Refused(_)) => Outcome::Fatal,
                // Unreachable, or an answer we cannot use: retrying may help, and ending
                // the session over a provider fault would be worse.
                Err(OidcError::Unavailable(_) | OidcError::Invalid(_)) => Outcome::Transient,
            };
            let _ = tx.send(Some(outcome));
        });
        slots.insert(
            key,
            Slot {
                outcome: rx.clone(),
                created: now,
            },
        );
        (rx, Role::Leader)
    }

    fn forget(&self, key: &Key, rx: &watch::Receiver<Option<Outcome>>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.get(key).is_some_and(|s| s.outcome.same_channel(rx)) {
            slots.remove(key);
        }
    }
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
        let (again, role) = r
            .refresh(&rt, || async {
                panic!("the dead token must not be replayed")
            })
            .await;
        assert_eq!(role, Role::Follower);
        match (first, again) {
            (Outcome::Refreshed(a), Outcome::Refreshed(b)) => assert!(Arc::ptr_eq(&a, &b)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn fatal_is_remembered_transient_is_retried() {
        let r = Refresher::default();
        let dead = SecretString::from("dead");
        let (o, _) = r
            .refresh(&dead, || async {
                Err(OidcError::Refused("invalid_grant".into()))
            })
            .await;
        assert!(matches!(o, Outcome::Fatal));
        let (o, role) = r.refresh(&dead, || async { Ok(tokens(9)) }).await;
        assert!(matches!(o, Outcome::Fatal) && role == Role::Follower);

        let flaky = SecretString::from("flaky");
        let (o, _) = r
            .refresh(&flaky, || async {
                Err(OidcError::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(o, Outcome::Transient));
        let (o, role) = r.refresh(&flaky, || async { Ok(tokens(2)) }).await;
        assert!(matches!(o, Outcome::Refreshed(_)) && role == Role::Leader);
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
