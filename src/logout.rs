//! `/bff/logout`: ends the session. Not triggerable cross-site: a `GET` must carry the
//! session's own id (`?sid=`, as `/bff/user` reports it in `logout_url`, as Duende.BFF
//! does), a `POST` must carry `X-CSRF: 1`. Revokes the refresh token (best effort, bounded
//! in time), clears every session chunk, then sends the browser to the provider's
//! end-session endpoint, or to `/`.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::clock::now_secs;
use crate::error::Error;
use crate::guard;
use crate::reply::{self, Body};

/// How long logout waits for the revocation endpoint before going on without it.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn logout(
    app: &App,
    req: &Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Error> {
    let jar = app.request_cookies(req);
    let ring = app.keys();
    let now = now_secs();
    let is_post = req.method() == Method::POST;
    let ctx = app.ctx(&jar, &ring, now);
    let loaded = app.load_session(&ctx).ok();

    let allowed = if is_post {
        guard::act(&app.public_origin, req).is_ok()
    } else {
        match (&loaded, sid_param(req.uri().query())) {
            (Some(l), Some(sid)) => bool::from(l.session.id.as_bytes().ct_eq(sid.as_bytes())),
            // No session: clearing cookies and going home harms no one.
            (None, _) => true,
            (Some(_), None) => false,
        }
    };
    if !allowed {
        return Err(Error::Csrf);
    }

    let mut target = "/".to_owned();
    if let Some(loaded) = &loaded {
        let profile = ctx.load_profile(&loaded.session);
        if let Ok(provider) = app.provider_now() {
            if let Some(rt) = &loaded.session.refresh_token {
                match tokio::time::timeout(REVOKE_TIMEOUT, provider.revoke(rt)).await {
                    Ok(Ok(true)) => app.metrics.revocation("ok"),
                    Ok(Ok(false)) => app.metrics.revocation("unsupported"),
                    Ok(Err(e)) => {
                        app.metrics.revocation("failed");
                        tracing::warn!(error = %e, "refresh token revocation failed");
                    }
                    Err(_) => {
                        app.metrics.revocation("failed");
                        tracing::warn!("refresh token revocation timed out");
                    }
                }
            }
            let hint = profile.as_ref().and_then(|p| p.id_token.as_ref());
            if let Some(url) = provider.end_session_url(hint) {
                target = url.to_string();
            }
        }
        tracing::info!("logout");
    }
    let clear = app.cookies.clear_session(&jar);
    let mut response = if is_post {
        reply::json(StatusCode::OK, &json!({ "redirect": target }))
    } else {
        reply::redirect(StatusCode::FOUND, &target)
    };
    reply::set_cookies(&mut response, clear);
    Ok(response)
}

fn sid_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "sid")
        .map(|(_, v)| v.into_owned())
}
