//! The logout token of OpenID Connect Back-Channel Logout 1.0: the checks of §2.6 on a
//! compact JWS (RFC 7515), signature first, then the claims of §2.4, and what it names
//! (`sid` and/or `sub`, its `jti` for the replay check the caller makes).
//!
//! Pure apart from `Provider::verify_logout_token`, which hands in the provider's keys
//! (re-fetched once, rate-limited, when none matches): `validate` takes the keys, what is
//! expected and the time, so every refusal is tested without a network. Knows nothing of
//! HTTP or the store.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeyUse, JwsSigningAlgorithm};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Provider, is_asymmetric};

/// The largest logout token looked at; a provider's are well under 2 KB.
pub const LOGOUT_TOKEN_MAX: usize = 16 * 1024;
/// How far `iat` may lie in the future (clock skew) or the past (§2.6 step 6 leaves the
/// window to the RP; the same as for ID tokens).
const IAT_FUTURE_LEEWAY: i64 = 300;
const IAT_MAX_AGE: u64 = 600;
/// The longest `jti` kept for the replay check.
const JTI_MAX: usize = 256;
/// The member of `events` that makes a JWT a logout token (§2.4).
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a valid logout token ends, and what the replay check needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutClaims {
    /// The provider session (`sid`), when the token names one.
    pub sid: Option<String>,
    /// The subject, when the token names one.
    pub sub: Option<String>,
    pub jti: String,
    /// `iat`, clamped at 0.
    pub iat: u64,
}

impl LogoutClaims {
    /// Until when `jti` must be remembered: after that, `iat` alone refuses the token.
    pub fn replay_window_end(&self) -> u64 {
        self.iat.saturating_add(IAT_MAX_AGE + 1)
    }
}

/// Why a logout token was refused, one variant per rule. The words of `description` are
/// fixed (never the token's own text) and may go to the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// Longer than `LOGOUT_TOKEN_MAX`.
    #[error("logout token too large")]
    TooLarge,
    /// Not three base64url parts, or a header or payload that is not a JSON object.
    #[error("logout token malformed")]
    Malformed,
    /// `alg` is `none`, symmetric, unknown, or not one the provider signs ID tokens with.
    #[error("logout token alg refused")]
    Algorithm,
    /// `typ` is present and neither `logout+jwt` nor the generic `JWT`, or `crit` names an extension (RFC 7515
    /// §4.1.11: none is understood here).
    #[error("logout token typ or crit refused")]
    Type,
    /// No key of the provider has this `kid` (and fits `alg`).
    #[error("logout token signed by an unknown key")]
    UnknownKey,
    /// No `kid`, and several of the provider's keys fit `alg`.
    #[error("logout token names no single key")]
    AmbiguousKey,
    /// The signature does not verify.
    #[error("logout token signature invalid")]
    Signature,
    /// `iss` is not the provider's issuer.
    #[error("logout token iss refused")]
    Issuer,
    /// `aud` does not contain this client, or `azp` names another.
    #[error("logout token aud refused")]
    Audience,
    /// `iat` missing, too far in the future, or too old.
    #[error("logout token iat refused")]
    IssuedAt,
    /// `exp` is past, or `nbf` is in the future.
    #[error("logout token expired")]
    Expired,
    /// `jti` missing, empty, or longer than `JTI_MAX`.
    #[error("logout token jti refused")]
    Jti,
    /// `events` missing or without the back-channel logout event (an object).
    #[error("logout token events refused")]
    Events,
    /// Neither `sid` nor `sub` (as non-empty strings).
    #[error("logout token names no session")]
    NoSubject,
    /// A `nonce` is present (§2.4: it MUST NOT be, so an ID token cannot pass as one).
    #[error("logout token carries a nonce")]
    Nonce,
}

