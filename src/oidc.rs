//! The OpenID Provider as sealgate sees it: discovery, the JWKS (re-fetched when an ID token
//! names an unknown key), the authorization URL, the code exchange with ID token
//! validation, userinfo, refresh, revocation and the end-session URL.
//!
//! Knows nothing of cookies or HTTP answers: it returns tokens and claims, or an `OidcError`
//! that says whether the provider was unreachable, refused, or sent something invalid.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AdditionalProviderMetadata, AuthType, AuthorizationCode,
    ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, DiscoveryError, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySetUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, SignatureVerificationError, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

pub use crate::config::ClientAuthMethod as ClientAuth;
use crate::http_client::{HttpClient, HttpError};
use crate::secret::SecretString;

/// The fewest seconds between two JWKS fetches triggered by unknown key ids, so that a
/// stream of forged tokens cannot turn sealgate into a JWKS hammer.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How far an ID token's `iat` may lie in the future (clock skew) or the past.
const IAT_FUTURE_LEEWAY: i64 = 300;
const IAT_MAX_AGE: i64 = 600;
/// Protocol claims that say nothing about the user: not returned by `/bff/user`.
const PROTOCOL_CLAIMS: &[&str] = &[
    "iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "s_hash", "azp", "jti",
];

/// What the provider did wrong, by kind: the caller maps kinds to HTTP answers.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Unreachable, timed out, or a 5xx: worth retrying later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// An OAuth error answer (`invalid_grant`, ...): the request will not succeed as is.
    #[error("provider refused: {0}")]
    Refused(String),
    /// A malformed answer, or one that fails validation (signature, claims, sizes).
    #[error("invalid provider response: {0}")]
    Invalid(String),
}

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

/// The client's side of the relationship, from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Exactly as configured; compared character for character with discovery's.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Scopes besides `openid`, which is always sent.
    pub scopes: Vec<String>,
    pub redirect_uri: Url,
    pub post_logout_redirect_uri: Url,
    pub allow_insecure_http: bool,
    pub client_auth: ClientAuth,
}

/// Discovery fields beyond the core set that sealgate uses.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    #[serde(default)]
    end_session_endpoint: Option<Url>,
    #[serde(default)]
    revocation_endpoint: Option<Url>,
    /// RFC 9207.
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The client type, spelled once: authorization and token endpoints resolved at start-up.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointMaybeSet,
>;

/// A login in progress: the URL to send the browser to and what the callback must check.
#[derive(Debug)]
pub struct LoginStart {
    pub url: Url,
    pub state: SecretString,
    pub nonce: SecretString,
    pub pkce_verifier: SecretString,
}

/// The result of a successful code exchange, the ID token validated.
#[derive(Debug)]
pub struct LoginTokens {
    pub access_token: SecretString,
    /// Unix seconds, when the provider said how long the token lives.
    pub access_expires_at: Option<u64>,
    pub refresh_token: Option<SecretString>,
    pub id_token: SecretString,
    pub sub: String,
    pub sid: Option<String>,
    /// The user's claims: userinfo over the ID token's non-protocol claims.
    pub claims: Map<String, Value>,
}

/// The result of a refresh grant.
#[derive(Debug)]
pub struct RefreshedTokens {
    pub access_token: SecretString,
    pub access_expires_at: Option<u64>,
    /// A rotated refresh token, when the provider sent one.
    pub refresh_token: Option<SecretString>,
}

struct Jwks {
    keys: Arc<CoreJsonWebKeySet>,
    /// When an unknown kid last made us re-fetch; `None` until the first time, so a key
    /// rotated right after start-up is fetched at once.
    refetched: Option<Instant>,
}

