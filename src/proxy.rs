//! Forwarding to an upstream: the request and the answer stream through without being
//! buffered, hop-by-hop headers are dropped both ways (RFC 9110 §7.6.1), sealgate's own
//! cookies never leave, `X-Forwarded-*` are set, and the access token is added as
//! `Authorization: Bearer` when the route carries one.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use url::Url;
use zeroize::Zeroizing;

use crate::app::{App, has_csrf_header, is_cross_origin};
use crate::config::{Route, TokenMode};
use crate::cookies::header_pairs;
use crate::error::Error;
use crate::http_client::HttpError;
use crate::jar;
use crate::oidc::now_secs;
use crate::refresh::Outcome;
use crate::reply::{self, Body};
use crate::secret::SecretString;
use crate::session::AccessState;

/// The client at the other end of a connection, with its `X-Forwarded-For` entry worked
/// out once per connection rather than once per request.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    ip: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { addr, ip }
    }
}

/// Where and how to forward one request.
#[derive(Debug)]
pub struct Target<'a> {
    /// The upstream's base URL; the request path is appended to its path.
    pub base: &'a Url,
    /// A prefix to remove from the request path first.
    pub strip_prefix: Option<&'a str>,
    /// The `Authorization` value to send, if any (see `bearer_header`).
    pub bearer: Option<HeaderValue>,
    /// How long to wait for the upstream's answer head.
    pub timeout: Duration,
}

