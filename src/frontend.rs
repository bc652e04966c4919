//! The SPA on sealgate's own origin, which is what makes the session cookie first-party:
//! static files with a fallback to `index.html` for client-side routes, or a frontend dev
//! server behind the proxy. Never a token, never sealgate's cookies, no `X-CSRF` needed;
//! a dev server's WebSocket (hot reload) only from the SPA's own origin.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::Frontend;
use crate::error::Error;
use crate::guard;
use crate::proxy::{self, ForwardCookies, Peer, Target};
use crate::reply::{self, Body};

/// How long a frontend dev server may take to answer.
const DEV_SERVER_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(
    app: &App,
    req: Request<Incoming>,
    peer: &Peer,
) -> Result<Response<Body>, Error> {
    match &app.frontend {
        None => Err(Error::NotFound),
        Some(Frontend::Upstream(url)) => {
            // Cross-site WebSocket hijacking: a page elsewhere could open the dev server's
            // socket with the browser's cookies. The handshake carries no X-CSRF, but
            // always an Origin (RFC 6455 §4.1).
            guard::websocket(&app.public_origin, &req)?;
            let target = Target {
                base: url,
                strip_prefix: None,
                bearer: None,
                timeout: DEV_SERVER_TIMEOUT,
                client: &app.http,
                // The dev server is the site itself (same origin): it gets what the page
                // would, except sealgate's cookies.
                cookies: ForwardCookies::AllButOurs,
            };
            proxy::forward(&app.hop(), req, peer, target).await
        }
        Some(Frontend::StaticDir(dir)) => static_file(dir, &req).await,
    }
}

async fn static_file(root: &Path, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Error::MethodNotAllowed("GET, HEAD"));
    }
    let relative = safe_relative(req.uri().path()).ok_or(Error::NotFound)?;
    let mut path = root.join(&relative);
    if relative.as_os_str().is_empty() || req.uri().path().ends_with('/') {
        path = path.join("index.html");
    }
    let (path, bytes) = match tokio::fs::read(&path).await {
        Ok(bytes) => (path, bytes),
        // A client-side route (no file extension): the SPA's index.html answers it.
        Err(_) if relative.extension().is_none() => {
            let index = root.join("index.html");
            let bytes = tokio::fs::read(&index).await.map_err(|_| Error::NotFound)?;
            (index, bytes)
        }
        Err(_) => return Err(Error::NotFound),
    };
    let mut response = Response::new(if req.method() == Method::HEAD {
        reply::empty()
    } else {
        reply::full(bytes)
    });
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// The request path as a relative path below the root: percent-decoded, with no `..`,
/// no hidden (dot) segments, no backslashes and no NUL. `None` refuses the request.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment.starts_with('.') {
            return None;
        }
        match Path::new(segment).components().next() {
            Some(Component::Normal(_)) => out.push(segment),
            _ => return None,
        }
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_outside_the_root() {
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/.env",
            "/a/.git/config",
            "/a%5cb",
            "/%00",
            "/a/../b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        assert_eq!(
            safe_relative("/assets/app.js"),
            Some(PathBuf::from("assets/app.js"))
        );
        assert_eq!(safe_relative("/a%20b.txt"), Some(PathBuf::from("a b.txt")));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("x.unknown")),
            "application/octet-stream"
        );
    }
}
