//! DPoP at the provider (RFC 9449): a proof on each token (and userinfo) request signed with
//! the session's key, the provider's server nonce remembered (§8) and the one retry it
//! asks for, and the session key's sealed form.
//!
//! Knows nothing of sessions or cookies: it signs with the key it is given.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};

use http::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::client_auth::Credentials;
use super::{RefreshError, RefreshFailure};
use crate::clock::now_secs;
use crate::http_client::{HttpClient, HttpError};
use crate::jws::{self, DpopKey, JwsError};
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

/// The session key's sealed form (`jws::DpopKey::sealed`).
pub fn seal_key(key: &DpopKey) -> SecretString {
    key.sealed()
}

/// The key of its sealed form (`Session.dpop_key`).
pub fn proof_key(sealed: &SecretString) -> Result<DpopKey, JwsError> {
    DpopKey::from_sealed(sealed)
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
/// once more with it, and with a fresh client assertion when the body carries one (a
/// provider refuses an assertion's `jti` seen before, RFC 7523 §3 item 7). Every
/// `DPoP-Nonce` is remembered. Notes the final answer's status, because the openidconnect
/// crate's errors drop it (the refresh classes need it).
pub(super) struct ProviderClient<'a> {
    pub http: &'a HttpClient,
    pub key: Option<&'a DpopKey>,
    pub nonce: &'a NonceSlot,
    pub access_token: Option<&'a SecretString>,
    /// Signs the retry's new client assertion: the credentials, client id and issuer.
    pub client: Option<(&'a Credentials, &'a str, &'a str)>,
    pub status: AtomicU16,
}

impl<'a> ProviderClient<'a> {
    pub fn new(http: &'a HttpClient, key: Option<&'a DpopKey>, nonce: &'a NonceSlot) -> Self {
        ProviderClient {
            http,
            key,
            nonce,
            access_token: None,
            client: None,
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
        let (parts, mut body) = request.into_parts();
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
                    if let Some((credentials, client_id, issuer)) = self.client {
                        body = with_fresh_assertion(&body, credentials, client_id, issuer)
                            .map_err(|e| HttpError::Exchange(e.to_string()))?;
                    }
                }
                _ => return Ok(response),
            }
        }
    }

    fn proof(
        &self,
        key: &DpopKey,
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

/// `body` (a form) with its `client_assertion`, if it has one, replaced by a new one.
fn with_fresh_assertion(
    body: &[u8],
    credentials: &Credentials,
    client_id: &str,
    issuer: &str,
) -> Result<Vec<u8>, super::OidcError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    if !pairs.iter().any(|(k, _)| k == "client_assertion") {
        return Ok(body.to_vec());
    }
    let fresh = credentials.assertion_params(client_id, issuer)?;
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        match fresh.iter().find(|(name, _)| name == k) {
            Some((_, new)) => form.append_pair(k, new.expose()),
            None => form.append_pair(k, v),
        };
    }
    Ok(SecretString::new(form.finish())
        .expose()
        .as_bytes()
        .to_vec())
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
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// A token endpoint on 127.0.0.1 that answers `answers` in turn, one connection each,
    /// and hands back the `DPoP` header and the body of every request it read.
    async fn token_endpoint(
        answers: Vec<&'static str>,
    ) -> (String, tokio::task::JoinHandle<Vec<(String, String)>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let text = loop {
                    let n = conn.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.parse().unwrap());
                        if body.len() >= len || n == 0 {
                            break text;
                        }
                    }
                };
                let (head, body) = text.split_once("\r\n\r\n").unwrap();
                let proof = head
                    .lines()
                    .find_map(|l| l.strip_prefix("dpop: "))
                    .unwrap_or_default()
                    .to_owned();
                seen.push((proof, body.to_owned()));
                conn.write_all(answer.as_bytes()).await.unwrap();
                conn.shutdown().await.unwrap();
            }
            seen
        });
        (url, task)
    }

    fn claims(jwt: &str) -> Value {
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    const USE_NONCE: &str = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ndpop-nonce: n-1\r\ncontent-length: 26\r\nconnection: close\r\n\r\n{\"error\":\"use_dpop_nonce\"}";
    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndpop-nonce: n-2\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";

    fn token_request(url: &str) -> http::Request<Vec<u8>> {
        http::Request::post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(b"grant_type=refresh_token&refresh_token=rt".to_vec())
            .unwrap()
    }

    #[tokio::test]
    async fn retries_once_with_the_nonce_the_token_endpoint_demands() {
        let (url, server) = token_endpoint(vec![USE_NONCE, OK]).await;
        let http = HttpClient::new(Duration::from_secs(5), 64 * 1024).unwrap();
        let key = DpopKey::generate(crate::jws::DpopAlg::Es256).unwrap();
        let slot = NonceSlot::default();
        let client = ProviderClient::new(&http, Some(&key), &slot);
        let answer = client.fetch(token_request(&url)).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(client.status(), 200);
        let proofs: Vec<String> = server.await.unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(proofs.len(), 2, "one retry");
        let (first, second) = (claims(&proofs[0]), claims(&proofs[1]));
        assert!(first.get("nonce").is_none());
        assert_eq!(second["nonce"], "n-1");
        assert_eq!(second["htm"], "POST");
        assert_eq!(second["htu"], url);
        assert!(
            second.get("ath").is_none(),
            "no access token at the token endpoint"
        );
        assert_ne!(first["jti"], second["jti"]);
        assert_eq!(
            slot.get().as_deref(),
            Some("n-2"),
            "the latest nonce is kept"
        );
    }

    #[tokio::test]
    async fn passes_a_second_nonce_demand_through_and_sends_no_proof_without_a_key() {
        let (url, server) = token_endpoint(vec![USE_NONCE, USE_NONCE]).await;
        let http = HttpClient::new(Duration::from_secs(5), 64 * 1024).unwrap();
        let key = DpopKey::generate(crate::jws::DpopAlg::Es256).unwrap();
        let slot = NonceSlot::default();
        let client = ProviderClient::new(&http, Some(&key), &slot);
        let answer = client.fetch(token_request(&url)).await.unwrap();
        assert_eq!(answer.status(), 400, "retried once only");
        assert_eq!(server.await.unwrap().len(), 2);

        let (url, server) = token_endpoint(vec![USE_NONCE]).await;
        let bearer = ProviderClient::new(&http, None, &slot);
        assert_eq!(
            bearer.fetch(token_request(&url)).await.unwrap().status(),
            400
        );
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "", "no DPoP header without a key");
    }

    #[tokio::test]
    async fn refuses_to_replay_a_client_assertion_in_the_nonce_retry() {
        let (url, server) = token_endpoint(vec![USE_NONCE, OK]).await;
        let http = HttpClient::new(Duration::from_secs(5), 64 * 1024).unwrap();
        let key = DpopKey::generate(crate::jws::DpopAlg::Es256).unwrap();
        let slot = NonceSlot::default();
        let (client_key, _) = crate::jws::EcKey::generate().unwrap();
        let credentials = Credentials::PrivateKeyJwt {
            key: Box::new(client_key),
            next: None,
        };
        let first = credentials.assertion_params("bff", "https://op").unwrap();
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "refresh_token");
        for (k, v) in &first {
            form.append_pair(k, v.expose());
        }
        let request = http::Request::post(&url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form.finish().into_bytes())
            .unwrap();
        let client = ProviderClient {
            client: Some((&credentials, "bff", "https://op")),
            ..ProviderClient::new(&http, Some(&key), &slot)
        };
        assert_eq!(client.fetch(request).await.unwrap().status(), 200);
        let jti_of = |body: &str| {
            let (_, jwt) = url::form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == "client_assertion")
                .unwrap();
            claims(&jwt)["jti"].clone()
        };
        let seen = server.await.unwrap();
        assert!(
            seen[1].1.contains("grant_type=refresh_token"),
            "{}",
            seen[1].1
        );
        assert_ne!(jti_of(&seen[0].1), jti_of(&seen[1].1), "a new assertion");
    }

    #[test]
    fn sealed_key_opens_to_the_same_key() {
        let key = DpopKey::generate(crate::jws::DpopAlg::Es256).unwrap();
        let sealed = seal_key(&key);
        assert_eq!(sealed.len(), 130);
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