/// RFC 9110 §7.6.1 and the de-facto ones: never forwarded by a proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// A call to an API route: `X-CSRF: 1` required, the session opened, the access token
/// refreshed first when it is expired or about to be (once per refresh token, see
/// `refresh`), then forwarded with `Authorization: Bearer`. When the session was
/// re-sealed, the new cookies ride on the upstream's answer.
pub async fn api(
    app: &App,
    req: Request<Incoming>,
    peer: &Peer,
    route: &Route,
) -> Result<Response<Body>, Error> {
    // Browsers cannot put headers on a WebSocket handshake, but they always send Origin
    // on it: a handshake is served only from the SPA's own origin (cross-site WebSocket
    // hijacking). Every other call needs X-CSRF: 1.
    let allowed = if is_websocket(&req) {
        same_origin(app, &req)
    } else {
        has_csrf_header(&req) && !is_cross_origin(app, &req)
    };
    if !allowed {
        return Err(Error::Csrf);
    }
    let (bearer, set_cookies) = authorize(app, &req, route.token).await?;
    let target = Target {
        base: &route.upstream,
        strip_prefix: route.strip_prefix.then_some(route.prefix.as_str()),
        bearer,
        timeout: route.timeout,
    };
    let result = forward(app, req, peer, target).await;
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
    let mut loaded = match app.load_session(&jar, &ring, now) {
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
        jar::write_session(&jar, &ring, &app.cookies, &app.limits, now, session).map_err(|e| {
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

pub async fn forward(
    app: &App,
    mut req: Request<Incoming>,
    peer: &Peer,
    target: Target<'_>,
) -> Result<Response<Body>, Error> {
    let websocket = is_websocket(&req);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let uri = upstream_uri(target.base, &parts.uri, target.strip_prefix)?;
    let mut headers = parts.headers;
    // HTTP/1.1 carries the host in Host; HTTP/2 in the :authority pseudo-header.
    let original_host = headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    rewrite_cookies(&app.cookies, &mut headers);
    headers.remove(header::AUTHORIZATION);
    if let Some(value) = target.bearer {
        headers.insert(header::AUTHORIZATION, value);
    }
    set_forwarded(app, &mut headers, peer, original_host);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }

    let mut upstream = Request::new(reply::boxed(body));
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = headers;
    let response = app
        .http
        .send(upstream, target.timeout)
        .await
        .map_err(|e| match e {
            HttpError::Timeout(_) => Error::UpstreamTimeout,
            other => Error::UpstreamUnavailable(other.to_string()),
        })?;
    if let Some(client_upgrade) = client_upgrade
        && response.status() == http::StatusCode::SWITCHING_PROTOCOLS
    {
        return Ok(tunnel(client_upgrade, response));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    drop_our_set_cookies(&app.cookies, &mut parts.headers);
    Ok(Response::from_parts(parts, reply::boxed(body)))
}

/// Answers the client's handshake with the upstream's 101 and, once both sides have
/// switched protocols, copies bytes both ways until either closes.
fn tunnel(client: hyper::upgrade::OnUpgrade, mut upstream: Response<Incoming>) -> Response<Body> {
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream_upgrade) {
            Ok((client, upstream)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, "websocket tunnel closed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let (parts, _) = upstream.into_parts();
    // The 101 keeps its Connection and Upgrade headers: they are the handshake.
    Response::from_parts(parts, reply::empty())
}

/// Whether the request is a WebSocket handshake (RFC 6455 §4.1).
fn is_websocket<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.method() == http::Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

/// Whether the request's `Origin` is the SPA's own (the configured public URL).
fn same_origin<B>(app: &App, req: &Request<B>) -> bool {
    let ours = app.public_url.origin().ascii_serialization();
    req.headers()
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == ours.as_bytes())
}

/// `base` + the request path (less `strip_prefix`) + the request query.
pub(crate) fn upstream_uri(
    base: &Url,
    uri: &Uri,
    strip_prefix: Option<&str>,
) -> Result<Uri, Error> {
    let path = uri.path();
    let rest = match strip_prefix {
        Some(prefix) => path
            .strip_prefix(prefix.trim_end_matches('/'))
            .unwrap_or(path),
        None => path,
    };
    let base_path = base.path().trim_end_matches('/');
    let mut s = String::with_capacity(base.as_str().len() + uri.path().len() + 64);
    s.push_str(base.scheme());
    s.push_str("://");
    // Host and port as the URL writes them (IPv6 in brackets), without any userinfo.
    s.push_str(&base[url::Position::BeforeHost..url::Position::AfterPort]);
    s.push_str(base_path);
    if !rest.starts_with('/') {
        s.push('/');
    }
    s.push_str(rest);
    if let Some(q) = uri.query() {
        s.push('?');
        s.push_str(q);
    }
    Uri::from_maybe_shared(Bytes::from(s))
        .map_err(|_| Error::BadRequest("The request path cannot be forwarded."))
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CONNECTION) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        return;
    }
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Removes sealgate's cookies from every `Cookie` header, keeping the others (as
/// `name=value` pairs; a piece that is not one is dropped).
pub(crate) fn rewrite_cookies(ours: &crate::jar::Cookies, headers: &mut HeaderMap) {
    let mut kept = String::new();
    for (name, value) in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(header_pairs)
        .filter(|(name, _)| !ours.is_ours(name))
    {
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(name);
        kept.push('=');
        kept.push_str(value);
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept)
    {
        headers.insert(header::COOKIE, v);
    }
}

/// Removes any `Set-Cookie` of the upstream that names one of sealgate's cookies: an
/// upstream must not be able to delete the session or plant a captured sealed value.
pub(crate) fn drop_our_set_cookies(ours: &crate::jar::Cookies, headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let all: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    let (kept, dropped): (Vec<_>, Vec<_>) = all.into_iter().partition(|v| {
        let name = v
            .to_str()
            .ok()
            .and_then(|s| s.split('=').next())
            .map(str::trim)
            .unwrap_or("");
        !ours.is_ours(name)
    });
    if !dropped.is_empty() {
        tracing::warn!(
            count = dropped.len(),
            "upstream tried to set sealgate's cookies; dropped"
        );
    }
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

fn set_forwarded(app: &App, headers: &mut HeaderMap, peer: &Peer, host: Option<HeaderValue>) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::from_str(&format!(
            "{prior}, {}",
            peer.ip.to_str().unwrap_or("unknown")
        ))
        .ok(),
        None => Some(peer.ip.clone()),
    };
    if let Some(v) = value {
        headers.insert(xff, v);
    }
    let proto = if app.public_url.scheme() == "https" {
        "https"
    } else {
        "http"
    };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_joins_base_path_and_query() {
        let base = Url::parse("http://127.0.0.1:9100/v1/").unwrap();
        let uri: Uri = "/api/items?x=1".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, &uri, None).unwrap().to_string(),
            "http://127.0.0.1:9100/v1/api/items?x=1"
        );
        assert_eq!(
            upstream_uri(&base, &uri, Some("/api/"))
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9100/v1/items?x=1"
        );
        let v6 = Url::parse("http://user:pw@[::1]:9100/v1").unwrap();
        assert_eq!(
            upstream_uri(&v6, &uri, None).unwrap().to_string(),
            "http://[::1]:9100/v1/api/items?x=1",
            "no userinfo; IPv6 in brackets"
        );
        let root = Url::parse("https://api.example.com:443").unwrap();
        assert_eq!(
            upstream_uri(&root, &"/".parse().unwrap(), None)
                .unwrap()
                .to_string(),
            "https://api.example.com/"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_including_those_named_in_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
