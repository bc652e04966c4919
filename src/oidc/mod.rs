//! The OpenID Provider as sealgate sees it: discovery and the JWKS (re-fetched when an ID
//! token names an unknown key) here; the ID token checks in `id_token`, the grants (login,
//! code exchange, userinfo, refresh, revocation, end-session URL) in `grants`, and why a
//! refresh failed in `refresh_failure`.
//!
//! Knows nothing of cookies or HTTP answers: it returns tokens and claims, or an `OidcError`
//! that says whether the provider was unreachable, refused, or sent something invalid.

mod grants;
mod id_token;
mod logout_token;
mod refresh_failure;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
    CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, ClientId, ClientSecret, DiscoveryError, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySetUrl, ProviderMetadata, RedirectUrl,
    TokenUrl,
};
use serde::{Deserialize, Serialize};
use url::Url;

pub use self::grants::{LoginStart, LoginTokens, RefreshedTokens};
pub use self::logout_token::{LOGOUT_TOKEN_MAX, LogoutClaims, LogoutTokenError};
pub use self::refresh_failure::{RefreshError, RefreshFailure};
// Call sites outside `oidc` move to `crate::clock`; this keeps them building meanwhile.
pub use crate::config::ClientAuthMethod as ClientAuth;
use crate::http_client::{HttpClient, HttpError};
use crate::secret::SecretString;
use crate::sync;

/// The fewest seconds between two JWKS fetches triggered by unknown key ids, so that a
/// stream of forged tokens cannot turn sealgate into a JWKS hammer.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

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

    /// The provider's keys as last fetched.
    fn current_jwks(&self) -> Arc<CoreJsonWebKeySet> {
        sync::read(&self.jwks).keys.clone()
    }

    /// Fetches the JWKS again for a key id it did not hold, at most once per
    /// `JWKS_REFETCH_INTERVAL`.
    async fn refetch_jwks(&self) -> Result<Arc<CoreJsonWebKeySet>, OidcError> {
        let recent = sync::read(&self.jwks)
            .refetched
            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL);
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
        let mut slot = sync::write(&self.jwks);
        *slot = Jwks {
            keys: keys.clone(),
            refetched: Some(Instant::now()),
        };
        tracing::info!(issuer = %self.issuer.as_str(), "re-fetched the provider's JWKS for an unknown key id");
        Ok(keys)
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

/// An outbound failure, by kind: a too large answer is invalid, the rest unavailable.
fn http_error(e: HttpError) -> OidcError {
    match e {
        HttpError::TooLarge(n) => OidcError::Invalid(format!("answer larger than {n} bytes")),
        HttpError::Timeout(_)
        | HttpError::Connect(_)
        | HttpError::Exchange(_)
        | HttpError::Tls(_) => OidcError::Unavailable(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
