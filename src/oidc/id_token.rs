//! The ID token checks of a code exchange: signature, `iss`, `aud`, `azp`, `exp`, `iat`,
//! `nonce` and `at_hash` (OpenID Connect Core §3.1.3.7), and the user's claims read from a
//! verified token.
//!
//! Takes the provider's keys from `Provider` and fetches nothing itself.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet};
use openidconnect::{
    AccessToken, AccessTokenHash, ClaimsVerificationError, ClientId, ClientSecret, Nonce,
    SignatureVerificationError,
};
use serde_json::{Map, Value};

use super::{OidcError, Provider};
use crate::clock::now_secs_i64;
use crate::secret::SecretString;

/// How far an ID token's `iat` may lie in the future (clock skew) or the past.
const IAT_FUTURE_LEEWAY: i64 = 300;
const IAT_MAX_AGE: i64 = 600;
/// Protocol claims that say nothing about the user: not returned by `/bff/user`.
const PROTOCOL_CLAIMS: &[&str] = &[
    "iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "s_hash", "azp", "jti",
];

impl Provider {
    /// Verifies the ID token (and its `at_hash` against `access_token`), re-fetching the
    /// JWKS once (rate-limited) when no key matches, so that a provider's key rotation never
    /// breaks logins. Returns `sub`.
    pub(super) async fn verify_id_token(
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
            let now = now_secs_i64();
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
}

/// The claims of a verified ID token (its raw JWT) that describe the user, and its `sid`:
/// the protocol claims are left out.
pub(super) fn user_claims(jwt: &str) -> Result<(Option<String>, Map<String, Value>), OidcError> {
    let mut claims = jwt_payload(jwt)?;
    let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
    claims.retain(|k, _| !PROTOCOL_CLAIMS.contains(&k.as_str()));
    Ok((sid, claims))
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
}
