//! API routes: the policy in front of the transport. The guard (`X-CSRF`, Origin,
//! WebSocket origin), the route's token mode, the session opened (or served from the
//! session cache), the access token refreshed first when it is expired or about to be (once
//! per refresh token, see `refresh`), then `proxy::forward` with the session's credential
//! and only the cookies the route names: `Authorization: Bearer`, or for a DPoP-bound
//! session `Authorization: DPoP` with a fresh proof, sent once more when the upstream asks
//! for a nonce and the body can be sent again (RFC 9449 §7, §9). When the session was
//! re-sealed, the new cookies ride on the upstream's answer.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};

use crate::app::App;
use crate::clock::now_secs;
use crate::config::{Route, TokenMode};
use crate::dpop::{self, Credential, DpopError, Nonces, Origin, ProofKey, Replay};
use crate::error::Error;
use crate::guard;
use crate::http_client::HttpClient;
use crate::jar;
use crate::proxy::{self, ForwardCookies, Hop, Peer, Target};
use crate::refresh::Outcome;
use crate::reply::{self, Body};
use crate::session::AccessState;

/// A call to an API route: `X-CSRF: 1` required, the session opened, the access token
/// refreshed first when it is expired or about to be (once per refresh token, see
/// `refresh`), then forwarded with the session's credential. When the session was
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
    let (credential, set_cookies) = authorize(app, &req, route.token).await?;
    let (bearer, proof) = match credential {
        Some(c) => (Some(c.authorization), c.proof),
        None => (None, None),
    };
    let target = Target {
        base: &route.upstream,
        strip_prefix: route.strip_prefix.then_some(route.prefix.as_str()),
        bearer,
        timeout: route.timeout,
        client,
        cookies: ForwardCookies::Named(&route.forward_cookies),
    };
    let hop = app.hop();
    let result = match proof {
        None => proxy::forward(&hop, req, peer, target).await,
        Some(key) => forward_dpop(&hop, req, peer, &target, &key, &app.dpop_nonces).await,
    };
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

/// Forwards a DPoP-bound call (RFC 9449 §7): a fresh proof of `key` for the URI sealgate
/// sends to, with the latest nonce that origin gave. When the upstream answers with a nonce
/// challenge (§9) and the body can be sent again (none, or a small one with a known
/// length, read whole first), the call goes once more with a new proof carrying that nonce;
/// otherwise the challenge reaches the client, and the nonce serves the next call. A
/// WebSocket handshake gets its proof (htm GET) and is never sent twice. Every answer's
/// `DPoP-Nonce` is remembered for the origin and passed on to the client as it is (a
/// nonce is public by design, and the client may be another DPoP client of that API).
async fn forward_dpop(
    hop: &Hop<'_>,
    req: Request<Incoming>,
    peer: &Peer,
    target: &Target<'_>,
    key: &ProofKey,
    nonces: &Nonces,
) -> Result<Response<Body>, Error> {
    let (mut outbound, body) = proxy::prepare(hop, req, peer, target)?;
    let origin = Origin::of(&outbound.uri);
    let plan = if outbound.is_upgrade() {
        Replay::Stream
    } else {
        dpop::replay(body.is_end_stream(), body.size_hint().exact())
    };
    let (body, kept) = match plan {
        Replay::Empty => (reply::empty(), Some(Bytes::new())),
        Replay::Buffer(len) => {
            let limit = usize::try_from(len).unwrap_or(usize::MAX);
            let bytes = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|_| Error::BadRequest("The request body could not be read."))?
                .to_bytes();
            (reply::full(bytes.clone()), Some(bytes))
        }
        Replay::Stream => (reply::boxed(body), None),
    };
    // The copy to send again is taken before sending: the client consumes the request.
    let again = kept.and_then(|bytes| Some((outbound.again()?, bytes)));
    let nonce = nonces.get(&origin);
    outbound.headers.insert(
        dpop::DPOP,
        key.proof(&outbound.method, &outbound.uri, now_secs(), nonce.as_ref())
            .map_err(proof_failure)?,
    );
    let response = proxy::send(hop, outbound, body, target).await?;
    let fresh = nonces.remember(&origin, response.headers());
    let Some((mut outbound, bytes)) = again else {
        return Ok(response);
    };
    // A new nonce and a challenge: once more. The same nonce twice means the proof was not
    // the problem; the answer goes back as it is.
    let Some(fresh) = fresh.filter(|f| Some(f) != nonce.as_ref()) else {
        return Ok(response);
    };
    if !dpop::is_nonce_challenge(response.status(), response.headers()) {
        return Ok(response);
    }
    drop(response);
    tracing::debug!("upstream asked for a DPoP nonce; sending the call again with it");
    outbound.headers.insert(
        dpop::DPOP,
        key.proof(&outbound.method, &outbound.uri, now_secs(), Some(&fresh))
            .map_err(proof_failure)?,
    );
    proxy::send(hop, outbound, reply::full(bytes), target).await
}

/// A proof that cannot be made: only the random generator can fail here.
fn proof_failure(e: DpopError) -> Error {
    Error::Internal(e.to_string())
}

/// The credential to send and the `Set-Cookie` values to add, per the route's token mode.
/// A session this instance opened recently and that needs nothing but forwarding comes
/// from `app.sessions`; any other is opened, refreshed or touched here, and remembered when
/// it needed no write.
async fn authorize(
    app: &App,
    req: &Request<Incoming>,
    mode: TokenMode,
) -> Result<(Option<Credential>, Vec<String>), Error> {
    if mode == TokenMode::None {
        return Ok((None, Vec::new()));
    }
    let jar = app.request_cookies(req);
    let now = now_secs();
    let sealed = app.cookies.session.parts(&jar).ok();
    if let Some(sealed) = &sealed
        && let Some(credential) = app.sessions.get(app.ring_id(), sealed.as_slice(), now)
    {
        app.metrics.session_cache(true);
        return Ok((Some(credential), Vec::new()));
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
    // After a refresh too, the session's key stays: the new access token is bound to it
    // (the refresh carried a proof of the same key, RFC 9449 §5).
    let credential =
        Credential::of(&session.access_token, session.dpop_key.as_ref()).map_err(|e| match e {
            DpopError::BadKey => Error::SessionEnded {
                reason: "DPoP key unreadable",
                clear: app.cookies.clear_session(&jar),
            },
            DpopError::BadToken => {
                Error::ProviderInvalid("access token is not a valid header value".into())
            }
            DpopError::Random => Error::Internal(e.to_string()),
        })?;
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
                .insert(ring.id(), sealed.as_slice(), now, until, credential.clone());
        }
        Vec::new()
    };
    Ok((Some(credential), set_cookies))
}
