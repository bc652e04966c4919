//! The transport: forwarding to an upstream. The request and the answer stream through
//! without being buffered, hop-by-hop headers are dropped both ways (RFC 9110 §7.6.1), the
//! browser's cookies stay home except those the caller names (sealgate's own never leave),
//! `Forwarded` and `X-Forwarded-*` say what sealgate knows rather than what the client
//! claims, the `Authorization` value is the one the caller gives, upgrades become tunnels
//! with an idle timeout. Takes what it forwards as arguments (`Hop`, `Target`): it never
//! sees the shared state and decides no policy (that is `api` and `frontend`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use url::Url;

use crate::cookies::header_pairs;
use crate::error::Error;
use crate::guard;
use crate::http_client::{HttpClient, HttpError};
use crate::jar::Cookies;
use crate::reply::{self, Body};

/// The client at the other end of a connection, with its `X-Forwarded-For` entry worked
/// out once per connection rather than once per request, and its `Forwarded` element at
/// the connection's first proxied request (shared by the clones each request gets).
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    ip: HeaderValue,
    forwarded: Arc<OnceLock<HeaderValue>>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        // An IPv4 client of a dual-stack listener is written as IPv4, not ::ffff:a.b.c.d.
        let ip = HeaderValue::from_str(&addr.ip().to_canonical().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            addr,
            ip,
            forwarded: Arc::default(),
        }
    }

    /// `for=<peer>;host="<public host>";proto=<public scheme>` (RFC 7239 §4, §6: an IPv6
    /// node is bracketed and quoted).
    fn forwarded(&self, public: &Forwarding) -> HeaderValue {
        self.forwarded
            .get_or_init(|| {
                let value = match self.addr.ip().to_canonical() {
                    IpAddr::V4(ip) => format!("for={ip}{}", public.forwarded_rest),
                    IpAddr::V6(ip) => format!("for=\"[{ip}]\"{}", public.forwarded_rest),
                };
                HeaderValue::from_str(&value)
                    .unwrap_or_else(|_| HeaderValue::from_static("for=unknown"))
            })
            .clone()
    }
}

/// What upstreams are told about the request's origin, from the configured public URL
/// (the origin browsers use) and built once. Whatever a client sends in these headers is
/// replaced, never passed on: an upstream that trusts them (for redirects, links, rate
/// limits, audit logs) must not be lied to through sealgate.
#[derive(Debug)]
pub struct Forwarding {
    /// `X-Forwarded-Host`: the public host, with its port when not the scheme's default.
    host: HeaderValue,
    /// `X-Forwarded-Proto`: the public scheme.
    proto: HeaderValue,
    /// `X-Forwarded-Port`: the public port.
    port: HeaderValue,
    /// `;host="...";proto=...`: the `Forwarded` element less its `for=` node.
    forwarded_rest: String,
}

impl Forwarding {
    pub fn new(public_url: &Url) -> Self {
        let host = &public_url[url::Position::BeforeHost..url::Position::AfterPort];
        let proto = if public_url.scheme() == "https" {
            "https"
        } else {
            "http"
        };
        let port = public_url.port_or_known_default().unwrap_or(80);
        // The URL crate writes hosts in ASCII (IDNA), so these are always header values.
        let value = |s: &str| {
            HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        };
        Self {
            host: value(host),
            proto: HeaderValue::from_static(proto),
            port: value(&port.to_string()),
            // `:` and `[` are not token characters: the host is always quoted (§4).
            forwarded_rest: format!(";host=\"{host}\";proto={proto}"),
        }
    }
}

/// Which of the browser's cookies go upstream. sealgate's own never do, even when named.
#[derive(Clone, Copy, Debug)]
pub enum ForwardCookies<'a> {
    /// Only cookies of exactly these names (a route's `forward_cookies`); with none, no
    /// `Cookie` header at all: whatever else lives on the site (a sibling subdomain's
    /// `Domain=` cookies, the provider's when it shares the host, analytics) stays home.
    Named(&'a [String]),
    /// All of them but sealgate's: the SPA's dev server, which is the site itself.
    AllButOurs,
}

/// Where and how to forward one request.
#[derive(Debug)]
pub struct Target<'a> {
    /// The upstream's base URL; the request path is appended to its path.
    pub base: &'a Url,
    /// A prefix to remove from the request path first.
    pub strip_prefix: Option<&'a str>,
    /// The `Authorization` value to send, if any (`dpop::Credential`).
    pub bearer: Option<HeaderValue>,
    /// How long to wait for the upstream's answer head.
    pub timeout: Duration,
    /// The client to send with (the route's own when it trusts a private CA).
    pub client: &'a HttpClient,
    /// Which of the browser's cookies the upstream receives.
    pub cookies: ForwardCookies<'a>,
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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// What the transport needs from the instance, passed in by the handler: the transport
/// never sees the shared state.
#[derive(Debug)]
pub struct Hop<'a> {
    /// sealgate's own cookie names: never forwarded, never set by an upstream.
    pub ours: &'a Cookies,
    /// What upstreams are told about the request's origin.
    pub public: &'a Forwarding,
    /// A WebSocket tunnel with no byte either way for this long is closed.
    pub idle: Duration,
    /// Turns true at the end of the drain: tunnels still open close then.
    pub closing: &'a tokio::sync::watch::Sender<bool>,
}

