//! `POST /bff/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0. The provider
//! posts a signed logout token (§2.5, form field `logout_token`); once it is valid (see
//! `oidc::logout_token`) and its `jti` new, the session it names (`sid`), or every session
//! of its subject (`sub`) begun until now, is revoked through the store, which carries it
//! to every instance.
//!
//! No CSRF guard, unlike every other state-changing endpoint: the caller is the provider,
//! server to server, with no cookie and no browser; the token's signature is the proof of
//! who asks, and nothing here acts on the caller's ambient credentials.
//!
//! Answers (§2.8): 200 with no body and `Cache-Control: no-store` when recorded; 400
//! `invalid_request` for any refused request or token (never a 5xx for a bad token); 501
//! without `[store]`; 503 when our side fails (provider metadata, store), so that the
//! provider may retry.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::App;
use crate::clock::now_secs;
use crate::error::Error;
use crate::reply::{self, Body};
use crate::revocations::Record;

/// The largest form body read: a logout token is at most `oidc::LOGOUT_TOKEN_MAX` (16 KB),
/// and a little more for percent-encoding and the field name.
const FORM_MAX: usize = 32 * 1024;
/// How long the body may take to arrive: a peer that stalls holds a task no longer.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn logout(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let Some(store) = app.store() else {
        app.metrics.backchannel_logout("no_store");
        return Err(Error::BackchannelNeedsStore);
    };
    let token = read_logout_token(req)
        .await
        .map_err(|why| refused(app, "request", why))?;
    let provider = app.provider().await.map_err(|e| {
        app.metrics.backchannel_logout("unavailable");
        tracing::warn!(error = %e, "back-channel logout: provider metadata not loaded");
        Error::BackchannelUnavailable(e.to_string())
    })?;
    let now = now_secs();
    let claims = provider
        .verify_logout_token(&token, now)
        .await
        .map_err(|e| refused(app, e.as_str(), e.description()))?;

    // §2.6 step 7: only now, after the signature and the claims passed, does the `jti`
    // reach the store, so that forged tokens cannot fill the set of used ones.
    match store
        .first_use(&claims.jti, claims.replay_window_end())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            app.metrics.backchannel_logout("replay");
            tracing::info!(outcome = "replay", "back-channel logout refused");
            return Err(Error::LogoutTokenRefused("logout_token was already used"));
        }
        Err(e) => return Err(unavailable(app, e.to_string())),
    }

    // A revocation matters as long as a session it ends could live: `session.absolute`.
    let expires_at = now.saturating_add(app.limits.absolute);
    let (record, by) = match (&claims.sid, &claims.sub) {
        // §2.4: with `sid`, the logout is of that provider session only.
        (Some(sid), _) => (Record::sid(sid, expires_at), "sid"),
        (None, Some(sub)) => (Record::sub(sub, now, expires_at), "sub"),
        (None, None) => {
            return Err(refused(
                app,
                "no_sid_or_sub",
                "logout_token names no session",
            ));
        }
    };
    // The `jti` is spent from here on: a store error now means a provider retry is refused
    // as a replay. `revoke` applies the record on this instance before it writes, so an
    // error here is the rare failure of that write beyond what `Queued` already covers.
    let delivery = store
        .revoke(record, now)
        .await
        .map_err(|e| unavailable(app, e.to_string()))?;
    app.metrics.backchannel_logout("ok");
    tracing::info!(outcome = "ok", by, delivery = ?delivery, "back-channel logout");

    let mut response = Response::new(reply::empty());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The `logout_token` of a form body (§2.5): `application/x-www-form-urlencoded` only, at
/// most `FORM_MAX` bytes, the field exactly once. Refusals are 400 rather than 415 or 413:
/// §2.8 answers every failed back-channel logout request with 400.
async fn read_logout_token<B>(req: Request<B>) -> Result<String, &'static str>
where
    B: hyper::body::Body,
    B::Error: Into<reply::BoxError>,
{
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err("content type must be application/x-www-form-urlencoded");
    }
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), FORM_MAX).collect(),
    )
    .await
    .map_err(|_| "request body timed out")?
    .map_err(|_| "request body too large or unreadable")?
    .to_bytes();
    let mut tokens = url::form_urlencoded::parse(&body).filter(|(k, _)| k == "logout_token");
    match (tokens.next(), tokens.next()) {
        (Some((_, token)), None) if !token.is_empty() => Ok(token.into_owned()),
        (Some(_), Some(_)) => Err("logout_token given more than once"),
        _ => Err("logout_token missing"),
    }
}

/// A refused request (400): counted and logged by `reason`, answered with `words`.
fn refused(app: &App, reason: &'static str, words: &'static str) -> Error {
    app.metrics.backchannel_logout("invalid");
    tracing::info!(outcome = "invalid", reason, "back-channel logout refused");
    Error::LogoutTokenRefused(words)
}

/// Our side failed (503): counted and logged.
fn unavailable(app: &App, error: String) -> Error {
    app.metrics.backchannel_logout("unavailable");
    tracing::warn!(error = %error, "back-channel logout: store failed");
    Error::BackchannelUnavailable(error)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Full;

    use http::StatusCode;

    use super::*;

    fn post(content_type: Option<&str>, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        let mut b = Request::post("/bff/backchannel-logout");
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Full::new(body.into())).unwrap()
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[tokio::test]
    async fn reads_the_logout_token_of_a_form() {
        let token = read_logout_token(post(FORM, "logout_token=a.b%2Bc&x=1"))
            .await
            .unwrap();
        assert_eq!(token, "a.b+c");
        let ct = Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8");
        assert_eq!(
            read_logout_token(post(ct, "logout_token=t")).await.unwrap(),
            "t"
        );
    }

    #[tokio::test]
    async fn refuses_another_content_type() {
        for ct in [
            None,
            Some("application/json"),
            Some("multipart/form-data; boundary=x"),
        ] {
            assert_eq!(
                read_logout_token(post(ct, "logout_token=t")).await,
                Err("content type must be application/x-www-form-urlencoded"),
                "{ct:?}"
            );
        }
    }

    #[tokio::test]
    async fn refuses_a_missing_empty_or_repeated_token() {
        for body in ["", "logout_token=", "token=t", "logout_token"] {
            assert_eq!(
                read_logout_token(post(FORM, body)).await,
                Err("logout_token missing"),
                "{body:?}"
            );
        }
        assert_eq!(
            read_logout_token(post(FORM, "logout_token=a&logout_token=b")).await,
            Err("logout_token given more than once")
        );
    }

    #[tokio::test]
    async fn refuses_a_body_over_the_limit() {
        let body = format!("logout_token={}", "a".repeat(FORM_MAX));
        assert_eq!(
            read_logout_token(post(FORM, body)).await,
            Err("request body too large or unreadable")
        );
    }

    #[tokio::test]
    async fn answers_refusals_with_fixed_json() {
        let body = |r: Response<Body>| async move {
            let bytes = r.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        };
        let r = Error::LogoutTokenRefused("logout_token missing").into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body(r).await,
            serde_json::json!({"error": "invalid_request", "error_description": "logout_token missing"})
        );
        let r = Error::BackchannelNeedsStore.into_response();
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            body(r).await,
            serde_json::json!({"error": "not_implemented", "error_description": "back-channel logout needs [store]"})
        );
        let r = Error::BackchannelUnavailable("redis down at 10.0.0.1".into()).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(r).await,
            serde_json::json!({"error": "temporarily_unavailable"})
        );
    }
}
