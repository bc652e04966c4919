//! The grants and calls a login makes at the provider: the authorization URL (pushed when
//! PAR is on), the code exchange, userinfo, refresh, revocation (RFC 7009) and the
//! end-session URL (RP-Initiated Logout 1.0). With DPoP each token and userinfo request
//! carries a proof of the session's key (RFC 9449).
//!
//! The ID token checks are `id_token`'s; a refresh failure's class is `refresh_failure`'s.

use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use serde_json::{Map, Value};
use url::Url;

use super::dpop::ProviderClient;
use super::id_token::user_claims;
use super::refresh_failure::{is_empty_refusal, parse_failure, refresh_error};
use super::{OidcError, Provider, RefreshError, RefreshFailure, http_error};
use crate::clock::now_secs;
use crate::http_client::HttpError;
use crate::jws::{DpopAlg, DpopKey};
use crate::secret::SecretString;

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

impl Provider {
    /// The algorithm of the DPoP key each login binds its tokens to (`[oidc] dpop`), as
    /// discovery chose it; `None` without DPoP.
    pub fn dpop_alg(&self) -> Option<DpopAlg> {
        self.dpop_alg
    }

    /// A new login: fresh state, nonce and PKCE (S256) verifier, and the URL carrying them;
    /// with `dpop_key`, its thumbprint as `dpop_jkt` (RFC 9449 §10), which binds the code
    /// to that key. With PAR the request is pushed first, and the URL carries only
    /// `client_id` and `request_uri`.
    pub async fn start_login(&self, dpop_key: Option<&DpopKey>) -> Result<LoginStart, OidcError> {
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
        if let Some(key) = dpop_key {
            request = request.add_extra_param("dpop_jkt", key.thumbprint());
        }
        for (name, value) in &self.settings.authorization_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let url = match &self.par_endpoint {
            Some(endpoint) => self.push(endpoint, &url).await?,
            None => url,
        };
        Ok(LoginStart {
            url,
            state: SecretString::new(state.into_secret()),
            nonce: SecretString::new(nonce.secret().clone()),
            pkce_verifier: SecretString::new(verifier.into_secret()),
        })
    }