impl LogoutTokenError {
    /// A short label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Algorithm => "alg",
            Self::Type => "typ",
            Self::UnknownKey => "unknown_key",
            Self::AmbiguousKey => "ambiguous_key",
            Self::Signature => "signature",
            Self::Issuer => "iss",
            Self::Audience => "aud",
            Self::IssuedAt => "iat",
            Self::Expired => "exp",
            Self::Jti => "jti",
            Self::Events => "events",
            Self::NoSubject => "no_sid_or_sub",
            Self::Nonce => "nonce",
        }
    }

    /// The fixed words of the `error_description` answered to the provider.
    pub fn description(self) -> &'static str {
        match self {
            Self::TooLarge => "logout_token is too large",
            Self::Malformed => "logout_token is not a signed JWT",
            Self::Algorithm => "logout_token alg is not accepted",
            Self::Type => "logout_token typ or crit is not accepted",
            Self::UnknownKey | Self::AmbiguousKey => "logout_token key is not known",
            Self::Signature => "logout_token signature is invalid",
            Self::Issuer => "logout_token iss is not the issuer",
            Self::Audience => "logout_token aud is not this client",
            Self::IssuedAt => "logout_token iat is missing or out of range",
            Self::Expired => "logout_token is expired or not yet valid",
            Self::Jti => "logout_token jti is missing or invalid",
            Self::Events => "logout_token events lacks the back-channel logout event",
            Self::NoSubject => "logout_token has neither sid nor sub",
            Self::Nonce => "logout_token must not contain nonce",
        }
    }
}

/// What a logout token must match: the provider and this client.
#[derive(Clone, Copy, Debug)]
pub(super) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The provider's ID token signing algorithms (asymmetric ones only, see `discover`).
    pub algs: &'a [CoreJwsSigningAlgorithm],
}

impl Provider {
    /// Validates a logout token against the provider's keys, re-fetching the JWKS once
    /// (rate-limited, see `refetch_jwks`) when no key has its `kid`, so that a key rotated
    /// in since the last fetch does not lose a logout. A failed re-fetch is an unknown key:
    /// a forged token must never earn a 5xx.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        now: u64,
    ) -> Result<LogoutClaims, LogoutTokenError> {
        let expected = Expected {
            issuer: self.issuer.as_str(),
            client_id: &self.settings.client_id,
            algs: &self.signing_algs,
        };
        match validate(token, &expected, &self.current_jwks(), now) {
            Err(LogoutTokenError::UnknownKey) => match self.refetch_jwks().await {
                Ok(keys) => validate(token, &expected, &keys, now),
                Err(e) => {
                    tracing::debug!(error = %e, "no JWKS re-fetch for a logout token");
                    Err(LogoutTokenError::UnknownKey)
                }
            },
            other => other,
        }
    }
}

/// The JOSE header members looked at.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<Value>,
}

/// Checks `token` by §2.6 of the spec: the signature (steps 1-3, with the provider's
/// `keys`) before any claim, so that nothing unsigned is read further; then `iss`, `aud`,
/// `iat`, `exp` (step 3 by reference to ID tokens), `jti`, `events`, `sid`/`sub` and
/// `nonce` (steps 4-6). The `jti` replay check (step 7) is the caller's, after this.
pub(super) fn validate(
    token: &str,
    expected: &Expected<'_>,
    keys: &CoreJsonWebKeySet,
    now: u64,
) -> Result<LogoutClaims, LogoutTokenError> {
    if token.len() > LOGOUT_TOKEN_MAX {
        return Err(LogoutTokenError::TooLarge);
    }
    // Compact serialization, RFC 7515 §7.1: header . payload . signature, each base64url
    // without padding. Five parts would be a JWE: refused as malformed too.
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(LogoutTokenError::Malformed);
    };
    let header: Header =
        serde_json::from_slice(&decode(header_b64)?).map_err(|_| LogoutTokenError::Malformed)?;
    let signature = decode(signature_b64)?;

    let alg = algorithm(&header.alg, expected.algs)?;
    // RFC 8725 §3.11 explicit typing; the spec (§2.4) recommends `logout+jwt`, RFC 7515
    // §4.1.9 lets the `application/` prefix be left out and compares case-insensitively.
    // The generic `JWT` (RFC 7519 §5.1) types nothing, so it is taken as no `typ` at all
    // (Glewlwyd sends it): what keeps an ID token or access token from passing for a logout
    // token is then, as the spec itself relies on (§2.6), the required `events` member
    // with the back-channel event and the forbidden `nonce`. Any other type is refused.
    if let Some(typ) = &header.typ
        && !typ.eq_ignore_ascii_case("logout+jwt")
        && !typ.eq_ignore_ascii_case("application/logout+jwt")
        && !typ.eq_ignore_ascii_case("JWT")
    {
        return Err(LogoutTokenError::Type);
    }
    if header.crit.is_some() {
        return Err(LogoutTokenError::Type);
    }
    let key = signing_key(keys, header.kid.as_deref(), &alg)?;
    let signing_input = token
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or(LogoutTokenError::Malformed)?;
    key.verify_signature(&alg, signing_input.as_bytes(), &signature)
        .map_err(|_| LogoutTokenError::Signature)?;

    let claims: Map<String, Value> =
        serde_json::from_slice(&decode(payload_b64)?).map_err(|_| LogoutTokenError::Malformed)?;
    check_claims(&claims, expected, now)
}

