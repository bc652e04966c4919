//! Errors shared across the crate: configuration problems now, request errors and their one
//! mapping to HTTP answers as the endpoints arrive.
//!
//! Uses nothing else of the crate but `reply`, to build the answers.

use std::fmt;

/// One configuration problem: the key (`oidc.issuer`, `routes[0].upstream`, or an
/// environment variable's name) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

/// Every configuration problem found, reported together. Displays one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl ConfigError {
    pub fn one(key: &str, message: impl Into<String>) -> Self {
        Self(vec![ConfigIssue {
            key: key.to_owned(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "config: {}: {}", issue.key, issue.message)?;
        }
        Ok(())
    }
}

/// Why a request was not served. Each variant has one answer, chosen in `into_response`
/// with an exhaustive `match`: a new variant forces a decision. The detail strings go to
/// logs only; the browser sees fixed words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No valid session; the reason (missing, expired, unknown key, invalid, idle, ...) is
    /// for logs and metrics.
    #[error("login required ({0})")]
    LoginRequired(&'static str),
    /// The session ended while serving the request (the refresh token is dead, or the
    /// access token expired with no way to refresh): 401, and these `Set-Cookie` values
    /// clear the session's cookies.
    #[error("session ended ({reason})")]
    SessionEnded {
        reason: &'static str,
        clear: Vec<String>,
    },
    /// The access token needs a refresh and the provider cannot be reached: 503, and the
    /// session is kept for a later try.
    #[error("refresh unavailable")]
    RefreshUnavailable,
    /// An endpoint that needs `X-CSRF: 1` (or a same-origin proof) did not get it.
    #[error("missing anti-forgery header")]
    Csrf,
    /// A malformed request (bad `returnTo`, bad query).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The login could not be completed for a reason a new login fixes: no or wrong login
    /// transaction, a provider error answer, a refused code.
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// The provider is not reachable (or not discovered yet).
    #[error("provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// The provider's answer failed validation.
    #[error("provider response invalid: {0}")]
    ProviderInvalid(String),
    /// The tokens are too large to keep in the allowed cookies.
    #[error("session too large: {0}")]
    SessionTooLarge(String),
    /// An upstream (API or frontend dev server) could not be reached.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// An upstream did not answer within its timeout.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// No such endpoint.
    #[error("not found")]
    NotFound,
    /// The endpoint exists but not for this method; the methods it serves, for `Allow`
    /// (RFC 9110 §15.5.6: a 405 must carry it).
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// A back-channel logout request refused (OpenID Connect Back-Channel Logout 1.0
    /// §2.8: 400): the logout token failed a check, was used before, or the request was not
    /// a form carrying one. The words are fixed per refusal class, never the request's.
    #[error("back-channel logout refused: {0}")]
    LogoutTokenRefused(&'static str),
    /// A back-channel logout that could not be done for a reason on our side (provider
    /// metadata not loaded, store error): 503, so that the provider may retry.
    #[error("back-channel logout unavailable: {0}")]
    BackchannelUnavailable(String),
    /// Back-channel logout without `[store]`: nothing would carry it to the other instances.
    #[error("back-channel logout needs [store]")]
    BackchannelNeedsStore,
    /// Something that should not happen (the random generator failed).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The HTTP answer for this error.
    pub fn into_response(self) -> http::Response<crate::reply::Body> {
        use crate::reply::{json, page, text};
        use http::StatusCode as S;
        match self {
            Error::LoginRequired(_) => json(
                S::UNAUTHORIZED,
                &serde_json::json!({"error": "login_required"}),
            ),
            Error::SessionEnded { clear, .. } => {
                let mut r = json(
                    S::UNAUTHORIZED,
                    &serde_json::json!({"error": "login_required"}),
                );
                crate::reply::set_cookies(&mut r, clear);
                r
            }
            Error::RefreshUnavailable => json(
                S::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "provider_unavailable"}),
            ),
            Error::Csrf => json(S::FORBIDDEN, &serde_json::json!({"error": "csrf"})),
            Error::BadRequest(what) => page(S::BAD_REQUEST, "Bad request", what),
            Error::LoginFailed(_) => page(
                S::BAD_REQUEST,
                "Login failed",
                "The login could not be completed. Please try again.",
            ),
            Error::ProviderUnavailable(_) => page(
                S::SERVICE_UNAVAILABLE,
                "Login unavailable",
                "The identity provider could not be reached. Please try again shortly.",
            ),
            Error::ProviderInvalid(_) => page(
                S::BAD_GATEWAY,
                "Login failed",
                "The identity provider sent an invalid answer.",
            ),
            Error::SessionTooLarge(_) => page(
                S::BAD_GATEWAY,
                "Login failed",
                "The identity provider's tokens are too large to keep in this session.",
            ),
            Error::UpstreamUnavailable(_) => json(
                S::BAD_GATEWAY,
                &serde_json::json!({"error": "upstream_unavailable"}),
            ),
            Error::UpstreamTimeout => json(
                S::GATEWAY_TIMEOUT,
                &serde_json::json!({"error": "upstream_timeout"}),
            ),
            Error::NotFound => text(S::NOT_FOUND, "not found\n"),
            Error::MethodNotAllowed(allow) => {
                let mut r = text(S::METHOD_NOT_ALLOWED, "method not allowed\n");
                r.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                r
            }
            Error::LogoutTokenRefused(why) => json(
                S::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request", "error_description": why}),
            ),
            Error::BackchannelUnavailable(_) => json(
                S::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "temporarily_unavailable"}),
            ),
            Error::BackchannelNeedsStore => json(
                S::NOT_IMPLEMENTED,
                &serde_json::json!({
                    "error": "not_implemented",
                    "error_description": "back-channel logout needs [store]",
                }),
            ),
            Error::Internal(_) => text(S::INTERNAL_SERVER_ERROR, "internal error\n"),
        }
    }
}