    /// Exchanges the code (with the PKCE verifier) and validates the ID token: signature by
    /// a provider key with an advertised asymmetric algorithm, `iss`, `aud`, `azp`, `exp`,
    /// `iat` and `nonce`. Then reads userinfo, when there is an endpoint, for the claims.
    /// With `dpop_key` (the login's, bound at authorization) the exchange carries its proof,
    /// and a token that is not DPoP-bound is refused: FAPI 2.0 asks for sender-constrained
    /// tokens, and a provider that silently issued a Bearer token is not doing what the
    /// configuration asked.
    pub async fn finish_login(
        &self,
        code: &str,
        pkce_verifier: &SecretString,
        nonce: &SecretString,
        dpop_key: Option<&DpopKey>,
    ) -> Result<LoginTokens, OidcError> {
        let http = self.token_client(dpop_key);
        let mut request = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.expose().to_owned()));
        for (name, value) in self
            .credentials
            .assertion_params(&self.settings.client_id, self.issuer())?
        {
            request = request.add_extra_param(name, value.expose().to_owned());
        }
        let response = request.request_async(&http).await.map_err(token_error)?;
        if dpop_key.is_some() && !is_dpop(response.token_type().as_ref()) {
            return Err(OidcError::Invalid(
                "token endpoint issued a token that is not DPoP-bound".into(),
            ));
        }
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Invalid("token response has no id_token".into()))?;
        let sub = self
            .verify_id_token(id_token, nonce, response.access_token())
            .await?;
        let raw_id_token = id_token.to_string();
        let (sid, mut claims) = user_claims(&raw_id_token)?;
        let access_token = SecretString::new(response.access_token().secret().clone());
        if let Some(userinfo) = self.userinfo(&access_token, &sub, dpop_key).await? {
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

    /// The userinfo claims, when the provider has the endpoint and answers JSON; `None`
    /// (logged) when it fails, and the ID token's claims are used. An answer for another
    /// subject, or for none, is refused (OpenID Connect Core §5.3.2: its `sub` MUST match
    /// the ID token's): the login fails rather than mixing two users. A DPoP-bound token
    /// goes as `Authorization: DPoP` with a proof by `dpop_key` (RFC 9449 §7.1); without a
    /// key, as `Bearer`.
    pub(crate) async fn userinfo(
        &self,
        access_token: &SecretString,
        sub: &str,
        dpop_key: Option<&DpopKey>,
    ) -> Result<Option<Map<String, Value>>, OidcError> {
        let Some(url) = self.client.user_info_url() else {
            return Ok(None);
        };
        let scheme = if dpop_key.is_some() { "DPoP" } else { "Bearer" };
        let Ok(request) = http::Request::get(url.url().as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("{scheme} {}", access_token.expose()),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
        else {
            return Ok(None);
        };
        let http = ProviderClient {
            access_token: Some(access_token),
            ..ProviderClient::new(&self.http, dpop_key, &self.dpop_nonce)
        };
        let response = match http.fetch(request).await {
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

    /// A refresh grant. Only `RefreshFailure::InvalidGrant` means the refresh token is
    /// dead; see `RefreshFailure` for the rest. The answer's status is noted on the way
    /// through, because the crate's errors drop it and a 200 that does not parse (the grant
    /// may have been spent) must not be taken for an outage. With the session's
    /// `dpop_key` the grant carries its proof (a nonce demanded is retried once, and is no
    /// failure), and an answer that is not DPoP-bound is unusable, like one that does not
    /// parse.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        dpop_key: Option<&DpopKey>,
    ) -> Result<RefreshedTokens, RefreshError> {
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let http = self.token_client(dpop_key);
        let mut request = self.client.exchange_refresh_token(&token);
        let assertion = self
            .credentials
            .assertion_params(&self.settings.client_id, self.issuer())
            .map_err(|e| RefreshError {
                // Signing failed before anything was sent: nothing the provider did.
                class: RefreshFailure::OtherError,
                detail: e.to_string(),
            })?;
        for (name, value) in assertion {
            request = request.add_extra_param(name, value.expose().to_owned());
        }
        let response = match request.request_async(&http).await {
            Ok(response) => response,
            Err(e) => {
                let status = http.status();
                let empty = is_empty_refusal(&e, status);
                let error = refresh_error(e, status);
                // Only the provider's own word that the token is dead ends the session.
                if empty && self.inactive(refresh_token).await {
                    return Err(RefreshError {
                        class: RefreshFailure::InvalidGrant,
                        detail: format!("{}; introspection: inactive", error.detail),
                    });
                }
                return Err(error);
            }
        };
        if dpop_key.is_some() && !is_dpop(response.token_type().as_ref()) {
            return Err(RefreshError {
                class: RefreshFailure::Unparsable,
                detail: "token answer is not DPoP-bound".into(),
            });
        }
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
        let request = self.refresh_token_request(endpoint, refresh_token)?;
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

    /// Whether the provider says, authenticated, that `refresh_token` is inactive (RFC 7662
    /// §2.2: expired, revoked, or never issued to us): asked after a refresh grant's answer
    /// that says nothing (`is_empty_refusal`). Anything but a 200 with `"active": false`
    /// (no introspection endpoint, our client refused, the provider failing) is `false`:
    /// the session stays.
    async fn inactive(&self, refresh_token: &SecretString) -> bool {
        let Some(endpoint) = &self.extra.introspection_endpoint else {
            return false;
        };
        let Ok(request) = self.refresh_token_request(endpoint, refresh_token) else {
            return false;
        };
        match self.http.fetch(request).await {
            Ok(r) if r.status() == http::StatusCode::OK => {
                serde_json::from_slice::<Value>(r.body())
                    .ok()
                    .and_then(|v| v.get("active").and_then(Value::as_bool))
                    == Some(false)
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), "introspection refused; refresh failure kept transient");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "introspection failed; refresh failure kept transient");
                false
            }
        }
    }

    /// A form POST of `refresh_token` to the revocation (RFC 7009 §2.1) or introspection
    /// (RFC 7662 §2.1) endpoint, with the client's authentication.
    fn refresh_token_request(
        &self,
        endpoint: &Url,
        refresh_token: &SecretString,
    ) -> Result<http::Request<Vec<u8>>, OidcError> {
        // Built in a block: the form serializer is not `Send` and must not live across
        // an await.
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
            let proof = self
                .credentials
                .proof(&self.settings.client_id, self.issuer())?;
            match &proof.header {
                Some(header) => {
                    request = request.header(http::header::AUTHORIZATION, header.expose());
                }
                None => {
                    form.append_pair("client_id", &self.settings.client_id);
                }
            }
            for (name, value) in &proof.params {
                form.append_pair(name, value.expose());
            }
            let body = SecretString::new(form.finish());
            request
                .body(body.expose().as_bytes().to_vec())
                .map_err(|e| OidcError::Invalid(e.to_string()))?
        };
        Ok(request)
    }

    /// The outbound client of a token request: proofs by `dpop_key`, and a new client
    /// assertion for a retry.
    fn token_client<'a>(&'a self, dpop_key: Option<&'a DpopKey>) -> ProviderClient<'a> {
        ProviderClient {
            client: Some((
                &self.credentials,
                self.settings.client_id.as_str(),
                self.issuer(),
            )),
            ..ProviderClient::new(&self.http, dpop_key, &self.dpop_nonce)
        }
    }

    /// Where to send the browser to end the provider's session (RP-Initiated Logout 1.0),
    /// if the provider has an end-session endpoint.
    pub fn end_session_url(&self, id_token_hint: Option<&SecretString>) -> Option<Url> {
        let endpoint = self.extra.end_session_endpoint.as_ref()?;
        Some(end_session_url(
            endpoint,
            id_token_hint,
            &self.settings.client_id,
            &self.settings.post_logout_redirect_uri,
            CsrfToken::new_random().secret(),
        ))
    }
}

