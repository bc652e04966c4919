//! `GET /bff/user`: the user's claims and the session's facts, never a token.
//!
//! A session without a refresh token (the provider issued none: no `offline_access`, or a
//! client without the `refresh_token` grant) ends when its access token does; the answer
//! says so (`refreshable`, `expires_at`), so the SPA can tell its user before it happens.

use http::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::clock::now_secs;
use crate::cookies::{ReadError, WriteError};
use crate::error::Error;
use crate::jar::{self, LoadedProfile};
use crate::reply::{self, Body};
use crate::session::{AccessState, Limits, Profile, Session};

/// Answers 200 with `{"sub", "claims", "session": {...}}`, or 401 `login_required`, with the
/// cookies cleared when the access token has expired and there is no refresh token (as an
/// API call would answer). Requires `X-CSRF: 1` (checked by the caller).
///
/// Both cookies leave under the primary key: the session and the profile are re-sealed
/// whenever either was sealed under another key, so that retiring that key later (in an
/// emergency, without waiting for sessions to end) cannot split them.
pub async fn get(app: &App, req: &Request<hyper::body::Incoming>) -> Result<Response<Body>, Error> {
    let jar = app.request_cookies(req);
    let ring = app.keys();
    let now = now_secs();
    let ctx = app.ctx(&jar, &ring, now);
    let mut loaded = app.load_session(&ctx)?;
    if loaded.session.access_state(&app.limits, now) == AccessState::Dead {
        tracing::info!("session ended: access token expired, no refresh token");
        return Err(Error::SessionEnded {
            reason: "access token expired, no refresh token",
            clear: app.cookies.clear_session(&jar),
        });
    }
    let (profile, reseal_profile) = match ctx.open_profile(&loaded.session) {
        Ok(LoadedProfile {
            profile,
            by_primary,
        }) => (profile, !by_primary),
        // The profile rides on `Path=/bff/` only: an SPA that called nothing but its API
        // after a promotion had its session re-sealed under the new primary and its
        // profile not, and the old key has since been retired. The session is authentic,
        // the profile only derived from it: rebuild it rather than end the session.
        Err(ReadError::UnknownKey) => {
            tracing::info!("profile cookie under a retired key; rebuilt from the session");
            (rebuild_profile(app, &loaded.session).await, true)
        }
        Err(ReadError::Missing | ReadError::Expired | ReadError::Invalid) => {
            return Err(Error::LoginRequired(jar::Rejected::Profile.as_str()));
        }
    };
    let mut set = Vec::new();
    if loaded.session.touch(&app.limits, now) || !loaded.by_primary {
        set = ctx
            .write_session(&loaded.session)
            .map_err(jar::write_failure)?;
    }
    if reseal_profile {
        set.extend(write_profile(&ctx, &loaded.session, &profile)?);
    }
    let s = &loaded.session;
    let body = json!({
        "sub": s.sub,
        "claims": profile.claims,
        "session": {
            "sid": s.sid,
            "created_at": s.created_at,
            "expires_at": ends_at(s, &app.limits),
            "refreshable": s.refresh_token.is_some(),
            "absolute_expires_at": s.created_at.saturating_add(app.limits.absolute),
            "logout_url": format!("/bff/logout?sid={}", s.id),
        },
    });
    let mut response = reply::json(StatusCode::OK, &body);
    reply::set_cookies(&mut response, set);
    Ok(response)
}

/// When `session` ends if unused: the earlier of its limits, and for a session that cannot
/// refresh, its access token's expiry (nothing renews it, RFC 6749 §1.5).
fn ends_at(session: &Session, limits: &Limits) -> u64 {
    let limit = session.expires_at(limits);
    match (&session.refresh_token, session.access_expires_at) {
        (None, Some(exp)) => limit.min(exp),
        _ => limit,
    }
}

/// A profile for `session` from what can still be had: the claims from the provider's
/// userinfo endpoint with the session's access token (OpenID Connect Core §5.3) when
/// discovery has finished and the provider has one, always `sub` and `sid` from the
/// session. The ID token is gone with the old cookie: logout then names the client
/// instead of hinting the token, as it does for a profile that had to shed it.
async fn rebuild_profile(app: &App, session: &Session) -> Profile {
    let mut claims = Map::new();
    // A DPoP-bound access token is refused at userinfo without a proof by the session's key.
    let key = session
        .dpop_key
        .as_ref()
        .and_then(|k| crate::oidc::proof_key(k).ok());
    if let Ok(provider) = app.provider_now()
        && let Ok(Some(userinfo)) = provider
            .userinfo(&session.access_token, &session.sub, key.as_ref())
            .await
    {
        // An answer for another subject is an error and is not used: then only sub and sid.
        claims = userinfo;
    }
    claims.insert("sub".to_owned(), Value::String(session.sub.clone()));
    if let Some(sid) = &session.sid {
        claims.insert("sid".to_owned(), Value::String(sid.clone()));
    }
    Profile {
        session_id: session.id.clone(),
        id_token: None,
        claims,
    }
}

/// The profile re-sealed under the primary; when its claims no longer fit the chunk cap
/// (userinfo grew), only `sub` and `sid` are kept, as at login.
fn write_profile(
    ctx: &jar::Ctx<'_>,
    session: &Session,
    profile: &Profile,
) -> Result<Vec<String>, Error> {
    let write = |p: &Profile| ctx.write_profile(session, p);
    match write(profile) {
        Err(WriteError::TooManyChunks { .. }) => {}
        other => return other.map_err(jar::write_failure),
    }
    let mut claims = profile.claims.clone();
    claims.retain(|k, _| k == "sub" || k == "sid");
    let small = Profile {
        session_id: profile.session_id.clone(),
        id_token: None,
        claims,
    };
    write(&small).map_err(jar::write_failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{LIMITS, T0};

    fn session(refresh_token: Option<&str>, access_expires_at: Option<u64>) -> Session {
        Session {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            access_token: "at".into(),
            access_expires_at,
            refresh_token: refresh_token.map(Into::into),
            sub: "alice".into(),
            sid: None,
            created_at: T0,
            last_seen: T0,
            dpop_key: None,
        }
    }

    #[test]
    fn ends_a_session_without_refresh_token_when_its_access_token_expires() {
        assert_eq!(ends_at(&session(None, Some(T0 + 300)), &LIMITS), T0 + 300);
        // An access token outliving the limits does not extend them.
        assert_eq!(ends_at(&session(None, Some(T0 + 7200)), &LIMITS), T0 + 3600);
        // No expiry said: only the limits are known.
        assert_eq!(ends_at(&session(None, None), &LIMITS), T0 + 3600);
    }

    #[test]
    fn keeps_the_limits_as_the_end_of_a_refreshable_session() {
        assert_eq!(
            ends_at(&session(Some("rt"), Some(T0 + 300)), &LIMITS),
            T0 + 3600
        );
    }
}
