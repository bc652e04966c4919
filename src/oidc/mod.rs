//! The OpenID Provider as sealgate sees it: discovery and the JWKS (re-fetched when an ID
//! token names an unknown key) here; the ID token checks in `id_token`, the grants (login,
//! code exchange, userinfo, refresh, revocation, end-session URL) in `grants`, and why a
//! refresh failed in `refresh_failure`. How the client authenticates (secret or
//! `private_key_jwt`) is `client_auth`'s, pushed authorization requests `par`'s, and DPoP
//! proofs at the provider `dpop`'s.
//!
//! Knows nothing of cookies or HTTP answers: it returns tokens and claims, or an `OidcError`
//! that says whether the provider was unreachable, refused, or sent something invalid.

mod client_auth;
mod dpop;
mod par;

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

use self::client_auth::Credentials;
pub use self::client_auth::{ClientKeyError, create_key_file};
use self::dpop::NonceSlot;
pub use self::dpop::{proof_key, seal_key};

pub use self::grants::{LoginStart, LoginTokens, RefreshedTokens};
pub use self::logout_token::{LOGOUT_TOKEN_MAX, LogoutClaims, LogoutTokenError};
pub use self::refresh_failure::{RefreshError, RefreshFailure};
// Call sites outside `oidc` move to `crate::clock`; this keeps them building meanwhile.
pub use crate::config::ClientAuthMethod as ClientAuth;
use crate::config::{ClientKey, Par};
use crate::http_client::{HttpClient, HttpError};
use crate::jws::DpopAlg;
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
    /// With `private_key_jwt`: the signing key, and the next one (published only).
    pub client_key: Option<ClientKey>,
    pub client_key_next: Option<std::path::PathBuf>,
    pub par: Par,
    /// DPoP-bound tokens: a proof key per login, `dpop_jkt` at authorization.
    pub dpop: bool,
    /// Extra authorization request parameters (`[oidc] authorization_params`).
    pub authorization_params: Vec<(String, String)>,
}

impl Settings {
    /// Checks the client keys the settings name, as discovery will load them: for
    /// start-up, so that a bad key file stops it (exit 2) naming its configuration key.
    pub fn check_client_keys(&self) -> Result<(), ClientKeyError> {
        Credentials::load(self).map(|_| ())
    }
}

