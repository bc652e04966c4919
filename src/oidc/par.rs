//! Pushed authorization requests (RFC 9126): the authorization request goes to the provider
//! over the back channel, client authenticated, and the browser carries only `client_id`
//! and the `request_uri` the provider handed back. Nothing of the request (scope, PKCE
//! challenge, `dpop_jkt`) can then be read or changed in the browser.

use serde::Deserialize;
use url::Url;

use super::client_auth::ClientProof;
use super::{OidcError, Provider, http_error};
use crate::secret::SecretString;

/// Longest `request_uri` accepted into the browser's URL.
const MAX_REQUEST_URI: usize = 2048;

#[derive(Deserialize)]
struct Pushed {
    request_uri: String,
}

impl Provider {
    /// Pushes the request that `authorize` (the full authorization URL) carries in its
    /// query, and returns where to send the browser: the authorization endpoint with
    /// `client_id` and `request_uri` only (RFC 9126 §4).
    pub(super) async fn push(&self, endpoint: &Url, authorize: &Url) -> Result<Url, OidcError> {
        let proof = self
            .credentials
            .proof(&self.settings.client_id, self.issuer())?;
        let body = par_body(authorize, &proof);
        let mut request = http::Request::post(endpoint.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        if let Some(header) = &proof.header {
            request = request.header(http::header::AUTHORIZATION, header.expose());
        }
        let request = request
            .body(body.expose().as_bytes().to_vec())
            .map_err(|e| OidcError::Invalid(e.to_string()))?;
        let response = self.http.fetch(request).await.map_err(http_error)?;
        let request_uri = pushed_request_uri(response.status(), response.body())?;
        let mut url = self.client.auth_uri().url().clone();
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("request_uri", &request_uri);
        Ok(url)
    }
}

/// The PAR form: every parameter of the authorization URL (it carries `client_id`), then
/// the client authentication's own.
fn par_body(authorize: &Url, proof: &ClientProof) -> SecretString {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(authorize.query_pairs());
    for (name, value) in &proof.params {
        form.append_pair(name, value.expose());
    }
    SecretString::new(form.finish())
}

/// The `request_uri` of a PAR answer (RFC 9126 §2.2: 201 with JSON), or why there is none:
/// a 5xx is the provider's outage, another error answer a refusal (§2.3), anything else
/// invalid.
fn pushed_request_uri(status: http::StatusCode, body: &[u8]) -> Result<String, OidcError> {
    if status.is_server_error() {
        return Err(OidcError::Unavailable(format!(
            "PAR endpoint answered {status}"
        )));
    }
    if !status.is_success() {
        let code = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        return Err(OidcError::Refused(format!("PAR endpoint: {code}")));
    }
    let pushed: Pushed = serde_json::from_slice(body)
        .map_err(|_| OidcError::Invalid("PAR answer without a request_uri".into()))?;
    if pushed.request_uri.is_empty() || pushed.request_uri.len() > MAX_REQUEST_URI {
        return Err(OidcError::Invalid(
            "PAR answer's request_uri is empty or too long".into(),
        ));
    }
    Ok(pushed.request_uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_every_authorization_parameter_and_the_client_proof() {
        let authorize = Url::parse(
            "https://op/auth?response_type=code&client_id=bff&state=s&nonce=n&code_challenge=c&code_challenge_method=S256&redirect_uri=https%3A%2F%2Fapp%2Fbff%2Fcallback&scope=openid+email&dpop_jkt=j",
        )
        .unwrap();
        let proof = ClientProof {
            header: None,
            params: vec![("client_assertion", SecretString::from("a.b.c"))],
        };
        let body = par_body(&authorize, &proof);
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body.expose().as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("client_id"), Some("bff"));
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert_eq!(get("redirect_uri"), Some("https://app/bff/callback"));
        assert_eq!(get("scope"), Some("openid email"));
        assert_eq!(get("dpop_jkt"), Some("j"));
        assert_eq!(get("client_assertion"), Some("a.b.c"));
        assert_eq!(pairs.len(), 10);
    }

    #[test]
    fn refuses_par_answers_without_a_usable_request_uri() {
        use http::StatusCode as S;
        let ok = pushed_request_uri(
            S::CREATED,
            br#"{"request_uri":"urn:ietf:params:oauth:request_uri:x","expires_in":60}"#,
        );
        assert_eq!(ok.unwrap(), "urn:ietf:params:oauth:request_uri:x");
        assert!(matches!(
            pushed_request_uri(S::CREATED, b"{}"),
            Err(OidcError::Invalid(_))
        ));
        assert!(matches!(
            pushed_request_uri(S::CREATED, br#"{"request_uri":""}"#),
            Err(OidcError::Invalid(_))
        ));
        assert!(matches!(
            pushed_request_uri(S::BAD_REQUEST, br#"{"error":"invalid_client"}"#),
            Err(OidcError::Refused(m)) if m.contains("invalid_client")
        ));
        assert!(matches!(
            pushed_request_uri(S::BAD_GATEWAY, b"<html>"),
            Err(OidcError::Unavailable(_))
        ));
    }
}