/// Streams one request to `target` and its answer back: hop-by-hop headers dropped both
/// ways, the browser's cookies filtered as `target.cookies` says, `Authorization` replaced
/// by `target.bearer`, `Forwarded`/`X-Forwarded-*` from `hop.public`; a WebSocket upgrade
/// becomes a tunnel. `prepare` then `send`, for callers that add to the request (a DPoP
/// proof) or send it again.
pub async fn forward(
    hop: &Hop<'_>,
    req: Request<Incoming>,
    peer: &Peer,
    target: Target<'_>,
) -> Result<Response<Body>, Error> {
    let (outbound, body) = prepare(hop, req, peer, &target)?;
    send(hop, outbound, reply::boxed(body), &target).await
}

/// A request made ready for the upstream (by `prepare`), less its body: what `send`
/// sends. Its headers may still be added to.
#[derive(Debug)]
pub struct Outbound {
    pub method: Method,
    /// The upstream's absolute URI (`upstream_uri`).
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The client's side of a WebSocket handshake, to join to the upstream's on a 101.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Outbound {
    /// Whether this is a WebSocket handshake.
    pub fn is_upgrade(&self) -> bool {
        self.upgrade.is_some()
    }

    /// A copy to send again, for any request but a handshake (whose client side can be
    /// joined to one upstream only).
    pub fn again(&self) -> Option<Outbound> {
        (!self.is_upgrade()).then(|| Outbound {
            method: self.method.clone(),
            uri: self.uri.clone(),
            headers: self.headers.clone(),
            upgrade: None,
        })
    }
}

/// The browser's request as it goes to `target`, and its body: the upstream URI, the
/// headers rewritten (hop-by-hop, cookies, `Authorization`, forwarding headers, the
/// handshake's own).
pub fn prepare(
    hop: &Hop<'_>,
    mut req: Request<Incoming>,
    peer: &Peer,
    target: &Target<'_>,
) -> Result<(Outbound, Incoming), Error> {
    let websocket = guard::is_websocket(&req);
    let upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let uri = upstream_uri(target.base, &parts.uri, target.strip_prefix)?;
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    rewrite_cookies(hop.ours, &mut headers, target.cookies);
    headers.remove(header::AUTHORIZATION);
    if let Some(value) = &target.bearer {
        headers.insert(header::AUTHORIZATION, value.clone());
    }
    set_forwarded(hop.public, &mut headers, peer);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let outbound = Outbound {
        method: parts.method,
        uri,
        headers,
        upgrade,
    };
    Ok((outbound, body))
}

/// Sends `outbound` with `body` by `target.client` and streams the answer back with its
/// hop-by-hop headers and any `Set-Cookie` of sealgate's cookies dropped; a handshake
/// answered 101 becomes a tunnel.
pub async fn send(
    hop: &Hop<'_>,
    outbound: Outbound,
    body: Body,
    target: &Target<'_>,
) -> Result<Response<Body>, Error> {
    let mut upstream = Request::new(body);
    *upstream.method_mut() = outbound.method;
    *upstream.uri_mut() = outbound.uri;
    *upstream.headers_mut() = outbound.headers;
    let mut response = target
        .client
        .send(upstream, target.timeout)
        .await
        .map_err(|e| match e {
            HttpError::Timeout(_) => Error::UpstreamTimeout,
            other => Error::UpstreamUnavailable(other.to_string()),
        })?;
    if let Some(client_upgrade) = outbound.upgrade
        && response.status() == http::StatusCode::SWITCHING_PROTOCOLS
    {
        filter_switch(hop.ours, response.headers_mut());
        return Ok(tunnel(
            client_upgrade,
            response,
            hop.idle,
            hop.closing.subscribe(),
        ));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    drop_our_set_cookies(hop.ours, &mut parts.headers);
    Ok(Response::from_parts(parts, reply::boxed(body)))
}

/// Answers the client's handshake with the upstream's 101 and, once both sides have
/// switched protocols, copies bytes both ways until either closes, no byte has moved
/// either way for `idle`, or `closing` turns true (the end of the drain). The client's
/// socket keeps its connection slot for the tunnel's life (see `server`).
fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    mut upstream: Response<Incoming>,
    idle: Duration,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> Response<Body> {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::time::Instant;

    /// The client side of the tunnel, noting when a byte last moved either way (ms since
    /// `start`).
    struct Stamped<'a, T> {
        io: T,
        start: Instant,
        last: &'a AtomicU64,
    }

    impl<T> Stamped<'_, T> {
        fn stamp(&self) {
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Stamped<'_, T> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.io).poll_read(cx, buf);
            if buf.filled().len() > before {
                this.stamp();
            }
            polled
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Stamped<'_, T> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            let polled = Pin::new(&mut this.io).poll_write(cx, buf);
            if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
                this.stamp();
            }
            polled
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream_upgrade) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let start = Instant::now();
        let last = AtomicU64::new(0);
        let mut client = Stamped {
            io: hyper_util::rt::TokioIo::new(client),
            start,
            last: &last,
        };
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                copied = &mut copy => {
                    if let Err(e) = copied {
                        tracing::debug!(error = %e, "websocket tunnel closed");
                    }
                    return;
                }
                _ = closing.wait_for(|c| *c) => {
                    tracing::debug!("drain over; websocket tunnel closed");
                    return;
                }
                () = &mut timer => {
                    let quiet_until = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                    if Instant::now() >= quiet_until {
                        tracing::debug!("websocket tunnel idle; closed");
                        return;
                    }
                    timer.as_mut().reset(quiet_until);
                }
            }
        }
    });
    let (parts, _) = upstream.into_parts();
    // The 101 keeps its Connection and Upgrade headers: they are the handshake.
    Response::from_parts(parts, reply::empty())
}

