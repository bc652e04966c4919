//! Forwarding to an upstream: the request and the answer stream through without being
//! buffered, hop-by-hop headers are dropped both ways (RFC 9110 §7.6.1), sealgate's own
//! cookies never leave, `X-Forwarded-*` are set, and the access token is added as
//! `Authorization: Bearer` when the route carries one.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use url::Url;

use crate::app::App;
use crate::error::Error;
use crate::http_client::HttpError;
use crate::reply::{self, Body};
use crate::secret::SecretString;

/// Where and how to forward one request.
#[derive(Debug)]
pub struct Target<'a> {
    /// The upstream's base URL; the request path is appended to its path.
    pub base: &'a Url,
    /// A prefix to remove from the request path first.
    pub strip_prefix: Option<&'a str>,
    /// The access token to send, if any.
    pub bearer: Option<&'a SecretString>,
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

pub async fn forward(
    app: &App,
    req: Request<Incoming>,
    peer: SocketAddr,
    target: Target<'_>,
) -> Result<Response<Body>, Error> {
    let (parts, body) = req.into_parts();
    let uri = upstream_uri(target.base, &parts.uri, target.strip_prefix)?;
    let mut headers = parts.headers;
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    rewrite_cookies(app, &mut headers);
    headers.remove(header::AUTHORIZATION);
    if let Some(token) = target.bearer {
        let value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| Error::Internal("access token is not a valid header value".into()))?;
        let mut value = value;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    set_forwarded(app, &mut headers, peer, original_host);

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
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, reply::boxed(body)))
}

/// `base` + the request path (less `strip_prefix`) + the request query.
fn upstream_uri(base: &Url, uri: &Uri, strip_prefix: Option<&str>) -> Result<Uri, Error> {
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
    s.push_str(base.host_str().unwrap_or_default());
    if let Some(port) = base.port() {
        s.push(':');
        s.push_str(&port.to_string());
    }
    s.push_str(base_path);
    if !rest.starts_with('/') {
        s.push('/');
    }
    s.push_str(rest);
    if let Some(q) = uri.query() {
        s.push('?');
        s.push_str(q);
    }
    s.parse()
        .map_err(|_| Error::BadRequest("The request path cannot be forwarded."))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// Removes sealgate's cookies from every `Cookie` header, keeping the others.
fn rewrite_cookies(app: &App, headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && !app.cookies.is_ours(name)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

fn set_forwarded(app: &App, headers: &mut HeaderMap, peer: SocketAddr, host: Option<HeaderValue>) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
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
        let root = Url::parse("https://api.example.com").unwrap();
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
