//! `GET /bff/login` and `GET /bff/callback`: Authorization Code + PKCE with state and
//! nonce, remembered in a short-lived sealed login-transaction cookie per login, so that
//! several tabs logging in at once each complete.

use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::clock::now_secs;
use crate::cookies::{RequestCookies, WriteError};
use crate::error::Error;
use crate::jar::{self, MAX_PENDING_LOGINS};
use crate::jws::DpopKey;
use crate::oidc::{self, OidcError};
use crate::reply::{self, Body};
use crate::secret::SecretString;
use crate::session::{self, Profile, Session};

/// How long a login may take between `/bff/login` and the callback.
pub const LOGIN_TIMEOUT_SECS: u64 = 600;
/// Longest `returnTo` accepted.
const MAX_RETURN_TO: usize = 2048;
/// Longest callback query accepted.
const MAX_CALLBACK_QUERY: usize = 8192;

/// What the login-transaction cookie holds.
#[derive(Serialize, Deserialize)]
struct Transaction {
    #[serde(rename = "s")]
    state: SecretString,
    #[serde(rename = "n")]
    nonce: SecretString,
    #[serde(rename = "v")]
    pkce_verifier: SecretString,
    #[serde(rename = "r")]
    return_to: String,
    /// When the login started, in milliseconds: orders pending logins (the sealed expiry
    /// has only whole seconds, and several logins can start within one).
    #[serde(rename = "t", default)]
    started_ms: u64,
    /// With DPoP: this login's proof key (sealed, `oidc::seal_key`), bound to the code by
    /// `dpop_jkt` and kept in the session it makes.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    dpop_key: Option<SecretString>,
}

