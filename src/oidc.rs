//! The OpenID Provider as sealgate sees it: discovery, the JWKS (re-fetched when an ID token
//! names an unknown key), the authorization URL, the code exchange with ID token
//! validation, userinfo, refresh, revocation and the end-session URL.
//!
//! Knows nothing of cookies or HTTP answers: it returns tokens and claims, or an `OidcError`
//! that says whether the provider was unreachable, refused, or sent something invalid.

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
    AdditionalProviderMetadata, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, DiscoveryError, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IssuerUrl, JsonWebKeySetUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadata, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse, TokenUrl,
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
        let sub = self.verify_id_token(id_token, nonce).await?;
        let raw_id_token = id_token.to_string();
        let mut claims = jwt_payload(&raw_id_token)?;
        let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        claims.retain(|k, _| !PROTOCOL_CLAIMS.contains(&k.as_str()));
        let access_token = SecretString::new(response.access_token().secret().clone());
        if let Some(userinfo) = self.userinfo(&access_token, &sub).await {
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

    /// A refresh grant. `Refused` means the refresh token is dead (`invalid_grant`):
    /// the session is over; `Unavailable` means try again later and keep the session.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> Result<RefreshedTokens, OidcError> {
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let response = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
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

    /// Verifies the ID token, re-fetching the JWKS once (rate-limited) when no key matches,
    /// so that a provider's key rotation never breaks logins. Returns `sub`.
    async fn verify_id_token(
        &self,
        id_token: &CoreIdToken,
        nonce: &SecretString,
    ) -> Result<String, OidcError> {
        let nonce = Nonce::new(nonce.expose().to_owned());
        let keys = self.current_jwks();
        match self.check_claims(id_token, &nonce, keys) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let keys = self.refetch_jwks().await?;
                self.check_claims(id_token, &nonce, keys)
                    .map_err(|e| OidcError::Invalid(format!("ID token: {e}")))
            }
            other => other.map_err(|e| OidcError::Invalid(format!("ID token: {e}"))),
        }
    }

    fn check_claims(
        &self,
        id_token: &CoreIdToken,
        nonce: &Nonce,
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

    /// The userinfo claims, when the provider has the endpoint and answers JSON for the
    /// same subject; `None` (logged) otherwise, and the ID token's claims are used.
    pub(crate) async fn userinfo(
        &self,
        access_token: &SecretString,
        sub: &str,
    ) -> Option<Map<String, Value>> {
        let url = self.client.user_info_url()?.url().clone();
        let request = http::Request::get(url.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", access_token.expose()),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .ok()?;
        let response = match self.http.fetch(request).await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::warn!(status = %r.status(), "userinfo refused; using the ID token's claims");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "userinfo failed; using the ID token's claims");
                return None;
            }
        };
        let claims: Map<String, Value> = serde_json::from_slice(response.body()).ok()?;
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            tracing::warn!("userinfo answered for another subject; ignored");
            return None;
        }
        Some(claims)
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
        RequestTokenError::Parse(e, body) => OidcError::Invalid(format!(
            "token answer ({} bytes) does not parse: {e}",
            body.len()
        )),
        RequestTokenError::Other(s) => OidcError::Invalid(format!("token answer: {s}")),
    }
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