/// A discovered provider, ready for logins.
pub struct Provider {
    settings: Settings,
    issuer: IssuerUrl,
    client: Client,
    http: HttpClient,
    jwks_uri: JsonWebKeySetUrl,
    jwks: RwLock<Jwks>,
    signing_algs: Vec<CoreJwsSigningAlgorithm>,
    extra: ExtraMetadata,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Fetches the discovery document and the JWKS, and checks them: the issuer must match
    /// exactly (OpenID Connect Discovery §4.3), every endpoint must be https unless
    /// `allow_insecure_http`, and there must be a token endpoint and an asymmetric ID token
    /// signing algorithm.
    pub async fn discover(settings: Settings, http: HttpClient) -> Result<Self, OidcError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| OidcError::Invalid(format!("issuer: {e}")))?;
        let metadata = Metadata::discover_async(issuer.clone(), &http)
            .await
            .map_err(discovery_error)?;
        let https_only = |what: &str, url: &Url| {
            if url.scheme() == "https" || (settings.allow_insecure_http && url.scheme() == "http") {
                Ok(())
            } else {
                Err(OidcError::Invalid(format!("{what} {url} is not https")))
            }
        };
        https_only(
            "authorization_endpoint",
            metadata.authorization_endpoint().url(),
        )?;
        let token_url = metadata
            .token_endpoint()
            .cloned()
            .ok_or_else(|| OidcError::Invalid("discovery has no token_endpoint".into()))?;
        https_only("token_endpoint", token_url.url())?;
        https_only("jwks_uri", metadata.jwks_uri().url())?;
        if let Some(u) = metadata.userinfo_endpoint() {
            https_only("userinfo_endpoint", u.url())?;
        }
        let extra = metadata.additional_metadata().clone();
        if let Some(u) = &extra.revocation_endpoint {
            https_only("revocation_endpoint", u)?;
        }
        if let Some(u) = &extra.end_session_endpoint {
            https_only("end_session_endpoint", u)?;
        }
        // Only asymmetric algorithms: an HMAC-signed ID token would be keyed with our client
        // secret, and "none" is no signature at all.
        let signing_algs: Vec<_> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| is_asymmetric(alg))
            .cloned()
            .collect();
        if signing_algs.is_empty() {
            return Err(OidcError::Invalid(
                "id_token_signing_alg_values_supported lists no asymmetric algorithm".into(),
            ));
        }
        let jwks_uri = metadata.jwks_uri().clone();
        let jwks = Jwks {
            keys: Arc::new(metadata.jwks().clone()),
            refetched: None,
        };
        let redirect = RedirectUrl::from_url(settings.redirect_uri.clone());
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            Some(ClientSecret::new(
                settings.client_secret.expose().to_owned(),
            )),
        )
        .set_token_uri(TokenUrl::from_url(token_url.url().clone()))
        .set_redirect_uri(redirect)
        .set_auth_type(match settings.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post => AuthType::RequestBody,
        });
        Ok(Self {
            settings,
            issuer,
            client,
            http,
            jwks_uri,
            jwks: RwLock::new(jwks),
            signing_algs,
            extra,
        })
    }

    /// The issuer, exactly as discovery confirmed it.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// Whether the provider promises the RFC 9207 `iss` parameter on authorization answers.
    pub fn sends_iss_parameter(&self) -> bool {
        self.extra.authorization_response_iss_parameter_supported
    }

    /// A new login: fresh state, nonce and PKCE (S256) verifier, and the URL carrying them.
    pub fn start_login(&self) -> LoginStart {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.settings.scopes {
            // CoreClient sends `openid` itself.
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        LoginStart {
            url,
            state: SecretString::new(state.into_secret()),
            nonce: SecretString::new(nonce.secret().clone()),
            pkce_verifier: SecretString::new(verifier.into_secret()),
        }
    }

    /// Exchanges the code (with the PKCE verifier) and validates the ID token: signature by
    /// a provider key with an advertised asymmetric algorithm, `iss`, `aud`, `azp`, `exp`,
    /// `iat` and `nonce`. Then reads userinfo, when there is an endpoint, for the claims.
    pub async fn finish_login(
        &self,
        code: &str,
        pkce_verifier: &SecretString,
        nonce: &SecretString,
    ) -> Result<LoginTokens, OidcError> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.expose().to_owned()))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Invalid("token response has no id_token".into()))?;
        let sub = self
            .verify_id_token(id_token, nonce, response.access_token())
            .await?;
        let raw_id_token = id_token.to_string();
        let mut claims = jwt_payload(&raw_id_token)?;
        let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        claims.retain(|k, _| !PROTOCOL_CLAIMS.contains(&k.as_str()));
        let access_token = SecretString::new(response.access_token().secret().clone());
        if let Some(userinfo) = self.userinfo(&access_token, &sub).await? {
            claims.extend(userinfo);
        }
        Ok(LoginTokens {
            access_expires_at: response
                .expires_in()
                .map(|d| now_secs().saturating_add(d.as_secs())),
            access_token,
            refresh_token: response
                .refresh_token()
                .map(|t| SecretString::new(t.secret().clone())),
            id_token: SecretString::new(raw_id_token),
            sub,
            sid,
            claims,
        })
    }

    /// A refresh grant. Only `RefreshFailure::InvalidGrant` means the refresh token is
    /// dead; see `RefreshFailure` for the rest. The answer's status is noted on the way
    /// through, because the crate's errors drop it and a 200 that does not parse (the grant
    /// may have been spent) must not be taken for an outage.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> Result<RefreshedTokens, RefreshError> {
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let http = NotingStatus {
            http: &self.http,
            status: AtomicU16::new(0),
        };
        let response = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&http)
            .await
            .map_err(|e| refresh_error(e, http.status.load(Ordering::Relaxed)))?;
        if response.access_token().secret().is_empty() {
            return Err(RefreshError {
                class: RefreshFailure::Unparsable,
                detail: "token answer with an empty access_token".into(),
            });
        }
        Ok(RefreshedTokens {
            access_token: SecretString::new(response.access_token().secret().clone()),
            access_expires_at: response
                .expires_in()
                .map(|d| now_secs().saturating_add(d.as_secs())),
            refresh_token: response
                .refresh_token()
                .map(|t| SecretString::new(t.secret().clone())),
        })
    }

    /// Revokes a refresh token at the revocation endpoint (RFC 7009), if the provider has
    /// one. Returns whether a revocation was confirmed.
    pub async fn revoke(&self, refresh_token: &SecretString) -> Result<bool, OidcError> {
        let Some(endpoint) = &self.extra.revocation_endpoint else {
            return Ok(false);
        };
        // Built in a block: the form serializer is not `Send` and must not live across
        // the await below.
        let request = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", refresh_token.expose());
            form.append_pair("token_type_hint", "refresh_token");
            let mut request = http::Request::post(endpoint.as_str())
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(http::header::ACCEPT, "application/json");
            match self.settings.client_auth {
                ClientAuth::Basic => {
                    request = request.header(http::header::AUTHORIZATION, self.basic_auth());
                }
                ClientAuth::Post => {
                    form.append_pair("client_id", &self.settings.client_id);
                    form.append_pair("client_secret", self.settings.client_secret.expose());
                }
            }
            let body = SecretString::new(form.finish());
            request
                .body(body.expose().as_bytes().to_vec())
                .map_err(|e| OidcError::Invalid(e.to_string()))?
        };
        let response = self.http.fetch(request).await.map_err(http_error)?;
        if response.status().is_success() {
            Ok(true)
        } else if response.status().is_server_error() {
            Err(OidcError::Unavailable(format!(
                "revocation answered {}",
                response.status()
            )))
        } else {
            Err(OidcError::Refused(format!(
                "revocation answered {}",
                response.status()
            )))
        }
    }

    /// Where to send the browser to end the provider's session (RP-Initiated Logout 1.0),
    /// if the provider has an end-session endpoint.
    pub fn end_session_url(&self, id_token_hint: Option<&SecretString>) -> Option<Url> {
        let mut url = self.extra.end_session_endpoint.clone()?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = id_token_hint {
                q.append_pair("id_token_hint", hint.expose());
            }
            q.append_pair("client_id", &self.settings.client_id);
            q.append_pair(
                "post_logout_redirect_uri",
                self.settings.post_logout_redirect_uri.as_str(),
            );
        }
        Some(url)
    }

    fn basic_auth(&self) -> String {
        // RFC 6749 §2.3.1: both parts form-urlencoded before base64.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let pair = format!(
            "{}:{}",
            enc(&self.settings.client_id),
            enc(self.settings.client_secret.expose())
        );
        format!("Basic {}", STANDARD.encode(pair))
    }

    /// Verifies the ID token (and its `at_hash` against `access_token`), re-fetching the
    /// JWKS once (rate-limited) when no key matches, so that a provider's key rotation never
    /// breaks logins. Returns `sub`.
    async fn verify_id_token(
        &self,
        id_token: &CoreIdToken,
        nonce: &SecretString,
        access_token: &AccessToken,
    ) -> Result<String, OidcError> {
        let nonce = Nonce::new(nonce.expose().to_owned());
        let keys = self.current_jwks();
        match self.check_claims(id_token, &nonce, access_token, keys) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let keys = self.refetch_jwks().await?;
                self.check_claims(id_token, &nonce, access_token, keys)
                    .map_err(|e| OidcError::Invalid(format!("ID token: {e}")))
            }
            other => other.map_err(|e| OidcError::Invalid(format!("ID token: {e}"))),
        }
    }

    fn check_claims(
        &self,
        id_token: &CoreIdToken,
        nonce: &Nonce,
        access_token: &AccessToken,
        keys: Arc<CoreJsonWebKeySet>,
    ) -> Result<String, ClaimsVerificationError> {
        let verifier = CoreIdTokenVerifier::new_confidential_client(
            ClientId::new(self.settings.client_id.clone()),
            ClientSecret::new(self.settings.client_secret.expose().to_owned()),
            self.issuer.clone(),
            (*keys).clone(),
        )
        .set_allowed_algs(self.signing_algs.iter().cloned())
        .set_issue_time_verifier_fn(|iat| {
            let now = chrono_now();
            let iat = iat.timestamp();
            if iat > now + IAT_FUTURE_LEEWAY {
                Err(format!("iat {iat} is in the future"))
            } else if iat < now - IAT_MAX_AGE {
                Err(format!("iat {iat} is too old"))
            } else {
                Ok(())
            }
        });
        let claims = id_token.claims(&verifier, nonce)?;
        // OpenID Connect Core §3.1.3.7 steps 4-5, which the crate leaves to its users: with
        // several audiences `azp` must be present, and when present it must be us.
        let ours = self.settings.client_id.as_str();
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != ours => {
                return Err(ClaimsVerificationError::InvalidAudience(format!(
                    "azp {} is not this client",
                    azp.as_str()
                )));
            }
            None if claims.audiences().len() > 1 => {
                return Err(ClaimsVerificationError::InvalidAudience(
                    "several audiences and no azp".into(),
                ));
            }
            _ => {}
        }
        // OpenID Connect Core §3.1.3.8: `at_hash` is optional in the code flow, but when the
        // provider sends it, it must be the left half of the hash of the access token beside
        // it, or that access token is not the one this ID token was issued with.
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(ClaimsVerificationError::SignatureVerification)?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(ClaimsVerificationError::SignatureVerification)?;
            let actual = AccessTokenHash::from_token(access_token, alg, key)
                .map_err(|e| ClaimsVerificationError::Unsupported(format!("at_hash: {e}")))?;
            if actual != *expected {
                return Err(ClaimsVerificationError::Other(
                    "at_hash does not match the access token".into(),
                ));
            }
        }
        Ok(claims.subject().as_str().to_owned())
    }

    fn current_jwks(&self) -> Arc<CoreJsonWebKeySet> {
        match self.jwks.read() {
            Ok(j) => j.keys.clone(),
            Err(poisoned) => poisoned.into_inner().keys.clone(),
        }
    }

    async fn refetch_jwks(&self) -> Result<Arc<CoreJsonWebKeySet>, OidcError> {
        let recent = match self.jwks.read() {
            Ok(j) => j
                .refetched
                .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL),
            Err(_) => false,
        };
        if recent {
            // Someone fetched moments ago: the key really is unknown.
            return Err(OidcError::Invalid(
                "ID token signed by an unknown key".into(),
            ));
        }
        let keys = CoreJsonWebKeySet::fetch_async(&self.jwks_uri, &self.http)
            .await
            .map_err(discovery_error)?;
        let keys = Arc::new(keys);
        let mut slot = self.jwks.write().unwrap_or_else(|p| p.into_inner());
        *slot = Jwks {
            keys: keys.clone(),
            refetched: Some(Instant::now()),
        };
        tracing::info!(issuer = %self.issuer.as_str(), "re-fetched the provider's JWKS for an unknown key id");
        Ok(keys)
    }

    /// The userinfo claims, when the provider has the endpoint and answers JSON; `None`
    /// (logged) when it fails, and the ID token's claims are used. An answer for another
    /// subject, or for none, is refused (OpenID Connect Core §5.3.2: its `sub` MUST match
    /// the ID token's): the login fails rather than mixing two users.
    pub(crate) async fn userinfo(
        &self,
        access_token: &SecretString,
        sub: &str,
    ) -> Result<Option<Map<String, Value>>, OidcError> {
        let Some(url) = self.client.user_info_url() else {
            return Ok(None);
        };
        let Ok(request) = http::Request::get(url.url().as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", access_token.expose()),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
        else {
            return Ok(None);
        };
        let response = match self.http.fetch(request).await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::warn!(status = %r.status(), "userinfo refused; using the ID token's claims");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "userinfo failed; using the ID token's claims");
                return Ok(None);
            }
        };
        let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(response.body()) else {
            tracing::warn!("userinfo is not a JSON object; using the ID token's claims");
            return Ok(None);
        };
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(OidcError::Invalid(
                "userinfo answered for another subject".into(),
            ));
        }
        Ok(Some(claims))
    }
}

