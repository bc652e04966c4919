//! API routes: the policy in front of the transport. The guard (`X-CSRF`, Origin,
//! WebSocket origin), the route's token mode, the session opened (or served from the
//! session cache), the access token refreshed first when it is expired or about to be (once
//! per refresh token, see `refresh`), then `proxy::forward` with `Authorization: Bearer`
//! and only the cookies the route names. When the session was re-sealed, the new cookies
//! ride on the upstream's answer.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use zeroize::Zeroizing;

use crate::app::App;
use crate::clock::now_secs;
use crate::config::{Route, TokenMode};
use crate::error::Error;
use crate::guard;
use crate::http_client::HttpClient;
use crate::jar;
use crate::proxy::{self, ForwardCookies, Peer, Target};
use crate::refresh::Outcome;
use crate::reply::{self, Body};
use crate::secret::SecretString;
use crate::session::AccessState;

/// A call to an API route: `X-CSRF: 1` required, the session opened, the access token
/// refreshed first when it is expired or about to be (once per refresh token, see
/// `refresh`), then forwarded with `Authorization: Bearer`. When the session was
/// re-sealed, the new cookies ride on the upstream's answer.
pub async fn call(
    app: &App,
    req: Request<Incoming>,
    peer: &Peer,
    route: &Route,
    client: &HttpClient,
) -> Result<Response<Body>, Error> {
    // Browsers cannot put headers on a WebSocket handshake, but they always send Origin
    // on it: a handshake is served only from the SPA's own origin (cross-site WebSocket
    // hijacking). Every other call needs X-CSRF: 1.
    guard::api(&app.public_origin, &req)?;
    let (bearer, set_cookies) = authorize(app, &req, route.token).await?;
    let target = Target {
        base: &route.upstream,
        strip_prefix: route.strip_prefix.then_some(route.prefix.as_str()),
        bearer,
        timeout: route.timeout,
        client,
        cookies: ForwardCookies::Named(&route.forward_cookies),
    };
    let result = proxy::forward(&app.hop(), req, peer, target).await;
    match &result {
        Err(Error::UpstreamTimeout) => app.metrics.upstream_error("timeout"),
        Err(Error::UpstreamUnavailable(_)) => app.metrics.upstream_error("unavailable"),
        _ => {}
    }
    let mut response = result?;
    if !set_cookies.is_empty() {
        reply::set_cookies(&mut response, set_cookies);
        // A shared cache must never store an answer that sets session cookies.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// The `Authorization` value to send and the `Set-Cookie` values to add, per the route's
/// token mode. A session this instance opened recently and that needs nothing but
/// forwarding comes from `app.sessions`; any other is opened, refreshed or touched here,
/// and remembered when it needed no write.
async fn authorize(
    app: &App,
    req: &Request<Incoming>,
    mode: TokenMode,
) -> Result<(Option<HeaderValue>, Vec<String>), Error> {
    if mode == TokenMode::None {
        return Ok((None, Vec::new()));
    }
    let jar = app.request_cookies(req);
    let now = now_secs();
    let sealed = app.cookies.session.parts(&jar).ok();
    if let Some(sealed) = &sealed
        && let Some(bearer) = app.sessions.get(app.ring_id(), sealed.as_slice(), now)
    {
        app.metrics.session_cache(true);
        return Ok((Some(bearer), Vec::new()));
    }
    app.metrics.session_cache(false);
    let ring = app.keys();
    let ctx = app.ctx(&jar, &ring, now);
    let mut loaded = match app.load_session(&ctx) {
        Ok(l) => l,
        Err(_) if mode == TokenMode::Optional => return Ok((None, Vec::new())),
        Err(e) => return Err(e),
    };
    let session = &mut loaded.session;
    let mut dirty = !loaded.by_primary;
    let mut refreshed_from = None;
    match session.access_state(&app.limits, now) {
        AccessState::Valid => {}
        AccessState::Dead => {
            return Err(Error::SessionEnded {
                reason: "access token expired, no refresh token",
                clear: app.cookies.clear_session(&jar),
            });
        }
        AccessState::Refresh => match app.refresh(session).await {
            Outcome::Refreshed(tokens) => {
                refreshed_from = session.refresh_token.clone();
                session.access_token = tokens.access_token.clone();
                session.access_expires_at = tokens.access_expires_at;
                if let Some(rt) = &tokens.refresh_token {
                    session.refresh_token = Some(rt.clone());
                }
                dirty = true;
            }
            Outcome::Fatal => {
                return Err(Error::SessionEnded {
                    reason: "refresh token refused",
                    clear: app.cookies.clear_session(&jar),
                });
            }
            // The provider failed: the session stays, and so does its access token while
            // it lasts (we are inside `refresh_skew`).
            Outcome::Transient(_) if session.access_expires_at.is_some_and(|exp| now < exp) => {}
            Outcome::Transient(_) => return Err(Error::RefreshUnavailable),
        },
    }
    dirty |= session.touch(&app.limits, now);
    let bearer = bearer_header(&session.access_token)?;
    let set_cookies = if dirty {
        ctx.write_session(session).map_err(|e| {
            match &refreshed_from {
                // Fresh tokens that cannot be kept: the session stays (see `refresh_unusable`).
                Some(rt) => {
                    app.refresh_unusable(rt);
                    Error::RefreshUnavailable
                }
                None => jar::write_failure(e),
            }
        })?
    } else {
        if let Some(sealed) = &sealed {
            let until = session.quiet_until(&app.limits).min(loaded.expires_at);
            app.sessions
                .insert(ring.id(), sealed.as_slice(), now, until, bearer.clone());
        }
        Vec::new()
    };
    Ok((Some(bearer), set_cookies))
}

/// `Bearer <token>` as a header value, marked sensitive (never indexed by HTTP/2 header
/// compression). Its bytes are zeroized when the last user of the value drops it; what
/// hyper copies into a connection's write buffer is not (see SECURITY.md).
pub(crate) fn bearer_header(token: &SecretString) -> Result<HeaderValue, Error> {
    let mut buf = Zeroizing::new(Vec::with_capacity("Bearer ".len() + token.len()));
    buf.extend_from_slice(b"Bearer ");
    buf.extend_from_slice(token.expose().as_bytes());
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
        .map_err(|_| Error::ProviderInvalid("access token is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}