/// Discovery fields beyond the core set that sealgate uses.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    #[serde(default)]
    end_session_endpoint: Option<Url>,
    #[serde(default)]
    revocation_endpoint: Option<Url>,
    /// RFC 7662 / RFC 8414 §2: asked only whether a refresh token is dead, after an answer
    /// that does not say (`refresh_failure::is_empty_refusal`).
    #[serde(default)]
    introspection_endpoint: Option<Url>,
    /// RFC 9207.
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    /// RFC 9126 §5.
    #[serde(default)]
    pushed_authorization_request_endpoint: Option<Url>,
    #[serde(default)]
    require_pushed_authorization_requests: bool,
    /// RFC 8414 §2 (PKCE methods).
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    /// RFC 9449 §5.1.
    #[serde(default)]
    dpop_signing_alg_values_supported: Option<Vec<String>>,
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
    credentials: Credentials,
    /// Where authorization requests are pushed; `None` when they are not (RFC 9126).
    par_endpoint: Option<Url>,
    /// The provider's latest DPoP nonce (RFC 9449 §8).
    dpop_nonce: NonceSlot,
    /// The algorithm of new logins' proof keys, when `dpop` is on.
    dpop_alg: Option<DpopAlg>,
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
    /// signing algorithm; the provider must serve `response_type=code` with PKCE S256, a
    /// PAR endpoint when `par = "required"`, and ES256 or EdDSA proofs when `dpop` is on. The
    /// client keys are loaded here too.
    pub async fn discover(settings: Settings, http: HttpClient) -> Result<Self, OidcError> {
        let credentials =
            Credentials::load(&settings).map_err(|e| OidcError::Invalid(e.to_string()))?;
        if settings.client_auth == ClientAuth::PrivateKeyJwt && !settings.client_secret.is_empty() {
            tracing::warn!("oidc.client_secret is set but unused with private_key_jwt");
        }
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
        if let Some(u) = &extra.introspection_endpoint {
            https_only("introspection_endpoint", u)?;
        }
        if let Some(u) = &extra.end_session_endpoint {
            https_only("end_session_endpoint", u)?;
        }
        if let Some(u) = &extra.pushed_authorization_request_endpoint {
            https_only("pushed_authorization_request_endpoint", u)?;
        }
        let serves_code = metadata
            .response_types_supported()
            .iter()
            .any(|t| t.as_slice() == [CoreResponseType::Code]);
        let dpop_alg = check_capabilities(&settings, &extra, serves_code)?;
        let par_endpoint = match settings.par {
            Par::Off => {
                if extra.require_pushed_authorization_requests {
                    tracing::warn!(
                        "the provider requires pushed authorization requests but oidc.par = \"off\": logins will fail"
                    );
                }
                None
            }
            Par::Auto | Par::Required => extra.pushed_authorization_request_endpoint.clone(),
        };
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
        // With private_key_jwt the crate gets no secret and sends only `client_id`; the
        // assertion goes in as extra parameters (see `client_auth`).
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            credentials
                .secret()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_token_uri(TokenUrl::from_url(token_url.url().clone()))
        .set_redirect_uri(redirect)
        .set_auth_type(match settings.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post | ClientAuth::PrivateKeyJwt => AuthType::RequestBody,
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
            credentials,
            par_endpoint,
            dpop_nonce: NonceSlot::default(),
            dpop_alg,
        })
    }

    /// The public JWK Set of the client's `private_key_jwt` keys (signing key first, then
    /// the next one); `None` with a client secret.
    pub fn client_jwks(&self) -> Option<serde_json::Value> {
        self.credentials.public_jwks()
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

/// What sealgate needs of a provider besides its endpoints: the authorization code flow
/// (the only one it runs; FAPI 2.0 Security Profile §5.3.1.2 allows no other), PKCE S256
/// when the methods are listed (plain would be no protection), a PAR endpoint when
/// `par = "required"`, and with DPoP an algorithm sealgate signs proofs with (ES256 or
/// EdDSA, `jws::DpopAlg::choose`), which it returns.
fn check_capabilities(
    settings: &Settings,
    extra: &ExtraMetadata,
    serves_code: bool,
) -> Result<Option<DpopAlg>, OidcError> {
    let lists = |list: &Option<Vec<String>>, wanted: &[&str]| {
        list.as_ref()
            .is_none_or(|l| l.iter().any(|v| wanted.contains(&v.as_str())))
    };
    if !serves_code {
        return Err(OidcError::Invalid(
            "response_types_supported lacks \"code\"".into(),
        ));
    }
    if !lists(&extra.code_challenge_methods_supported, &["S256"]) {
        return Err(OidcError::Invalid(
            "code_challenge_methods_supported lacks S256".into(),
        ));
    }
    if settings.par == Par::Required && extra.pushed_authorization_request_endpoint.is_none() {
        return Err(OidcError::Invalid(
            "oidc.par = \"required\" but discovery has no pushed_authorization_request_endpoint"
                .into(),
        ));
    }
    if !settings.dpop {
        return Ok(None);
    }
    match DpopAlg::choose(extra.dpop_signing_alg_values_supported.as_deref()) {
        Some(alg) => Ok(Some(alg)),
        None => Err(OidcError::Invalid(
            "oidc.dpop is on but dpop_signing_alg_values_supported lacks ES256 and EdDSA".into(),
        )),
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
impl Settings {
    /// Settings for unit tests: a secret client of `https://op.example`.
    pub(crate) fn for_tests() -> Settings {
        Settings {
            issuer: "https://op.example".into(),
            client_id: "bff".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into()],
            redirect_uri: Url::parse("https://app.example/bff/callback").unwrap(),
            post_logout_redirect_uri: Url::parse("https://app.example/").unwrap(),
            allow_insecure_http: false,
            client_auth: ClientAuth::Basic,
            client_key: None,
            client_key_next: None,
            par: Par::Auto,
            dpop: false,
            authorization_params: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_providers_without_code_s256_par_or_a_dpop_alg_when_needed() {
        let meta =
            |json: serde_json::Value| -> ExtraMetadata { serde_json::from_value(json).unwrap() };
        let base = Settings::for_tests();
        assert!(check_capabilities(&base, &meta(serde_json::json!({})), true).is_ok());
        assert!(check_capabilities(&base, &meta(serde_json::json!({})), false).is_err());
        let plain = meta(serde_json::json!({"code_challenge_methods_supported": ["plain"]}));
        assert!(check_capabilities(&base, &plain, true).is_err());
        let required = Settings {
            par: Par::Required,
            ..Settings::for_tests()
        };
        assert!(check_capabilities(&required, &meta(serde_json::json!({})), true).is_err());
        let with_par =
            meta(serde_json::json!({"pushed_authorization_request_endpoint": "https://op/par"}));
        assert!(check_capabilities(&required, &with_par, true).is_ok());
        let dpop = Settings {
            dpop: true,
            ..Settings::for_tests()
        };
        let rsa_only = meta(serde_json::json!({"dpop_signing_alg_values_supported": ["PS256"]}));
        assert!(check_capabilities(&dpop, &rsa_only, true).is_err());
        assert_eq!(
            check_capabilities(&base, &rsa_only, true).unwrap(),
            None,
            "only checked with dpop"
        );
        let both =
            meta(serde_json::json!({"dpop_signing_alg_values_supported": ["EdDSA", "ES256"]}));
        assert_eq!(
            check_capabilities(&dpop, &both, true).unwrap(),
            Some(DpopAlg::Es256)
        );
        let ed = meta(serde_json::json!({"dpop_signing_alg_values_supported": ["EdDSA"]}));
        assert_eq!(
            check_capabilities(&dpop, &ed, true).unwrap(),
            Some(DpopAlg::EdDsa)
        );
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