/// The outbound client, noting the status of the answer it fetched.
struct NotingStatus<'a> {
    http: &'a HttpClient,
    status: AtomicU16,
}

impl<'c> openidconnect::AsyncHttpClient<'c> for NotingStatus<'_> {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.http.fetch(request).await?;
            self.status
                .store(response.status().as_u16(), Ordering::Relaxed);
            Ok(response)
        })
    }
}

fn is_asymmetric(alg: &CoreJwsSigningAlgorithm) -> bool {
    use CoreJwsSigningAlgorithm as A;
    matches!(
        alg,
        A::RsaSsaPkcs1V15Sha256
            | A::RsaSsaPkcs1V15Sha384
            | A::RsaSsaPkcs1V15Sha512
            | A::RsaSsaPssSha256
            | A::RsaSsaPssSha384
            | A::RsaSsaPssSha512
            | A::EcdsaP256Sha256
            | A::EcdsaP384Sha384
            | A::EdDsa
    )
}

/// The payload of a JWT whose signature was already verified, as a JSON object.
fn jwt_payload(jwt: &str) -> Result<Map<String, Value>, OidcError> {
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| OidcError::Invalid("ID token is not a JWS".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| OidcError::Invalid("ID token payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| OidcError::Invalid("ID token payload is not a JSON object".into()))
}

fn http_error(e: HttpError) -> OidcError {
    match e {
        HttpError::TooLarge(n) => OidcError::Invalid(format!("answer larger than {n} bytes")),
        HttpError::Timeout(_)
        | HttpError::Connect(_)
        | HttpError::Exchange(_)
        | HttpError::Tls(_) => OidcError::Unavailable(e.to_string()),
    }
}

fn token_error<RE: std::fmt::Debug + openidconnect::ErrorResponse + 'static>(
    e: RequestTokenError<HttpError, RE>,
) -> OidcError {
    match e {
        RequestTokenError::Request(e) => http_error(e),
        RequestTokenError::ServerResponse(r) => OidcError::Refused(
            serde_json::to_value(&r)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "error".into()),
        ),
        RequestTokenError::Parse(e, body) => {
            OidcError::Invalid(format!("token answer {}", parse_failure(&e, &body)))
        }
        RequestTokenError::Other(s) => OidcError::Invalid(format!("token answer: {s}")),
    }
}