/// `GET /bff/login?returnTo=/path`: starts a login and redirects to the provider.
pub async fn start(
    app: &App,
    req: &Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Error> {
    let return_to = match query_param(req.uri().query(), "returnTo")? {
        None => "/".to_owned(),
        Some(r) => {
            local_path(&r).ok_or(Error::BadRequest("returnTo must be a path on this site."))?
        }
    };
    let provider = app.provider().await?;
    let dpop_key = match provider.dpop_alg() {
        Some(alg) => Some(DpopKey::generate(alg).map_err(|e| Error::Internal(e.to_string()))?),
        None => None,
    };
    let login = provider
        .start_login(dpop_key.as_ref())
        .await
        .map_err(|e| match e {
            OidcError::Unavailable(m) => Error::ProviderUnavailable(m),
            // A refused push is the client's registration or the provider's setup, not
            // anything a new login by the user would fix.
            OidcError::Refused(m) | OidcError::Invalid(m) => Error::ProviderInvalid(m),
        })?;
    let tx_spec = app
        .cookies
        .transaction(login.state.expose())
        .ok_or_else(|| Error::Internal("state too short to name a cookie".into()))?;
    let tx = Transaction {
        state: login.state,
        nonce: login.nonce,
        pkce_verifier: login.pkce_verifier,
        return_to,
        started_ms: now_millis(),
        dpop_key: dpop_key.as_ref().map(oidc::seal_key),
    };
    let payload = serde_json::to_vec(&tx).map_err(|e| Error::Internal(e.to_string()))?;
    let jar = app.request_cookies(req);
    let ring = app.keys();
    let now = now_secs();
    let mut set = tx_spec
        .seal(&jar, &ring, now, now + LOGIN_TIMEOUT_SECS, &payload)
        .map_err(|e| Error::Internal(e.to_string()))?;
    set.extend(prune_transactions(app, &jar, now));
    let mut response = reply::redirect(StatusCode::FOUND, login.url.as_str());
    reply::set_cookies(&mut response, set);
    app.metrics.login_started();
    Ok(response)
}

/// Expires login transactions beyond the newest `MAX_PENDING_LOGINS - 1` (one slot is for
/// the login being started), and any that no longer open.
fn prune_transactions(app: &App, jar: &RequestCookies<'_>, now: u64) -> Vec<String> {
    let ring = app.keys();
    let mut live = Vec::new();
    let mut expire = Vec::new();
    for spec in app.cookies.transactions(jar) {
        let started = spec
            .open(jar, &ring, now)
            .ok()
            .and_then(|o| serde_json::from_slice::<Transaction>(o.payload()).ok())
            .map(|tx| tx.started_ms);
        match started {
            Some(started) => live.push((started, spec)),
            None => expire.extend(spec.clear(jar)),
        }
    }
    // Newest first; the oldest beyond the cap are expired.
    live.sort_by_key(|(started, _)| std::cmp::Reverse(*started));
    for (_, spec) in live.iter().skip(MAX_PENDING_LOGINS - 1) {
        expire.extend(spec.clear(jar));
    }
    expire
}

/// `GET /bff/callback`: completes the login. Whatever happens, the transaction cookie of
/// this state is expired in the answer: a transaction is used at most once.
pub async fn callback(
    app: &App,
    req: &Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Error> {
    let query = req.uri().query().unwrap_or("");
    let jar = app.request_cookies(req);
    let mut clear_tx = Vec::new();
    let parsed = if query.len() > MAX_CALLBACK_QUERY {
        Err(Error::BadRequest("The login answer is too long."))
    } else {
        CallbackParams::parse(query)
    };
    let result = match parsed {
        Err(e) => Err(e),
        Ok(params) => {
            let tx_spec = params
                .state
                .as_deref()
                .and_then(|s| app.cookies.transaction(s));
            clear_tx = tx_spec.as_ref().map(|s| s.clear(&jar)).unwrap_or_default();
            complete(app, &jar, &params, tx_spec.as_ref()).await
        }
    };
    match &result {
        Ok(_) => app.metrics.login_finished(true),
        Err(e) => {
            app.metrics.login_finished(false);
            tracing::warn!(error = %e, "login callback refused");
        }
    }
    let mut response = result.unwrap_or_else(Error::into_response);
    reply::set_cookies(&mut response, clear_tx);
    // The callback URL carries the code: never leak it through Referer.
    response.headers_mut().insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

async fn complete(
    app: &App,
    jar: &RequestCookies<'_>,
    params: &CallbackParams,
    tx_spec: Option<&crate::cookies::CookieSpec>,
) -> Result<Response<Body>, Error> {
    let state = params
        .state
        .as_deref()
        .ok_or_else(|| Error::LoginFailed("no state".into()))?;
    let tx_spec = tx_spec.ok_or_else(|| Error::LoginFailed("malformed state".into()))?;
    let ring = app.keys();
    let now = now_secs();
    let opened = tx_spec.open(jar, &ring, now).map_err(|e| {
        Error::LoginFailed(format!(
            "no login transaction for this state ({})",
            e.as_str()
        ))
    })?;
    let tx: Transaction = serde_json::from_slice(opened.payload())
        .map_err(|_| Error::LoginFailed("undecodable login transaction".into()))?;
    if !bool::from(tx.state.expose().as_bytes().ct_eq(state.as_bytes())) {
        return Err(Error::LoginFailed("state mismatch".into()));
    }
    let provider = app.provider().await?;
    // RFC 9207: the issuer that answered must be the one we asked; a provider that
    // promises the parameter must send it (mix-up defence).
    match params.iss.as_deref() {
        Some(iss) if iss != provider.issuer() => {
            return Err(Error::LoginFailed(
                "authorization response from another issuer".into(),
            ));
        }
        None if provider.sends_iss_parameter() => {
            return Err(Error::LoginFailed(
                "authorization response without iss".into(),
            ));
        }
        _ => {}
    }
    if let Some(error) = &params.error {
        return Err(Error::LoginFailed(format!(
            "provider answered error={}",
            sanitize(error)
        )));
    }
    let code = params
        .code
        .as_deref()
        .ok_or_else(|| Error::LoginFailed("no code".into()))?;
    let dpop_key = tx
        .dpop_key
        .as_ref()
        .map(oidc::proof_key)
        .transpose()
        .map_err(|_| Error::LoginFailed("undecodable DPoP key in the login transaction".into()))?;
    let tokens = provider
        .finish_login(code, &tx.pkce_verifier, &tx.nonce, dpop_key.as_ref())
        .await
        .map_err(|e| match e {
            OidcError::Unavailable(m) => Error::ProviderUnavailable(m),
            OidcError::Refused(m) => {
                Error::LoginFailed(format!("token endpoint refused: {}", sanitize(&m)))
            }
            OidcError::Invalid(m) => Error::ProviderInvalid(m),
        })?;

    // A new session never reuses anything of an old one: new id, new cookies, and every
    // chunk the request carried beyond the new ones is expired (session fixation).
    let session = Session {
        id: session::random_id().map_err(|e| Error::Internal(e.to_string()))?,
        access_token: tokens.access_token,
        access_expires_at: tokens.access_expires_at,
        refresh_token: tokens.refresh_token,
        sub: tokens.sub,
        sid: tokens.sid,
        created_at: now,
        last_seen: now,
        dpop_key: tx.dpop_key,
    };
    let ctx = app.ctx(jar, &ring, now);
    let mut set = ctx.write_session(&session).map_err(jar::write_failure)?;
    let profile = Profile {
        session_id: session.id.clone(),
        id_token: Some(tokens.id_token),
        claims: tokens.claims,
    };
    set.extend(write_profile_within_cap(&ctx, &session, profile)?);
    let mut response = reply::redirect(StatusCode::FOUND, &tx.return_to);
    reply::set_cookies(&mut response, set);
    tracing::info!("login completed");
    Ok(response)
}

/// Writes the profile, shedding what it can when it would pass the chunk cap: first the
/// ID token (logout then names the client instead of hinting the token), then every
/// claim but `sub` and `sid`. Never cookies the browser would refuse.
fn write_profile_within_cap(
    ctx: &jar::Ctx<'_>,
    session: &Session,
    mut profile: Profile,
) -> Result<Vec<String>, Error> {
    let write = |p: &Profile| ctx.write_profile(session, p);
    match write(&profile) {
        Err(WriteError::TooManyChunks { .. }) => {}
        other => return other.map_err(jar::write_failure),
    }
    tracing::warn!("profile too large for the cookie cap: dropping the ID token");
    profile.id_token = None;
    match write(&profile) {
        Err(WriteError::TooManyChunks { .. }) => {}
        other => return other.map_err(jar::write_failure),
    }
    tracing::warn!("profile still too large: keeping only sub and sid");
    profile.claims.retain(|k, _| k == "sub" || k == "sid");
    write(&profile).map_err(jar::write_failure)
}

/// The parameters of an authorization response (RFC 6749 §4.1.2, RFC 9207).
#[derive(Debug, Default)]
pub(crate) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

impl CallbackParams {
    /// Parses the query; a parameter given twice is refused (RFC 6749 §3.1: "parameters
    /// MUST NOT be included more than once").
    pub(crate) fn parse(query: &str) -> Result<Self, Error> {
        let mut p = CallbackParams::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "code" => &mut p.code,
                "state" => &mut p.state,
                "iss" => &mut p.iss,
                "error" => &mut p.error,
                _ => continue,
            };
            if slot.replace(v.into_owned()).is_some() {
                return Err(Error::BadRequest("A login parameter was repeated."));
            }
        }
        Ok(p)
    }
}

/// The single value of `name` in a query; repeated is an error.
fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, Error> {
    let mut found = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == name && found.replace(v.into_owned()).is_some() {
            return Err(Error::BadRequest("A parameter was repeated."));
        }
    }
    Ok(found)
}