/// The claims of a token whose signature verified.
fn check_claims(
    claims: &Map<String, Value>,
    expected: &Expected<'_>,
    now: u64,
) -> Result<LogoutClaims, LogoutTokenError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    // OpenID Connect Core §3.1.3.7 step 2: exactly the issuer, character for character.
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(LogoutTokenError::Issuer);
    }
    // Step 3: `aud` contains us; step 5: with several audiences, `azp` if present is us.
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|a| a.as_str().ok_or(LogoutTokenError::Audience))
            .collect::<Result<_, _>>()?,
        _ => return Err(LogoutTokenError::Audience),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(LogoutTokenError::Audience);
    }
    if audiences.len() > 1
        && let Some(azp) = claims.get("azp")
        && azp.as_str() != Some(expected.client_id)
    {
        return Err(LogoutTokenError::Audience);
    }
    let iat = claims
        .get("iat")
        .and_then(numeric_date)
        .ok_or(LogoutTokenError::IssuedAt)?;
    let max_age = i64::try_from(IAT_MAX_AGE).unwrap_or(i64::MAX);
    if iat > now.saturating_add(IAT_FUTURE_LEEWAY) || iat < now.saturating_sub(max_age) {
        return Err(LogoutTokenError::IssuedAt);
    }
    // `exp` is optional in a logout token, but binding when present (RFC 7519 §4.1.4), as
    // is `nbf` (§4.1.5).
    if let Some(exp) = claims.get("exp") {
        match numeric_date(exp) {
            Some(exp) if exp > now => {}
            _ => return Err(LogoutTokenError::Expired),
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        match numeric_date(nbf) {
            Some(nbf) if nbf <= now.saturating_add(IAT_FUTURE_LEEWAY) => {}
            _ => return Err(LogoutTokenError::Expired),
        }
    }
    let jti = match claims.get("jti").and_then(Value::as_str) {
        Some(j) if !j.is_empty() && j.len() <= JTI_MAX => j.to_owned(),
        _ => return Err(LogoutTokenError::Jti),
    };
    // §2.4: `events` is a JSON object with the back-channel logout member, whose value is
    // a JSON object (`{}` today): what tells a logout token from any other JWT.
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACKCHANNEL_EVENT))
        .is_some_and(Value::is_object);
    if !has_event {
        return Err(LogoutTokenError::Events);
    }
    let sid = optional_string(claims, "sid")?;
    let sub = optional_string(claims, "sub")?;
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    // §2.4: a logout token MUST NOT contain `nonce`, so that an ID token is never taken
    // for one (and the other way round, as ID tokens of the code flow carry one).
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    Ok(LogoutClaims {
        sid,
        sub,
        jti,
        iat: u64::try_from(iat).unwrap_or(0),
    })
}

/// One part of the compact serialization: base64url, no padding, no stray bits.
fn decode(part: &str) -> Result<Vec<u8>, LogoutTokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| LogoutTokenError::Malformed)
}

/// `alg` as the provider may use it: known, asymmetric (never `none`, never an HMAC keyed
/// with our client secret, which whoever holds the secret could forge), and advertised
/// for ID tokens (OpenID Connect Core §3.1.3.7 step 7).
fn algorithm(
    alg: &str,
    allowed: &[CoreJwsSigningAlgorithm],
) -> Result<CoreJwsSigningAlgorithm, LogoutTokenError> {
    let alg: CoreJwsSigningAlgorithm = serde_json::from_value(Value::String(alg.to_owned()))
        .map_err(|_| LogoutTokenError::Algorithm)?;
    if is_asymmetric(&alg) && allowed.contains(&alg) {
        Ok(alg)
    } else {
        Err(LogoutTokenError::Algorithm)
    }
}

