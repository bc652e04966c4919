//! The request guards, in one place so that no handler can forget one (Duende's BFF 4.3.1
//! advisory was a route that skipped its anti-forgery check): the `X-CSRF: 1` header,
//! `Origin` / `Sec-Fetch-Site` for state-changing requests, and the same-origin rule for
//! WebSocket handshakes, which cannot carry a custom header.
//!
//! Pure functions of the request head and the SPA's origin; knows no handler and no state.

use http::header::{self, HeaderValue};
use http::{Method, Request};

use crate::error::Error;

/// Why a request was refused by a guard (logged at debug; the browser sees 403 `csrf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `X-CSRF: 1`.
    MissingCsrfHeader,
    /// A state-changing request whose `Sec-Fetch-Site` or `Origin` names another origin.
    CrossOrigin,
    /// A WebSocket handshake without the SPA's own `Origin`.
    WebSocketOrigin,
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        tracing::debug!(refusal = ?r, "request refused by a guard");
        Error::Csrf
    }
}

/// `/bff/user` and other reads of the session: `X-CSRF: 1`.
pub fn read<B>(req: &Request<B>) -> Result<(), Refusal> {
    if has_csrf_header(req) {
        Ok(())
    } else {
        Err(Refusal::MissingCsrfHeader)
    }
}

/// A call that acts with the session (`POST /bff/logout`, an API call): `X-CSRF: 1`, and
/// for an unsafe method no sign of another origin.
pub fn act<B>(origin: &str, req: &Request<B>) -> Result<(), Refusal> {
    read(req)?;
    if is_cross_origin(origin, req) {
        return Err(Refusal::CrossOrigin);
    }
    Ok(())
}

/// An API call: a WebSocket handshake must come from the SPA's own origin (browsers put
/// no custom header on it, but always `Origin`: cross-site WebSocket hijacking); any other
/// call as `act`.
pub fn api<B>(origin: &str, req: &Request<B>) -> Result<(), Refusal> {
    if is_websocket(req) {
        websocket(origin, req)
    } else {
        act(origin, req)
    }
}

/// A request that needs no `X-CSRF` (the frontend) but, as a WebSocket handshake, must
/// come from the SPA's own origin.
pub fn websocket<B>(origin: &str, req: &Request<B>) -> Result<(), Refusal> {
    if is_websocket(req) && !same_origin(origin, req) {
        Err(Refusal::WebSocketOrigin)
    } else {
        Ok(())
    }
}

/// Whether the request carries the anti-forgery header `X-CSRF: 1`. Browsers refuse to
/// send a custom header cross-site without a CORS preflight, which sealgate never grants.
fn has_csrf_header<B>(req: &Request<B>) -> bool {
    req.headers()
        .get("x-csrf")
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// For a state-changing request: whether the browser says it comes from another origin.
/// `Sec-Fetch-Site` (sent by every current browser) must be `same-origin` or `none` when
/// present, and `Origin`, when present, must be the SPA's own. Defence in depth beside
/// `X-CSRF: 1`.
fn is_cross_origin<B>(origin: &str, req: &Request<B>) -> bool {
    if req.method().is_safe() {
        return false;
    }
    let site = req
        .headers()
        .get("sec-fetch-site")
        .map(HeaderValue::as_bytes);
    if site.is_some_and(|s| s != b"same-origin" && s != b"none") {
        return true;
    }
    req.headers()
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() != origin.as_bytes())
}

/// Whether the request's `Origin` is the SPA's own (the configured public URL's origin).
fn same_origin<B>(origin: &str, req: &Request<B>) -> bool {
    req.headers()
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == origin.as_bytes())
}

/// Whether the request is a WebSocket handshake (RFC 6455 §4.1).
pub fn is_websocket<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.method() == Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "https://app.example.com";

    fn req(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/api/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn ws(origin: Option<&str>) -> Request<()> {
        let mut h = vec![("upgrade", "websocket"), ("connection", "Upgrade")];
        if let Some(o) = origin {
            h.push(("origin", o));
        }
        req(Method::GET, &h)
    }

    #[test]
    fn refuses_reads_without_the_csrf_header() {
        assert_eq!(
            read(&req(Method::GET, &[])),
            Err(Refusal::MissingCsrfHeader)
        );
        assert_eq!(
            read(&req(Method::GET, &[("x-csrf", "yes")])),
            Err(Refusal::MissingCsrfHeader)
        );
        assert_eq!(read(&req(Method::GET, &[("x-csrf", "1")])), Ok(()));
    }

    #[test]
    fn refuses_unsafe_calls_from_another_origin_even_with_the_header() {
        let csrf = ("x-csrf", "1");
        assert_eq!(
            act(
                OURS,
                &req(Method::POST, &[csrf, ("origin", "https://evil.example")])
            ),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            act(
                OURS,
                &req(Method::POST, &[csrf, ("sec-fetch-site", "cross-site")])
            ),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            act(
                OURS,
                &req(Method::DELETE, &[csrf, ("sec-fetch-site", "same-site")])
            ),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            act(OURS, &req(Method::POST, &[("origin", OURS)])),
            Err(Refusal::MissingCsrfHeader)
        );
        assert_eq!(
            act(
                OURS,
                &req(
                    Method::POST,
                    &[csrf, ("origin", OURS), ("sec-fetch-site", "same-origin")]
                )
            ),
            Ok(())
        );
        // A safe method only needs the header: Origin on a GET is not a state change.
        assert_eq!(
            act(
                OURS,
                &req(Method::GET, &[csrf, ("origin", "https://evil.example")])
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_websocket_handshakes_from_another_or_no_origin() {
        assert_eq!(api(OURS, &ws(None)), Err(Refusal::WebSocketOrigin));
        assert_eq!(
            api(OURS, &ws(Some("https://evil.example"))),
            Err(Refusal::WebSocketOrigin)
        );
        assert_eq!(api(OURS, &ws(Some(OURS))), Ok(()), "no X-CSRF needed");
        assert_eq!(
            websocket(OURS, &ws(Some("null"))),
            Err(Refusal::WebSocketOrigin)
        );
        assert_eq!(
            websocket(OURS, &req(Method::GET, &[])),
            Ok(()),
            "not a handshake"
        );
        // An API call that is not a handshake still needs the header.
        assert_eq!(
            api(OURS, &req(Method::GET, &[("origin", OURS)])),
            Err(Refusal::MissingCsrfHeader)
        );
    }

    #[test]
    fn a_websocket_handshake_is_a_get_with_both_tokens() {
        assert!(is_websocket(&ws(None)));
        assert!(!is_websocket(&req(
            Method::POST,
            &[("upgrade", "websocket"), ("connection", "upgrade")]
        )));
        assert!(!is_websocket(&req(
            Method::GET,
            &[("upgrade", "websocket")]
        )));
        assert!(is_websocket(&req(
            Method::GET,
            &[
                ("upgrade", "WebSocket"),
                ("connection", "keep-alive, Upgrade")
            ]
        )));
    }
}
