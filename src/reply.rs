//! Building answers: the response body type and small constructors for JSON, redirects and
//! the short HTML error page. Below the endpoints, beside `error`, under `http_client` (which sends these bodies);
//! knows no request and imports nothing of the crate.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Errors of any body, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of answers and of outbound requests: whole (OIDC calls, sealgate's own
/// answers) or streamed (the proxy).
pub type OutBody = BoxBody<Bytes, BoxError>;

/// The body of every answer sealgate gives.
pub type Body = OutBody;

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Maps any body's error into ours.
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

fn with_status(status: StatusCode, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = with_status(status, full(value.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = with_status(status, full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A redirect. `location` must already be a valid header value (our own URLs and checked
/// local paths); anything else falls back to `/`, never to an error.
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = with_status(status, empty());
    let value = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    r.headers_mut().insert(header::LOCATION, value);
    r
}

/// The short error page for browser navigations. `title` and `message` are our own fixed
/// words, never text from the request or the provider, so nothing is reflected.
pub fn page(status: StatusCode, title: &'static str, message: &'static str) -> Response<Body> {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>{title}</title>\
         <h1>{title}</h1><p>{message}</p><p><a href=\"/\">Back to the application</a></p>\n"
    );
    let mut r = with_status(status, full(html));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    r
}

/// Appends `Set-Cookie` headers; values we render are always valid header values.
pub fn set_cookies(response: &mut Response<Body>, cookies: impl IntoIterator<Item = String>) {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}