/// A refresh grant's failure, by class. `status` is the answer's, 0 when there was none.
fn refresh_error<RE: std::fmt::Debug + openidconnect::ErrorResponse + 'static>(
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
fn parse_failure(e: &serde_path_to_error::Error<serde_json::Error>, body: &[u8]) -> String {
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

fn discovery_error(e: DiscoveryError<HttpError>) -> OidcError {
    match e {
        DiscoveryError::Request(e) => http_error(e),
        DiscoveryError::Response(status, _, msg) if status.is_server_error() => {
            OidcError::Unavailable(format!("{status}: {msg}"))
        }
        other => OidcError::Invalid(other.to_string()),
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn chrono_now() -> i64 {
    i64::try_from(now_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_payload_reads_the_middle_part() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","sid":"s"}"#);
        let m = jwt_payload(&format!("h.{payload}.sig")).unwrap();
        assert_eq!(m["sub"], "a");
        assert!(jwt_payload("nodots").is_err());
        assert!(jwt_payload("a.!!!.c").is_err());
        let array = URL_SAFE_NO_PAD.encode(b"[1]");
        assert!(jwt_payload(&format!("h.{array}.s")).is_err());
    }

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

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        assert!(is_asymmetric(
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
        ));
        assert!(is_asymmetric(&CoreJwsSigningAlgorithm::EcdsaP256Sha256));
        assert!(!is_asymmetric(&CoreJwsSigningAlgorithm::HmacSha256));
        assert!(!is_asymmetric(&CoreJwsSigningAlgorithm::None));
    }
}