/// The key that signed: the one with the header's `kid`, or without `kid` the only key
/// that fits `alg` (OpenID Connect Core §10.1: a `kid` is needed when there are several).
fn signing_key<'k>(
    keys: &'k CoreJsonWebKeySet,
    kid: Option<&str>,
    alg: &CoreJwsSigningAlgorithm,
) -> Result<&'k CoreJsonWebKey, LogoutTokenError> {
    let mut fitting = keys.keys().iter().filter(|key| {
        let kid_matches = kid.is_none_or(|kid| key.key_id().is_some_and(|k| k.as_str() == kid));
        kid_matches && fits(key, alg)
    });
    match (fitting.next(), fitting.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => Err(LogoutTokenError::UnknownKey),
        (Some(_), Some(_)) => Err(LogoutTokenError::AmbiguousKey),
    }
}

/// Whether `key` may verify `alg` signatures: a signing key (`use`), of `alg`'s type, and
/// of `alg` if it names one (RFC 7517 §4.2-4.4).
fn fits(key: &CoreJsonWebKey, alg: &CoreJwsSigningAlgorithm) -> bool {
    let signing = key.key_use().is_none_or(JsonWebKeyUse::allows_signature);
    let typed = alg.key_type().as_ref() == Some(key.key_type());
    let alg_ok = match key.signing_alg() {
        JsonWebKeyAlgorithm::Unspecified => true,
        JsonWebKeyAlgorithm::Algorithm(a) => a == alg,
        JsonWebKeyAlgorithm::Unsupported => false,
    };
    signing && typed && alg_ok
}

/// A NumericDate (RFC 7519 §2): seconds, possibly with a fraction.
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.floor() as i64)
    })
}

/// A claim that may be absent, but when present is a non-empty string.
fn optional_string(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, LogoutTokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(LogoutTokenError::NoSubject),
    }
}

#[cfg(test)]
mod tests {
    use openidconnect::core::CoreRsaPrivateSigningKey;
    use openidconnect::{JsonWebKeyId, PrivateSigningKey};
    use serde_json::json;

    use super::*;

    /// A 2048-bit RSA key made for these tests only (`openssl genrsa -traditional 2048`).
    const TEST_RSA_PEM: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEA2oPRlTZdRVmeeRkqGDQOFmGrOB5o7VVI6VMzMd9O55Co30Z/\n\
44GX94Xhop0Q2cIZq6jQcNjl25N8S+y8sJBsK9UvpV7/lA4nFwF4tUbqQm+GG3Y/\n\
exyqCv4AaYS73d6Cjfaj1HMe4jeJ1dgpJ5WZ9/whok0bUF1/H7+YCJQpR6yFeE/Q\n\
bSv/zOxwyiGkZr+ksIdHaWZ5E4H0qP1Hg0IB2PgDiqy5Ll6gXm95zr/Y/aJvkxtL\n\
r6v0H611y5Wu6g2XbC3L/UEgi+HHBXusbi8CxQgxzouOEXQliPur8DCpi09gCU0E\n\
EsZvX2OaxzceGqdeVdSnycAaK9y/W11qgnM75wIDAQABAoIBAAGkJ7mkLl3sK5Z+\n\
sGpMUEUPPeGlZ67rta8y9EEmcyH7jOJNAKMX0CNLXzqHNRkM2Mkt5pum8lpDU17c\n\
51YZr5iXiv1zs1qt2d36UiMohKx9EaoUL+hyGRk+CYjBW3dNYhzKYR3fJQG3AxMd\n\
GzxPyD9dY3t5NdXVNxXvDjnMjiI/JLuoc9/ie0G3CAYuSHQ/sTs2bhLpZt4IDGCV\n\
2meiJpVkpqdxuWPBdtETXgzsT+Hx8447tH4ZWeVz2gYqdRNoxJV5arAH/vcigoqH\n\
p0k2pVmSBwPU3rZMMlkq3f2epUuenEeLUZy0o7hGQSPDUtK05j1NiHsDBREZDXek\n\
yPj298ECgYEA9E3Tpku1EFXCwMRjq6Ixt60v1ER+j1HFK/Xh3gsMOCQnifAHnAt2\n\
A7hcDoRZ1p1SRAoVMvOf800HjRvZyZgrF0aYaNoTCa9Cg3lwv8LizIIgpbbK28T9\n\
H4aZS91AhdJAeLcSvxRVtsPpfpx8dWtsgBJ+m16a8PiIJpatXwI6mgcCgYEA5Pns\n\
LIfoQz5mOeFTZeFHycWUWPZ4lW2aizMS7C0OLJvgn0wKfZ7WIusgCIxoadxmXzLt\n\
cvUwChA43drZCvVX6rwoKXLdxuA2rLrSh8UQe2SWW+X8DIGVq0cSDZmBFgnK+Z3f\n\
OZB5kGIu564RG3sxj0ewdLHWfWp+xoT1dr3LVyECgYB5VmY2hAeL82xlHaV7S3Vy\n\
CrxkqxhIyo4phVgHVmldQOe6ZNMCt9aHhnuCYk3UgBKp5HAe/E2HI80KUrjanY9Z\n\
YiC0gwtNlhRtBFXxiDPo6wCYDa+3c6FclRdyTJONY53N1u+io9Dmk2tXDRXro80h\n\
1w220UgXQvksYU3+kDbW5QKBgQCO2ll9IsFGCo0OeURloFoASPMXWZW7bCjpxVB9\n\
5lIchJdr6q30136zREu06ZxOx0FbDVPUz6FL9fj0eI/GZXCXMxI/Ybl5VPLnaprk\n\
N47j3MptxRst1j7BH9Lkhytgy3VFrDfTGw6shITM5+0mXwJ5aHlvJHAzyJgVVGgr\n\
z5cn4QKBgA9iJdNEq50cP8CXILtznkDRCFJIlgS+hMR4InJ1NvxqAtjTsZcHKwmD\n\
gHvdh5XH5SGCqDqU1k3hTVFMYS0lZWCPAkBVC8T2PpZHreClWjqHk8MO0ypbDzPk\n\
YPlc4ucfNXE6hAHs80rulqNn0qIMXxAAvacgUqFq6QF/hHOYyKRL\n\
-----END RSA PRIVATE KEY-----\n";
    const NOW: u64 = 1_800_000_000;
    const ISSUER: &str = "https://idp.example";
    const ALGS: [CoreJwsSigningAlgorithm; 2] = [
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    ];

