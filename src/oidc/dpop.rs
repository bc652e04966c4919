//! DPoP at the provider (RFC 9449): a proof on each token (and userinfo) request signed with
//! the session's key, the provider's server nonce remembered (§8) and the one retry it
//! asks for, and the session key's sealed form (its seed, base64url).
//!
//! Knows nothing of sessions or cookies: it signs with the key it is given.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::{RefreshError, RefreshFailure};
use crate::clock::now_secs;
use crate::http_client::{HttpClient, HttpError};
use crate::jws::{self, EdKey, JwsError};
use crate::secret::SecretString;
use crate::sync;

/// RFC 9449 §4.1.
pub(super) const DPOP: HeaderName = HeaderName::from_static("dpop");
/// RFC 9449 §8.
const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");
/// Longest server nonce kept: RFC 9449 §8.1 allows any `1*NQCHAR`; real ones are tens of
/// characters.
const MAX_NONCE: usize = 512;

/// The provider's latest DPoP nonce (any answer's `DPoP-Nonce`), for the next proofs.
#[derive(Debug, Default)]
pub(super) struct NonceSlot(Mutex<Option<String>>);

impl NonceSlot {
    fn get(&self) -> Option<String> {
        sync::lock(&self.0).clone()
    }

    /// Keeps the nonce of an answer, if it carries a well-formed one (NQCHAR: printable
    /// ASCII but `"` and `\`).
    fn note(&self, headers: &http::HeaderMap) -> Option<String> {
        let nonce = headers.get(DPOP_NONCE)?.to_str().ok()?;
        let ok = !nonce.is_empty()
            && nonce.len() <= MAX_NONCE
            && nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if !ok {
            return None;
        }
        *sync::lock(&self.0) = Some(nonce.to_owned());
        Some(nonce.to_owned())
    }
}

/// The session key's sealed form: its 32-byte seed, base64url without padding.
pub fn seal_key(key: &EdKey) -> SecretString {
    SecretString::new(URL_SAFE_NO_PAD.encode(key.seed()))
}

/// The key of a sealed seed (`Session.dpop_key`).
pub fn proof_key(sealed: &SecretString) -> Result<EdKey, JwsError> {
    let raw = zeroize::Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(sealed.expose())
            .map_err(|_| JwsError::WrongKey)?,
    );
    let seed: &[u8; 32] = raw.as_slice().try_into().map_err(|_| JwsError::WrongKey)?;
    EdKey::from_seed(seed)
}

/// A session whose sealed DPoP key does not open cannot refresh. Only sealgate seals that
/// key, so this is no provider's doing and no reason to end the session: a transient
/// class, for the log.
impl From<JwsError> for RefreshError {
    fn from(e: JwsError) -> Self {
        RefreshError {
            class: RefreshFailure::OtherError,
            detail: format!("the session's DPoP key: {e}"),
        }
    }
}

/// The outbound client for one request to the provider: with a key, each attempt carries a
/// fresh proof (`htm`, `htu` = the target without query, `iat`, `jti`, the latest nonce,
/// `ath` for a request carrying `access_token`); an answer demanding a nonce
/// (`use_dpop_nonce`, §8: a 400 from the token endpoint, a 401 from a resource) is tried
/// once more with it. Every `DPoP-Nonce` is remembered. Notes the final answer's status,
/// because the openidconnect crate's errors drop it (the refresh classes need it).
pub(super) struct ProviderClient<'a> {
    pub http: &'a HttpClient,
    pub key: Option<&'a EdKey>,
    pub nonce: &'a NonceSlot,
    pub access_token: Option<&'a SecretString>,
    pub status: AtomicU16,
}

impl<'a> ProviderClient<'a> {
    pub fn new(http: &'a HttpClient, key: Option<&'a EdKey>, nonce: &'a NonceSlot) -> Self {
        ProviderClient {
            http,
            key,
            nonce,
            access_token: None,
            status: AtomicU16::new(0),
        }
    }

    /// The status of the last answer, 0 when there was none.
    pub fn status(&self) -> u16 {
        self.status.load(Ordering::Relaxed)
    }