/// `Some(path)` when `candidate` is a path on this site that no browser can read as
/// another origin: it starts with one `/` not followed by `/` or `\`, and has no control
/// characters, no backslash and no scheme-like prefix. Query and fragment are kept.
pub fn local_path(candidate: &str) -> Option<String> {
    let bytes = candidate.as_bytes();
    let ok = !candidate.is_empty()
        && candidate.len() <= MAX_RETURN_TO
        && bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && !bytes.iter().any(|b| b.is_ascii_control() || *b == b'\\' || *b == b' ')
        // Browsers strip tabs and newlines from URLs; percent-encoded ones are decoded
        // later by some servers: refuse encoded slashes, backslashes and controls too.
        && !contains_ignore_case(candidate, "%2f")
        && !contains_ignore_case(candidate, "%5c")
        && !contains_ignore_case(candidate, "%0")
        && !contains_ignore_case(candidate, "%1")
        && !contains_ignore_case(candidate, "%7f");
    if !ok {
        return None;
    }
    // Only ASCII survives into a Location header unescaped.
    if !candidate.is_ascii() {
        return None;
    }
    Some(candidate.to_owned())
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_ascii_lowercase().contains(needle)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A provider-chosen string as it may appear in a log line: short, printable ASCII.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_return_to_other_origin() {
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/%2F%2Fevil.example",
            "/%5cevil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/a\r\nSet-Cookie: x=y",
            "/%0d%0aSet-Cookie:x",
            "/ space",
            "/caf\u{e9}",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
        for good in ["/", "/app", "/app/page?x=1&y=%20#frag", "/a/b/../c"] {
            assert_eq!(local_path(good).as_deref(), Some(good));
        }
        assert_eq!(local_path(&format!("/{}", "a".repeat(MAX_RETURN_TO))), None);
    }

    #[test]
    fn refuses_repeated_callback_parameters() {
        assert!(CallbackParams::parse("code=a&state=b&code=c").is_err());
        let p = CallbackParams::parse("code=a&state=b&iss=http%3A%2F%2Fop&extra=1").unwrap();
        assert_eq!(p.code.as_deref(), Some("a"));
        assert_eq!(p.iss.as_deref(), Some("http://op"));
        assert!(query_param(Some("returnTo=/a&returnTo=/b"), "returnTo").is_err());
    }

    #[test]
    fn sanitize_keeps_logs_clean() {
        assert_eq!(sanitize("invalid_grant\r\nX: y"), "invalid_grantX:y");
        assert_eq!(sanitize(&"a".repeat(100)).len(), 64);
    }
}