/// The upstream's 101 as the browser may see it: what the other answers get (no
/// hop-by-hop header, no `Set-Cookie` naming one of sealgate's cookies), except that the
/// handshake's own `Connection: upgrade` and `Upgrade` stay (RFC 9110 §7.8).
fn filter_switch(ours: &Cookies, headers: &mut HeaderMap) {
    let upgrade = headers
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("websocket"));
    strip_hop_by_hop(headers);
    drop_our_set_cookies(ours, headers);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// `base` + the request path (less `strip_prefix`) + the request query. A path with a
/// dot segment is refused: the upstream would resolve `/api/../admin` (RFC 3986 §5.2.4)
/// to a path outside the route, or outside the base path with `strip_prefix`.
pub(crate) fn upstream_uri(
    base: &Url,
    uri: &Uri,
    strip_prefix: Option<&str>,
) -> Result<Uri, Error> {
    let path = uri.path();
    if has_dot_segment(path) {
        return Err(Error::BadRequest("The request path cannot be forwarded."));
    }
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

/// Whether a path has a `.` or `..` segment, also percent-encoded (`%2e`), which an
/// upstream may decode before resolving. Browsers resolve them before sending, so only a
/// hand-made request carries one.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        [".", "..", "%2e", "%2e%2e", ".%2e", "%2e."]
            .iter()
            .any(|dot| segment.eq_ignore_ascii_case(dot))
    })
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