/// The end-session request (RP-Initiated Logout 1.0 §2). `state` is OPTIONAL there and
/// sealgate checks nothing on the way back (it lands on a plain page), but Glewlwyd 2.7 goes
/// back to `post_logout_redirect_uri` only when the request has one (protocol_oidc.c,
/// `callback_oidc_end_session`): a random value, harmless elsewhere.
fn end_session_url(
    endpoint: &Url,
    id_token_hint: Option<&SecretString>,
    client_id: &str,
    post_logout_redirect_uri: &Url,
    state: &str,
) -> Url {
    let mut url = endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        if let Some(hint) = id_token_hint {
            q.append_pair("id_token_hint", hint.expose());
        }
        q.append_pair("client_id", client_id);
        q.append_pair(
            "post_logout_redirect_uri",
            post_logout_redirect_uri.as_str(),
        );
        q.append_pair("state", state);
    }
    url
}

/// RFC 9449 §5.1: `token_type` is `DPoP` for a bound token; compared without case, as
/// RFC 6749 §5.1 has token types.
fn is_dpop(token_type: &str) -> bool {
    token_type.eq_ignore_ascii_case("dpop")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_session_request_carries_a_state() {
        let endpoint = Url::parse("https://idp.example/logout?x=1").unwrap();
        let back = Url::parse("https://app.example/").unwrap();
        let hint = SecretString::new("eyJ.hint".into());
        let url = end_session_url(&endpoint, Some(&hint), "bff", &back, "st-123");
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("x"), Some("1"), "the endpoint's own query is kept");
        assert_eq!(get("id_token_hint"), Some("eyJ.hint"));
        assert_eq!(get("client_id"), Some("bff"));
        assert_eq!(
            get("post_logout_redirect_uri"),
            Some("https://app.example/")
        );
        assert_eq!(get("state"), Some("st-123"));
        let random = CsrfToken::new_random();
        assert!(
            random.secret().len() >= 16,
            "a state of at least 16 characters"
        );
    }
}