    fn signer() -> CoreRsaPrivateSigningKey {
        CoreRsaPrivateSigningKey::from_pem(TEST_RSA_PEM, Some(JsonWebKeyId::new("k1".into())))
            .unwrap()
    }

    fn keys() -> CoreJsonWebKeySet {
        CoreJsonWebKeySet::new(vec![signer().as_verification_key()])
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: ISSUER,
            client_id: "bff",
            algs: &ALGS,
        }
    }

    fn header() -> Value {
        json!({"alg": "RS256", "kid": "k1", "typ": "logout+jwt"})
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": "bff",
            "iat": NOW - 5,
            "exp": NOW + 120,
            "jti": "jti-1",
            "events": {BACKCHANNEL_EVENT: {}},
            "sid": "sid-1",
            "sub": "alice",
        })
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A compact JWS of `header` and `claims`, signed RS256 with the test key.
    fn sign(header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = signer()
            .sign(
                &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                input.as_bytes(),
            )
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn check(token: &str) -> Result<LogoutClaims, LogoutTokenError> {
        validate(token, &expected(), &keys(), NOW)
    }

    /// `claims()` with `edit` applied, signed.
    fn with(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut c = claims();
        edit(c.as_object_mut().unwrap());
        sign(&header(), &c)
    }

    fn refused(token: &str, why: LogoutTokenError) {
        assert_eq!(check(token), Err(why));
    }

    #[test]
    fn accepts_a_token_signed_by_the_provider() {
        let verified = check(&sign(&header(), &claims())).unwrap();
        assert_eq!(
            verified,
            LogoutClaims {
                sid: Some("sid-1".into()),
                sub: Some("alice".into()),
                jti: "jti-1".into(),
                iat: NOW - 5,
            }
        );
        assert_eq!(verified.replay_window_end(), NOW - 5 + IAT_MAX_AGE + 1);
        // Without typ, with typ spelled as a media type or the generic JWT (Glewlwyd),
        // without kid (one key only), with `aud` an array holding us and `azp` us, with
        // only `sub`, with a fractional iat.
        for header in [
            json!({"alg": "RS256", "kid": "k1"}),
            json!({"alg": "RS256", "kid": "k1", "typ": "Application/Logout+JWT"}),
            json!({"alg": "RS256", "kid": "k1", "typ": "jwt"}),
            json!({"alg": "RS256"}),
        ] {
            check(&sign(&header, &claims())).unwrap();
        }
        check(&with(|c| {
            c.insert("aud".into(), json!(["other", "bff"]));
            c.insert("azp".into(), json!("bff"));
            c.remove("sid");
            c.insert("iat".into(), json!(NOW as f64 - 0.5));
        }))
        .unwrap();
    }

    #[test]
    fn refuses_alg_none_and_hmac() {
        let claims = b64(&claims());
        let none = format!("{}.{claims}.", b64(&json!({"alg": "none"})));
        refused(&none, LogoutTokenError::Algorithm);
        // An HS256 token "signed" with anything: refused before any key is looked at.
        let hs = format!(
            "{}.{claims}.c2ln",
            b64(&json!({"alg": "HS256", "kid": "k1"}))
        );
        refused(&hs, LogoutTokenError::Algorithm);
        // Asymmetric, but not advertised by the provider.
        let ps = sign(&json!({"alg": "PS512", "kid": "k1"}), &self::claims());
        refused(&ps, LogoutTokenError::Algorithm);
        let unknown = sign(&json!({"alg": "XX1", "kid": "k1"}), &self::claims());
        refused(&unknown, LogoutTokenError::Algorithm);
    }

    #[test]
    fn refuses_an_unknown_kid() {
        let token = sign(&json!({"alg": "RS256", "kid": "k2"}), &claims());
        refused(&token, LogoutTokenError::UnknownKey);
        // The key is advertised for another algorithm only.
        let token = sign(&json!({"alg": "ES256", "kid": "k1"}), &claims());
        refused(&token, LogoutTokenError::UnknownKey);
    }

    #[test]
    fn refuses_no_kid_among_several_keys() {
        let mut other = signer().as_verification_key();
        let value = serde_json::to_value(&other).unwrap();
        let mut value = value.as_object().unwrap().clone();
        value.insert("kid".into(), json!("k0"));
        other = serde_json::from_value(Value::Object(value)).unwrap();
        let keys = CoreJsonWebKeySet::new(vec![other, signer().as_verification_key()]);
        let token = sign(&json!({"alg": "RS256"}), &claims());
        assert_eq!(
            validate(&token, &expected(), &keys, NOW),
            Err(LogoutTokenError::AmbiguousKey)
        );
    }

    #[test]
    fn refuses_a_bad_signature() {
        let token = sign(&header(), &claims());
        // The payload changed after signing (another sid).
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut c = claims();
        c["sid"] = json!("sid-2");
        refused(
            &format!("{head}.{}.{sig}", b64(&c)),
            LogoutTokenError::Signature,
        );
        // The signature of another message.
        let other = sign(&header(), &json!({"x": 1}));
        let other_sig = other.rsplit('.').next().unwrap();
        let (input, _) = token.rsplit_once('.').unwrap();
        refused(&format!("{input}.{other_sig}"), LogoutTokenError::Signature);
    }

    #[test]
    fn refuses_a_wrong_issuer() {
        for iss in [
            json!("https://idp.example/"),
            json!("https://evil"),
            json!(1),
        ] {
            refused(
                &with(|c| _ = c.insert("iss".into(), iss)),
                LogoutTokenError::Issuer,
            );
        }
        refused(&with(|c| _ = c.remove("iss")), LogoutTokenError::Issuer);
    }

    #[test]
    fn refuses_an_audience_without_us() {
        for aud in [
            json!("other"),
            json!(["other", "x"]),
            json!([]),
            json!(["bff", 3]),
        ] {
            refused(
                &with(|c| _ = c.insert("aud".into(), aud)),
                LogoutTokenError::Audience,
            );
        }
        refused(&with(|c| _ = c.remove("aud")), LogoutTokenError::Audience);
        // Several audiences and an `azp` naming another client.
        refused(
            &with(|c| {
                c.insert("aud".into(), json!(["bff", "other"]));
                c.insert("azp".into(), json!("other"));
            }),
            LogoutTokenError::Audience,
        );
    }

    #[test]
    fn refuses_an_old_future_or_missing_iat() {
        for iat in [
            json!(NOW - IAT_MAX_AGE - 1),
            json!(NOW + 301),
            json!("1800000000"),
        ] {
            refused(
                &with(|c| _ = c.insert("iat".into(), iat)),
                LogoutTokenError::IssuedAt,
            );
        }
        refused(&with(|c| _ = c.remove("iat")), LogoutTokenError::IssuedAt);
    }

    #[test]
    fn refuses_an_expired_or_not_yet_valid_token() {
        refused(
            &with(|c| _ = c.insert("exp".into(), json!(NOW))),
            LogoutTokenError::Expired,
        );
        refused(
            &with(|c| _ = c.insert("exp".into(), json!("soon"))),
            LogoutTokenError::Expired,
        );
        refused(
            &with(|c| _ = c.insert("nbf".into(), json!(NOW + 3600))),
            LogoutTokenError::Expired,
        );
    }

    #[test]
    fn refuses_a_missing_or_oversized_jti() {
        for jti in [json!(""), json!(7), json!("j".repeat(JTI_MAX + 1))] {
            refused(
                &with(|c| _ = c.insert("jti".into(), jti)),
                LogoutTokenError::Jti,
            );
        }
        refused(&with(|c| _ = c.remove("jti")), LogoutTokenError::Jti);
    }

    #[test]
    fn refuses_missing_or_other_events() {
        for events in [
            json!({}),
            json!({"http://schemas.openid.net/event/other": {}}),
            json!({BACKCHANNEL_EVENT: "yes"}),
            json!([BACKCHANNEL_EVENT]),
        ] {
            refused(
                &with(|c| _ = c.insert("events".into(), events)),
                LogoutTokenError::Events,
            );
        }
        refused(&with(|c| _ = c.remove("events")), LogoutTokenError::Events);
    }

    #[test]
    fn refuses_neither_sid_nor_sub() {
        refused(
            &with(|c| {
                c.remove("sid");
                c.remove("sub");
            }),
            LogoutTokenError::NoSubject,
        );
        refused(
            &with(|c| _ = c.insert("sid".into(), json!(5))),
            LogoutTokenError::NoSubject,
        );
    }

    #[test]
    fn refuses_a_nonce() {
        refused(
            &with(|c| _ = c.insert("nonce".into(), json!("n"))),
            LogoutTokenError::Nonce,
        );
    }

    #[test]
    fn refuses_an_id_token_typed_jwt_by_its_claims() {
        // `typ: JWT` is accepted as untyped, so an ID token of ours with that header (signed
        // by the provider, our aud, a sid) must fail on its claims: no back-channel event.
        let jwt = json!({"alg": "RS256", "kid": "k1", "typ": "JWT"});
        let mut id_token = claims();
        let fields = id_token.as_object_mut().unwrap();
        fields.remove("events");
        fields.insert("nonce".into(), json!("n-1"));
        let token = sign(&jwt, &id_token);
        let err = check(&token).unwrap_err();
        assert!(
            matches!(err, LogoutTokenError::Events | LogoutTokenError::Nonce),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_another_typ_or_a_crit_header() {
        for header in [
            json!({"alg": "RS256", "kid": "k1", "typ": "at+jwt"}),
            json!({"alg": "RS256", "kid": "k1", "typ": "JOSE"}),
            json!({"alg": "RS256", "kid": "k1", "crit": ["exp"], "exp": 1}),
        ] {
            refused(&sign(&header, &claims()), LogoutTokenError::Type);
        }
    }

    #[test]
    fn refuses_an_oversized_token() {
        let token = with(|c| _ = c.insert("pad".into(), json!("p".repeat(LOGOUT_TOKEN_MAX))));
        refused(&token, LogoutTokenError::TooLarge);
    }

    #[test]
    fn refuses_garbage_parts() {
        let good = sign(&header(), &claims());
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for token in [
            String::new(),
            "a.b".into(),
            format!("{good}.x.y"),
            format!("{h}.{p}"),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}.{s}*"),
            format!("{}.{p}.{s}", b64(&json!("not an object"))),
            format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode("{")),
        ] {
            refused(&token, LogoutTokenError::Malformed);
        }
        // A signed payload that is not a JSON object.
        let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode("[1]"));
        let sig = signer()
            .sign(
                &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                input.as_bytes(),
            )
            .unwrap();
        refused(
            &format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)),
            LogoutTokenError::Malformed,
        );
    }
}