/// Replaces every `Cookie` header by one holding the cookies `forward` lets through (as
/// `name=value` pairs; a piece that is not one is dropped), or by none. With no names to
/// forward, the header is only removed: nothing is parsed or allocated.
pub(crate) fn rewrite_cookies(
    ours: &Cookies,
    headers: &mut HeaderMap,
    forward: ForwardCookies<'_>,
) {
    if let ForwardCookies::Named([]) = forward {
        headers.remove(header::COOKIE);
        return;
    }
    let wanted = |name: &str| {
        !ours.is_ours(name)
            && match forward {
                ForwardCookies::Named(names) => names.iter().any(|n| n == name),
                ForwardCookies::AllButOurs => true,
            }
    };
    let mut kept = String::new();
    for (name, value) in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(header_pairs)
        .filter(|(name, _)| wanted(name))
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
pub(crate) fn drop_our_set_cookies(ours: &Cookies, headers: &mut HeaderMap) {
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

/// Sets `Forwarded` (RFC 7239), `X-Forwarded-For/-Host/-Proto/-Port` and `X-Real-IP`
/// from what sealgate knows: the peer's address and the public URL. Each `insert`
/// replaces every value the client sent under that name. `X-Forwarded-For` is the peer
/// only, not the client's list with the peer appended: its left part would be whatever
/// the client wrote. Behind a load balancer the peer is the balancer (see README).
fn set_forwarded(public: &Forwarding, headers: &mut HeaderMap, peer: &Peer) {
    headers.insert(header::FORWARDED, peer.forwarded(public));
    headers.insert(X_FORWARDED_FOR, peer.ip.clone());
    headers.insert(X_REAL_IP, peer.ip.clone());
    headers.insert(X_FORWARDED_HOST, public.host.clone());
    headers.insert(X_FORWARDED_PROTO, public.proto.clone());
    headers.insert(X_FORWARDED_PORT, public.port.clone());
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

    #[test]
    fn refuses_dot_segments_in_forwarded_paths() {
        let base = Url::parse("http://127.0.0.1:9100/v1/").unwrap();
        for bad in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E./admin",
            "/api/.%2e",
            "/api/..",
        ] {
            let uri: Uri = bad.parse().unwrap();
            assert!(
                upstream_uri(&base, &uri, Some("/api/")).is_err(),
                "{bad} must be refused"
            );
        }
        for good in [
            "/api/a..b",
            "/api/.well-known/x",
            "/api/...",
            "/api/%2e%2ex",
        ] {
            let uri: Uri = good.parse().unwrap();
            assert!(
                upstream_uri(&base, &uri, None).is_ok(),
                "{good} is forwarded"
            );
        }
    }

    fn cookie_headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn refuses_to_forward_cookies_a_route_does_not_name() {
        let ours = Cookies::new(false, crate::cookies::SameSite::Lax, 4);
        let sent = [
            "sealgate.0=2.AAAA; lang=de; _ga=GA1.2",
            "sealgate.1=BBBB; idp_session=x",
        ];

        let mut h = cookie_headers(&sent);
        rewrite_cookies(&ours, &mut h, ForwardCookies::Named(&[]));
        assert!(
            !h.contains_key(header::COOKIE),
            "no Cookie header by default"
        );

        let names = ["lang".to_owned(), "sealgate.0".to_owned()];
        let mut h = cookie_headers(&sent);
        rewrite_cookies(&ours, &mut h, ForwardCookies::Named(&names));
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(
            h[header::COOKIE],
            "lang=de",
            "only named ones, never sealgate's"
        );

        let mut h = cookie_headers(&sent);
        rewrite_cookies(&ours, &mut h, ForwardCookies::Named(&["theme".to_owned()]));
        assert!(
            !h.contains_key(header::COOKIE),
            "none of the named ones: no header"
        );

        let mut h = cookie_headers(&sent);
        rewrite_cookies(&ours, &mut h, ForwardCookies::AllButOurs);
        assert_eq!(h[header::COOKIE], "lang=de; _ga=GA1.2; idp_session=x");
    }

    #[test]
    fn refuses_client_sent_forwarding_headers() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("forwarded", "for=10.0.0.1;host=admin.internal"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "admin.internal"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "1"),
            ("x-real-ip", "10.0.0.1"),
        ] {
            h.append(name, HeaderValue::from_static(value));
            h.append(name, HeaderValue::from_static(value));
        }
        let public = Forwarding::new(&Url::parse("https://app.example.com").unwrap());
        let peer = Peer::new("192.0.2.7:5000".parse().unwrap());
        set_forwarded(&public, &mut h, &peer);
        let one = |name: &str| {
            let all: Vec<_> = h.get_all(name).iter().collect();
            assert_eq!(all.len(), 1, "{name}: {all:?}");
            all[0].to_str().unwrap().to_owned()
        };
        assert_eq!(
            one("forwarded"),
            "for=192.0.2.7;host=\"app.example.com\";proto=https"
        );
        assert_eq!(one("x-forwarded-for"), "192.0.2.7");
        assert_eq!(one("x-real-ip"), "192.0.2.7");
        assert_eq!(one("x-forwarded-host"), "app.example.com");
        assert_eq!(one("x-forwarded-proto"), "https");
        assert_eq!(one("x-forwarded-port"), "443");

        let public = Forwarding::new(&Url::parse("http://127.0.0.1:8080").unwrap());
        let v6 = Peer::new("[2001:db8::17]:5000".parse().unwrap());
        let mut h = HeaderMap::new();
        set_forwarded(&public, &mut h, &v6);
        assert_eq!(
            h["forwarded"], "for=\"[2001:db8::17]\";host=\"127.0.0.1:8080\";proto=http",
            "IPv6 bracketed and quoted (RFC 7239 §6)"
        );
        assert_eq!(h["x-forwarded-host"], "127.0.0.1:8080");
        assert_eq!(h["x-forwarded-port"], "8080");
        let mapped = Peer::new("[::ffff:192.0.2.7]:5000".parse().unwrap());
        set_forwarded(&public, &mut h, &mapped);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn refuses_our_set_cookies_and_hop_headers_on_a_switch() {
        let ours = Cookies::new(false, crate::cookies::SameSite::Lax, 4);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, x-hop"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("sec-websocket-accept", HeaderValue::from_static("abc="));
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("sealgate.0=1.planted; Path=/"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark"));
        filter_switch(&ours, &mut h);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h["sec-websocket-accept"], "abc=");
        assert!(!h.contains_key("x-hop") && !h.contains_key("keep-alive"));
        let set: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(set, ["theme=dark"]);
    }
}
