//! Why a refresh grant failed, by class: only `invalid_grant` ends a session (RFC 6749
//! §5.2); the rest is the provider's, the network's or the configuration's trouble. The
//! classes are the metrics' and logs' labels, and never quote the provider's answer.

use openidconnect::RequestTokenError;
use serde_json::Value;

use crate::http_client::HttpError;

/// Why a refresh grant gave no usable tokens, by class (the metrics and log label). Only
/// `InvalidGrant` says the refresh token is dead (RFC 6749 §5.2); every other class is the
/// provider's, the network's or the configuration's trouble, and must not end a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshFailure {
    /// `invalid_grant`: the refresh token expired, was revoked, or was rotated away.
    InvalidGrant,
    /// `temporarily_unavailable` (RFC 6749 §4.1.2.1; providers send it on the token
    /// endpoint too, typically with a 503).
    TemporarilyUnavailable,
    /// `server_error`.
    ServerError,
    /// `invalid_client`: our client authentication was refused (a botched secret rotation).
    InvalidClient,
    /// `unauthorized_client`: this client may not use the grant (a provider-side change).
    UnauthorizedClient,
    /// Any other OAuth error code (`invalid_request`, `invalid_scope`, unregistered ones).
    OtherError,
    /// A 5xx without an OAuth error body (a gateway's error page).
    Http5xx,
    /// Any other non-200 answer without an OAuth error body (a 3xx, never followed; 404, 429).
    HttpOther,
    /// No connection, or it broke off.
    Network,
    /// No answer within the outbound timeout.
    Timeout,
    /// A 200 that is no usable token response (not JSON, no `access_token`, too large): the
    /// provider may have rotated the refresh token already.
    Unparsable,
    /// A token response whose tokens cannot be kept (too large for the cookies).
    UnusableTokens,
}

impl RefreshFailure {
    /// Every class, in the order `/metrics` lists them.
    pub const ALL: [RefreshFailure; 12] = [
        RefreshFailure::InvalidGrant,
        RefreshFailure::TemporarilyUnavailable,
        RefreshFailure::ServerError,
        RefreshFailure::InvalidClient,
        RefreshFailure::UnauthorizedClient,
        RefreshFailure::OtherError,
        RefreshFailure::Http5xx,
        RefreshFailure::HttpOther,
        RefreshFailure::Network,
        RefreshFailure::Timeout,
        RefreshFailure::Unparsable,
        RefreshFailure::UnusableTokens,
    ];

    /// The label: the OAuth error code where there is one.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshFailure::InvalidGrant => "invalid_grant",
            RefreshFailure::TemporarilyUnavailable => "temporarily_unavailable",
            RefreshFailure::ServerError => "server_error",
            RefreshFailure::InvalidClient => "invalid_client",
            RefreshFailure::UnauthorizedClient => "unauthorized_client",
            RefreshFailure::OtherError => "other_error",
            RefreshFailure::Http5xx => "http_5xx",
            RefreshFailure::HttpOther => "http_other",
            RefreshFailure::Network => "network",
            RefreshFailure::Timeout => "timeout",
            RefreshFailure::Unparsable => "unparsable",
            RefreshFailure::UnusableTokens => "unusable_tokens",
        }
    }

    /// Whether the refresh token is dead: the session is over.
    pub fn is_fatal(self) -> bool {
        self == RefreshFailure::InvalidGrant
    }

    /// Whether the provider answered the grant with a 200 (and so may have rotated the
    /// refresh token away) but nothing usable came of it: sending the same refresh token
    /// again soon would be a replay, which rotating providers punish by revoking the grant.
    pub fn spent(self) -> bool {
        matches!(
            self,
            RefreshFailure::Unparsable | RefreshFailure::UnusableTokens
        )
    }
}

/// A failed refresh grant: its class, and words for the log (never a body or a token).
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", class.as_str())]
pub struct RefreshError {
    pub class: RefreshFailure,
    pub detail: String,
}

