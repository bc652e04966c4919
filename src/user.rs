//! `GET /bff/user`: the user's claims and the session's facts, never a token.

use http::{Request, Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::error::Error;
use crate::jar;
use crate::oidc::now_secs;
use crate::reply::{self, Body};

/// Answers 200 with `{"sub", "claims", "session": {...}}`, or 401 `login_required`.
/// Requires `X-CSRF: 1` (checked by the caller).
pub fn get(app: &App, req: &Request<hyper::body::Incoming>) -> Result<Response<Body>, Error> {
    let jar = app.request_cookies(req);
    let ring = app.keys();
    let now = now_secs();
    let mut loaded = app.load_session(&jar, &ring, now)?;
    let profile = jar::load_profile(&jar, &ring, &app.cookies, &loaded.session, now)
        .ok_or(Error::LoginRequired("profile"))?;
    let mut set = Vec::new();
    if loaded.session.touch(&app.limits, now) || !loaded.by_primary {
        set = jar::write_session(&jar, &ring, &app.cookies, &app.limits, now, &loaded.session)
            .map_err(jar::write_failure)?;
    }
    let s = &loaded.session;
    let body = json!({
        "sub": s.sub,
        "claims": profile.claims,
        "session": {
            "sid": s.sid,
            "created_at": s.created_at,
            "expires_at": s.expires_at(&app.limits),
            "absolute_expires_at": s.created_at.saturating_add(app.limits.absolute),
            "logout_url": format!("/bff/logout?sid={}", s.id),
        },
    });
    let mut response = reply::json(StatusCode::OK, &body);
    reply::set_cookies(&mut response, set);
    Ok(response)
}