    pub async fn fetch(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        let Some(key) = self.key else {
            let response = self.http.fetch(request).await?;
            self.status
                .store(response.status().as_u16(), Ordering::Relaxed);
            return Ok(response);
        };
        let (parts, body) = request.into_parts();
        let mut nonce = self.nonce.get();
        let mut retried = false;
        loop {
            let mut request = http::Request::builder()
                .method(parts.method.clone())
                .uri(parts.uri.clone())
                .body(body.clone())
                .map_err(|e| HttpError::Exchange(e.to_string()))?;
            *request.headers_mut() = parts.headers.clone();
            let proof = self
                .proof(key, &parts.method, &parts.uri, nonce.as_deref())
                .map_err(|e| HttpError::Exchange(format!("DPoP proof: {e}")))?;
            request.headers_mut().insert(DPOP, proof);
            let response = self.http.fetch(request).await?;
            self.status
                .store(response.status().as_u16(), Ordering::Relaxed);
            let fresh = self.nonce.note(response.headers());
            match fresh {
                Some(fresh) if !retried && demands_nonce(&response) => {
                    tracing::debug!("provider demanded a DPoP nonce; retrying once with it");
                    nonce = Some(fresh);
                    retried = true;
                }
                _ => return Ok(response),
            }
        }
    }

    fn proof(
        &self,
        key: &EdKey,
        method: &http::Method,
        uri: &http::Uri,
        nonce: Option<&str>,
    ) -> Result<HeaderValue, JwsError> {
        let htu = url::Url::parse(&uri.to_string()).map_err(|_| JwsError::Sign)?;
        let jti = jws::random_jti()?;
        let claims = jws::dpop_claims(
            method.as_str(),
            &htu,
            now_secs(),
            &jti,
            nonce,
            self.access_token.map(SecretString::expose),
        );
        let jwt = key.sign_with_jwk("dpop+jwt", &claims)?;
        HeaderValue::from_str(&jwt).map_err(|_| JwsError::Sign)
    }
}

/// Whether an answer asks for a (new) nonce: RFC 9449 §8 (token endpoint: 400 with
/// `"error":"use_dpop_nonce"`) and §9 (a resource: 401 with
/// `WWW-Authenticate: DPoP error="use_dpop_nonce"`).
fn demands_nonce(response: &http::Response<Vec<u8>>) -> bool {
    match response.status().as_u16() {
        400 => serde_json::from_slice::<Value>(response.body())
            .ok()
            .is_some_and(|v| v.get("error").and_then(Value::as_str) == Some("use_dpop_nonce")),
        401 => response
            .headers()
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("use_dpop_nonce")),
        _ => false,
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderClient<'_> {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.fetch(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_key_opens_to_the_same_key() {
        let key = EdKey::generate().unwrap();
        let sealed = seal_key(&key);
        assert_eq!(sealed.len(), 43);
        assert_eq!(proof_key(&sealed).unwrap().thumbprint(), key.thumbprint());
        assert!(proof_key(&SecretString::from("AAAA")).is_err());
        assert!(proof_key(&SecretString::from("!!")).is_err());
    }

    #[test]
    fn keeps_only_well_formed_nonces() {
        let slot = NonceSlot::default();
        let mut h = http::HeaderMap::new();
        h.insert(DPOP_NONCE, HeaderValue::from_static("n-1"));
        assert_eq!(slot.note(&h).as_deref(), Some("n-1"));
        h.insert(DPOP_NONCE, HeaderValue::from_static("bad\"nonce"));
        assert_eq!(slot.note(&h), None);
        assert_eq!(
            slot.get().as_deref(),
            Some("n-1"),
            "the last good one stays"
        );
    }

    #[test]
    fn recognises_nonce_demands_of_token_endpoint_and_resource() {
        let answer = |status: u16, header: Option<&'static str>, body: &str| {
            let mut r = http::Response::builder().status(status);
            if let Some(h) = header {
                r = r.header(http::header::WWW_AUTHENTICATE, h);
            }
            r.body(body.as_bytes().to_vec()).unwrap()
        };
        assert!(demands_nonce(&answer(
            400,
            None,
            r#"{"error":"use_dpop_nonce"}"#
        )));
        assert!(!demands_nonce(&answer(
            400,
            None,
            r#"{"error":"invalid_grant"}"#
        )));
        assert!(demands_nonce(&answer(
            401,
            Some(r#"DPoP error="use_dpop_nonce", algs="EdDSA""#),
            ""
        )));
        assert!(!demands_nonce(&answer(
            401,
            Some("DPoP error=\"invalid_token\""),
            ""
        )));
        assert!(!demands_nonce(&answer(
            200,
            None,
            r#"{"error":"use_dpop_nonce"}"#
        )));
    }
}