/// A refresh grant's failure, by class. `status` is the answer's, 0 when there was none.
pub(super) fn refresh_error<RE: std::fmt::Debug + openidconnect::ErrorResponse + 'static>(
    e: RequestTokenError<HttpError, RE>,
    status: u16,
) -> RefreshError {
    use RefreshFailure as F;
    let (class, detail) = match e {
        RequestTokenError::Request(HttpError::Timeout(t)) => (F::Timeout, format!("{t:?}")),
        // Read in full before anything parses it, so it may well be a token answer.
        RequestTokenError::Request(e @ HttpError::TooLarge(_)) => (F::Unparsable, e.to_string()),
        RequestTokenError::Request(
            e @ (HttpError::Connect(_) | HttpError::Exchange(_) | HttpError::Tls(_)),
        ) => (F::Network, e.to_string()),
        RequestTokenError::ServerResponse(r) => {
            let code = serde_json::to_value(&r)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            let class = match code.as_str() {
                "invalid_grant" => F::InvalidGrant,
                "temporarily_unavailable" => F::TemporarilyUnavailable,
                "server_error" => F::ServerError,
                "invalid_client" => F::InvalidClient,
                "unauthorized_client" => F::UnauthorizedClient,
                _ => F::OtherError,
            };
            (class, format!("{status} error={}", printable(&code)))
        }
        RequestTokenError::Parse(e, body) => (
            status_class(status),
            format!("{status} {}", parse_failure(&e, &body)),
        ),
        RequestTokenError::Other(s) => (status_class(status), format!("{status} {s}")),
    };
    RefreshError { class, detail }
}

/// Whether a refresh grant was answered 400 with an empty body: no OAuth error, so neither
/// who was refused nor why (RFC 6749 §5.2 has a JSON `error` there). Glewlwyd 2.7 answers so
/// both a dead refresh token and a refused client authentication (protocol_oidc.c,
/// `get_access_token_from_refresh`): the first must end the session, the second must not
/// (a botched secret rotation would log everyone out). Such an answer is `HttpOther`,
/// transient, unless the provider confirms the token is inactive (`Provider::refresh`).
/// (oauth2 reports every non-200 answer with an empty body as `Other`.)
pub(super) fn is_empty_refusal<RE: std::fmt::Debug + openidconnect::ErrorResponse + 'static>(
    e: &RequestTokenError<HttpError, RE>,
    status: u16,
) -> bool {
    status == 400 && matches!(e, RequestTokenError::Other(_))
}

/// The class of an answer that is no OAuth error, by its status.
fn status_class(status: u16) -> RefreshFailure {
    match status {
        200..=299 => RefreshFailure::Unparsable,
        500..=599 => RefreshFailure::Http5xx,
        _ => RefreshFailure::HttpOther,
    }
}

/// Where and how a token answer failed to parse. Not serde's message: it quotes the
/// offending value, which may be a token.
pub(super) fn parse_failure(
    e: &serde_path_to_error::Error<serde_json::Error>,
    body: &[u8],
) -> String {
    format!(
        "({} bytes) does not parse: {:?} at `{}`",
        body.len(),
        e.inner().classify(),
        e.path()
    )
}

