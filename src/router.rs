//! The one place that looks at the request path: the match on method and path that picks a
//! handler, and what every answer gets on its way out (`Cache-Control` on `/bff/*`,
//! metrics). Builds nothing and holds no state: `App` is handed in.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::error::Error;
use crate::metrics::Endpoint;
use crate::proxy::Peer;
use crate::reply::{self, Body};
use crate::{api, backchannel, frontend, guard, jwks, login, logout, user};

/// Answers one request.
pub async fn handle(app: &App, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
    let started = std::time::Instant::now();
    let path = req.uri().path();
    let is_bff = path.starts_with("/bff/");
    let mut route_index = None;
    let (endpoint, result) = match (req.method(), path) {
        (&Method::GET, "/healthz") => (Endpoint::Health, Ok(reply::text(StatusCode::OK, "ok\n"))),
        (&Method::GET, "/readyz") => (Endpoint::Health, Ok(readyz(app))),
        (&Method::GET, "/metrics") if app.metrics_on_admin => {
            (Endpoint::Other, Err(Error::NotFound))
        }
        (&Method::GET, "/metrics") => (Endpoint::Metrics, Ok(metrics(app))),
        (&Method::GET, "/bff/login") => (Endpoint::Login, login::start(app, &req).await),
        (&Method::GET, "/bff/callback") => (Endpoint::Callback, login::callback(app, &req).await),
        (&Method::GET, "/bff/jwks.json") => (Endpoint::Other, jwks::get(app).await),
        (&Method::GET, "/bff/user") => (
            Endpoint::User,
            match guard::read(&req) {
                Ok(()) => user::get(app, &req).await,
                Err(refused) => Err(refused.into()),
            },
        ),
        (&Method::GET | &Method::POST, "/bff/logout") => {
            (Endpoint::Logout, logout::logout(app, &req).await)
        }
        (&Method::POST, "/bff/backchannel-logout") => {
            (Endpoint::Backchannel, backchannel::logout(app, req).await)
        }
        (_, "/bff/login" | "/bff/callback" | "/bff/user" | "/bff/jwks.json") => {
            (Endpoint::Other, Err(Error::MethodNotAllowed("GET")))
        }
        (_, "/bff/logout") => (Endpoint::Other, Err(Error::MethodNotAllowed("GET, POST"))),
        (_, "/bff/backchannel-logout") => (Endpoint::Other, Err(Error::MethodNotAllowed("POST"))),
        _ if is_bff => (Endpoint::Other, Err(Error::NotFound)),
        _ => match app
            .routes
            .iter()
            .zip(&app.route_clients)
            .enumerate()
            .find(|(_, (r, _))| route_matches(&r.prefix, path))
        {
            Some((i, (route, client))) => {
                route_index = Some(i);
                (
                    Endpoint::Proxy,
                    api::call(app, req, peer, route, client).await,
                )
            }
            None => (Endpoint::Frontend, frontend::serve(app, req, peer).await),
        },
    };
    let mut response = result.unwrap_or_else(|e| {
        if matches!(e, Error::Internal(_)) {
            tracing::error!(error = %e, "internal error");
        }
        e.into_response()
    });
    if is_bff {
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    app.metrics.request(endpoint, response.status().as_u16());
    app.metrics.latency(endpoint, started.elapsed());
    if let Some(i) = route_index {
        app.metrics.proxied(i, response.status().as_u16());
    }
    response
}

fn readyz(app: &App) -> Response<Body> {
    if app.is_ready() {
        reply::text(StatusCode::OK, "ready\n")
    } else {
        reply::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

fn metrics(app: &App) -> Response<Body> {
    let mut r = Response::new(reply::full(app.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Answers one request on the admin listener: `/metrics` and the health endpoints.
pub fn handle_admin<B>(app: &App, req: &Request<B>) -> Response<Body> {
    let (endpoint, response) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (Endpoint::Metrics, metrics(app)),
        (&Method::GET, "/healthz") => (Endpoint::Health, reply::text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") => (Endpoint::Health, readyz(app)),
        _ => (Endpoint::Other, Error::NotFound.into_response()),
    };
    app.metrics.request(endpoint, response.status().as_u16());
    response
}

/// Whether a request path belongs to a route prefix, on segment boundaries: `/api` and
/// `/api/` both match `/api` and `/api/...`, never `/apifoo` or `/api-internal/...`. The
/// token goes where the route says, not to whatever shares its first letters (the IETF
/// OAuth 2.0 for Browser-Based Applications draft asks a BFF for strict path routing).
pub fn route_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix.trim_end_matches('/'))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_routes_that_only_share_the_first_letters() {
        for prefix in ["/api", "/api/"] {
            for path in ["/api", "/api/", "/api/x", "/api/x/y"] {
                assert!(route_matches(prefix, path), "{prefix} matches {path}");
            }
            for path in ["/apifoo", "/api-internal/x", "/ap", "/", "/x/api/"] {
                assert!(
                    !route_matches(prefix, path),
                    "{prefix} must not match {path}"
                );
            }
        }
        assert!(route_matches("/", "/anything"));
        assert!(route_matches("/a/b/", "/a/b"));
        assert!(!route_matches("/a/b/", "/a/bc"));
    }
}