/// An OAuth error code as it may be logged: its own charset (RFC 6749 §5.2), at most 64.
fn printable(code: &str) -> String {
    code.chars()
        .filter(|c| matches!(c, '\x20'..='\x7e') && *c != '"' && *c != '\\')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type TokenError = RequestTokenError<
        HttpError,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >;

    fn oauth_error(code: &str) -> TokenError {
        use openidconnect::core::CoreErrorResponseType as T;
        let kind = match code {
            "invalid_grant" => T::InvalidGrant,
            "invalid_client" => T::InvalidClient,
            "unauthorized_client" => T::UnauthorizedClient,
            other => T::Extension(other.to_owned()),
        };
        RequestTokenError::ServerResponse(openidconnect::StandardErrorResponse::new(
            kind, None, None,
        ))
    }

    fn unparsable(body: &[u8]) -> TokenError {
        let e = serde_path_to_error::deserialize::<_, openidconnect::core::CoreTokenResponse>(
            &mut serde_json::Deserializer::from_slice(body),
        )
        .err()
        .unwrap();
        RequestTokenError::Parse(e, body.to_vec())
    }

    #[test]
    fn only_invalid_grant_is_fatal() {
        use RefreshFailure as F;
        let cases: Vec<(TokenError, u16, F)> = vec![
            (oauth_error("invalid_grant"), 400, F::InvalidGrant),
            (
                oauth_error("temporarily_unavailable"),
                503,
                F::TemporarilyUnavailable,
            ),
            (oauth_error("server_error"), 500, F::ServerError),
            (oauth_error("invalid_client"), 401, F::InvalidClient),
            (
                oauth_error("unauthorized_client"),
                400,
                F::UnauthorizedClient,
            ),
            (oauth_error("invalid_request"), 400, F::OtherError),
            (unparsable(b"<html>Bad Gateway</html>"), 502, F::Http5xx),
            (RequestTokenError::Other("empty".into()), 503, F::Http5xx),
            (
                unparsable(b"<html>Too Many Requests</html>"),
                429,
                F::HttpOther,
            ),
            (unparsable(b"<html>Welcome</html>"), 200, F::Unparsable),
            (
                unparsable(br#"{"token_type":"Bearer","refresh_token":"rt-new"}"#),
                200,
                F::Unparsable,
            ),
            (
                RequestTokenError::Request(HttpError::Timeout(Duration::from_secs(10))),
                0,
                F::Timeout,
            ),
            (
                RequestTokenError::Request(HttpError::Connect("refused".into())),
                0,
                F::Network,
            ),
            (
                RequestTokenError::Request(HttpError::Exchange("reset".into())),
                0,
                F::Network,
            ),
            (
                RequestTokenError::Request(HttpError::TooLarge(1)),
                0,
                F::Unparsable,
            ),
        ];
        for (error, status, class) in cases {
            let e = refresh_error(error, status);
            assert_eq!(e.class, class, "{e}");
            assert_eq!(e.class.is_fatal(), class == F::InvalidGrant);
        }
    }

    #[test]
    fn only_an_empty_400_is_an_empty_refusal() {
        let empty = || -> TokenError {
            RequestTokenError::Other("server returned empty error response".into())
        };
        assert!(is_empty_refusal(&empty(), 400));
        let e = refresh_error(empty(), 400);
        assert_eq!(e.class, RefreshFailure::HttpOther, "transient by itself");
        assert!(!e.class.is_fatal());
        assert!(!is_empty_refusal(&empty(), 503));
        assert!(!is_empty_refusal(&empty(), 401));
        assert!(!is_empty_refusal(&oauth_error("invalid_grant"), 400));
        assert!(!is_empty_refusal(
            &unparsable(b"<html>Bad Request</html>"),
            400
        ));
    }

    #[test]
    fn refresh_errors_never_quote_the_answer() {
        let body = br#"{"access_token":1,"token_type":"Bearer","refresh_token":"rt-new-secret"}"#;
        let e = refresh_error(unparsable(body), 200);
        assert!(!e.to_string().contains("rt-new-secret"), "{e}");
        let body = br#"{"access_token":"at","token_type":"Bearer","expires_in":"rt-new-secret"}"#;
        let e = refresh_error(unparsable(body), 200);
        assert_eq!(e.class, RefreshFailure::Unparsable);
        assert!(!e.to_string().contains("rt-new-secret"), "{e}");
        let e = refresh_error(oauth_error("x\"\ny"), 400);
        assert!(!e.detail.contains('"') && !e.detail.contains('\n'), "{e}");
    }
}
