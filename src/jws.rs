//! Signing compact JWS with keys sealgate holds itself: the client's P-256 key for
//! `private_key_jwt` (RFC 7523, ES256) and per-session proof keys for DPoP (RFC 9449,
//! ES256 or EdDSA). All by `ring`, already in the tree through rustls. Public keys as
//! JWKs (RFC 7517/7518, RFC 8037) and their RFC 7638 thumbprints.
//!
//! Pure: no I/O, no clock. Private keys are zeroized on drop and never Debug-printed.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::SecretString;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum JwsError {
    #[error("the system random generator failed")]
    Random,
    #[error("not a PKCS#8 PEM private key (\"{PEM_BEGIN}\")")]
    NotPem,
    #[error("not a P-256 (ES256) PKCS#8 key")]
    WrongKey,
    #[error("signing failed")]
    Sign,
}

/// A P-256 signing key (ES256), from PKCS#8.
pub struct EcKey {
    pair: EcdsaKeyPair,
    /// RFC 7638 thumbprint of the public key, used as `kid`.
    kid: String,
}

impl fmt::Debug for EcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl EcKey {
    /// A new random key and its PKCS#8 PEM (zeroized on drop).
    pub fn generate() -> Result<(EcKey, Zeroizing<String>), JwsError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| JwsError::Random)?;
        let der = Zeroizing::new(doc.as_ref().to_vec());
        let key = EcKey::from_der(&der)?;
        Ok((key, pem(&der)))
    }

    /// Reads a PKCS#8 PEM P-256 key.
    pub fn from_pem(text: &str) -> Result<EcKey, JwsError> {
        let body = text
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|rest| rest.strip_suffix(PEM_END))
            .ok_or(JwsError::NotPem)?;
        let b64: Zeroizing<String> =
            Zeroizing::new(body.chars().filter(|c| !c.is_ascii_whitespace()).collect());
        let der = Zeroizing::new(
            STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| JwsError::NotPem)?,
        );
        EcKey::from_der(&der)
    }

    fn from_der(der: &[u8]) -> Result<EcKey, JwsError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(|_| JwsError::WrongKey)?;
        let kid = thumbprint(&ec_members(pair.public_key().as_ref())?);
        Ok(EcKey { pair, kid })
    }

    /// The key id: its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK, with `kid`, `alg` and `use`: what the provider registers.
    pub fn public_jwk(&self) -> Result<Value, JwsError> {
        let mut jwk = ec_members(self.pair.public_key().as_ref())?;
        jwk.insert("kid".into(), self.kid.clone().into());
        jwk.insert("alg".into(), "ES256".into());
        jwk.insert("use".into(), "sig".into());
        Ok(Value::Object(jwk))
    }

    /// A compact JWS of `claims` with header `{"alg":"ES256","typ":typ,"kid":kid}`.
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, JwsError> {
        let header = json!({"alg": "ES256", "typ": typ, "kid": self.kid});
        compact(&header, claims, |input| {
            self.pair
                .sign(&SystemRandom::new(), input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JwsError::Sign)
        })
    }
}

/// An Ed25519 proof key (EdDSA): 32 random bytes are the whole private key, so it seals
/// into a session cookie in 43 characters.
pub struct EdKey {
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for EdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdKey").finish_non_exhaustive()
    }
}

impl EdKey {
    /// A new random key.
    pub fn generate() -> Result<EdKey, JwsError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| JwsError::Random)?;
        EdKey::from_seed(&seed)
    }

    /// The key of a 32-byte seed (as `seed` returned it).
    pub fn from_seed(seed: &[u8; 32]) -> Result<EdKey, JwsError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| JwsError::WrongKey)?;
        Ok(EdKey {
            seed: Zeroizing::new(*seed),
            pair,
        })
    }

    /// The private seed, to seal into the session.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The seed in its sealed form (`Session.dpop_key`): base64url without padding.
    pub fn sealed_seed(&self) -> SecretString {
        SecretString::new(URL_SAFE_NO_PAD.encode(self.seed.as_ref()))
    }

    /// The key of a seed in its sealed form (`sealed_seed`).
    pub fn from_sealed_seed(sealed: &SecretString) -> Result<EdKey, JwsError> {
        let raw = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(sealed.expose())
                .map_err(|_| JwsError::WrongKey)?,
        );
        let seed: &[u8; 32] = raw.as_slice().try_into().map_err(|_| JwsError::WrongKey)?;
        EdKey::from_seed(seed)
    }

    /// The raw EdDSA signature of `message` (for callers that build the JWS themselves).
    pub fn sign(&self, message: &[u8]) -> signature::Signature {
        self.pair.sign(message)
    }

    /// The public JWK (`kty` OKP, `crv` Ed25519, `x`), RFC 8037.
    pub fn public_jwk(&self) -> Value {
        json!({"crv": "Ed25519", "kty": "OKP", "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())})
    }

    /// The RFC 7638 thumbprint of the public key (DPoP's `jkt`).
    pub fn thumbprint(&self) -> String {
        match self.public_jwk() {
            Value::Object(m) => thumbprint(&m),
            _ => String::new(),
        }
    }

    /// A compact JWS of `claims` with header `{"alg":"EdDSA","typ":typ,"jwk":<public>}`.
    pub fn sign_with_jwk(&self, typ: &str, claims: &Value) -> Result<String, JwsError> {
        let header = json!({"alg": "EdDSA", "typ": typ, "jwk": self.public_jwk()});
        compact(&header, claims, |input| {
            Ok(self.pair.sign(input).as_ref().to_vec())
        })
    }
}

/// The algorithms of sealgate's DPoP proofs (RFC 9449 §5.1 `dpop_signing_alg_values_supported`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpopAlg {
    /// ECDSA P-256 with SHA-256: what every DPoP provider accepts, and the cheaper of the
    /// two with `ring` (about 24 µs per proof against 39 µs for Ed25519 on the 2-core VM
    /// of the benchmarks, `cargo bench --bench seal -- proof`).
    Es256,
    /// Ed25519 (RFC 8037).
    EdDsa,
}

impl DpopAlg {
    /// The one to use among a provider's advertised algorithms: ES256 when listed (or when
    /// nothing is listed: RFC 9449 makes the list optional), else EdDSA; `None` when
    /// neither is.
    pub fn choose(advertised: Option<&[String]>) -> Option<DpopAlg> {
        let Some(list) = advertised else {
            return Some(DpopAlg::Es256);
        };
        let has = |names: &[&str]| list.iter().any(|a| names.contains(&a.as_str()));
        if has(&["ES256"]) {
            Some(DpopAlg::Es256)
        } else if has(&["EdDSA", "Ed25519"]) {
            Some(DpopAlg::EdDsa)
        } else {
            None
        }
    }

    /// The JWS `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            DpopAlg::Es256 => "ES256",
            DpopAlg::EdDsa => "EdDSA",
        }
    }
}

/// Bytes of a sealed P-256 proof key: the private scalar, then the public point
/// uncompressed (0x04 || X || Y). `ring` takes both and checks that they agree.
const EC_SEALED: usize = 32 + 65;

/// A session's DPoP proof key, ES256 or EdDSA. Its sealed form (`Session.dpop_key`) is its
/// raw private material, base64url without padding, and tells the algorithm by its length:
/// 32 bytes are an Ed25519 seed (the only kind before ES256 proof keys: such sessions
/// still open), 97 a P-256 key.
pub struct DpopKey(DpopPair);

enum DpopPair {
    Ec(Box<EcPair>),
    Ed(EdKey),
}

/// A P-256 proof key and its sealed bytes (boxed: ring's pair is large).
struct EcPair {
    pair: EcdsaKeyPair,
    raw: Zeroizing<[u8; EC_SEALED]>,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

impl From<EdKey> for DpopKey {
    fn from(key: EdKey) -> Self {
        DpopKey(DpopPair::Ed(key))
    }
}

impl DpopKey {
    /// A new random key for `alg`.
    pub fn generate(alg: DpopAlg) -> Result<DpopKey, JwsError> {
        match alg {
            DpopAlg::EdDsa => Ok(EdKey::generate()?.into()),
            DpopAlg::Es256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| JwsError::Random)?;
                let raw = p256_parts(doc.as_ref()).ok_or(JwsError::WrongKey)?;
                DpopKey::ec(raw)
            }
        }
    }

    fn ec(raw: Zeroizing<[u8; EC_SEALED]>) -> Result<DpopKey, JwsError> {
        let (private, public) = raw.split_at(32);
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            private,
            public,
            &SystemRandom::new(),
        )
        .map_err(|_| JwsError::WrongKey)?;
        Ok(DpopKey(DpopPair::Ec(Box::new(EcPair { pair, raw }))))
    }

    /// The key in its sealed form.
    pub fn sealed(&self) -> SecretString {
        match &self.0 {
            DpopPair::Ec(ec) => SecretString::new(URL_SAFE_NO_PAD.encode(ec.raw.as_ref())),
            DpopPair::Ed(key) => key.sealed_seed(),
        }
    }

    /// The key of its sealed form (`sealed`, or an Ed25519 `EdKey::sealed_seed`).
    pub fn from_sealed(sealed: &SecretString) -> Result<DpopKey, JwsError> {
        let raw = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(sealed.expose())
                .map_err(|_| JwsError::WrongKey)?,
        );
        if let Ok(seed) = <&[u8; 32]>::try_from(raw.as_slice()) {
            return Ok(EdKey::from_seed(seed)?.into());
        }
        let ec: [u8; EC_SEALED] = raw.as_slice().try_into().map_err(|_| JwsError::WrongKey)?;
        DpopKey::ec(Zeroizing::new(ec))
    }

    /// Its algorithm.
    pub fn alg(&self) -> DpopAlg {
        match self.0 {
            DpopPair::Ec(_) => DpopAlg::Es256,
            DpopPair::Ed(_) => DpopAlg::EdDsa,
        }
    }

    /// The raw JWS signature of `message` (ES256: r || s, RFC 7518 §3.4).
    pub fn sign(&self, message: &[u8]) -> Result<signature::Signature, JwsError> {
        match &self.0 {
            DpopPair::Ec(ec) => ec
                .pair
                .sign(&SystemRandom::new(), message)
                .map_err(|_| JwsError::Sign),
            DpopPair::Ed(key) => Ok(key.sign(message)),
        }
    }

    /// The public JWK: `EC` P-256 `x`/`y`, or `OKP` Ed25519 `x` (RFC 8037).
    pub fn public_jwk(&self) -> Value {
        match &self.0 {
            DpopPair::Ec(ec) => ec_members(ec.pair.public_key().as_ref())
                .map(Value::Object)
                .unwrap_or_default(),
            DpopPair::Ed(key) => key.public_jwk(),
        }
    }

    /// The RFC 7638 thumbprint of the public key (DPoP's `jkt`).
    pub fn thumbprint(&self) -> String {
        match self.public_jwk() {
            Value::Object(m) => thumbprint(&m),
            _ => String::new(),
        }
    }

    /// A compact JWS of `claims` with header `{"alg":..,"typ":typ,"jwk":<public>}`.
    pub fn sign_with_jwk(&self, typ: &str, claims: &Value) -> Result<String, JwsError> {
        let header = json!({"alg": self.alg().name(), "typ": typ, "jwk": self.public_jwk()});
        compact(&header, claims, |input| {
            Ok(self.sign(input)?.as_ref().to_vec())
        })
    }
}

/// The private scalar and public point of a P-256 PKCS#8 v1 document as `ring` writes it
/// (RFC 5915 `ECPrivateKey` with the named curve in the algorithm identifier and the
/// public key in `[1]`): `None` if it has any other shape.
fn p256_parts(der: &[u8]) -> Option<Zeroizing<[u8; EC_SEALED]>> {
    const PRIVATE_AT: usize = 36;
    const PUBLIC_AT: usize = PRIVATE_AT + 32 + 5;
    let private = der.get(PRIVATE_AT..PRIVATE_AT + 32)?;
    let public = der.get(PUBLIC_AT..)?;
    // OCTET STRING (32) before the scalar; [1] { BIT STRING (66, no unused bits) } before
    // the point, which is uncompressed and ends the document.
    let framed = der.get(PRIVATE_AT - 2..PRIVATE_AT) == Some(&[0x04, 0x20])
        && der.get(PRIVATE_AT + 32..PUBLIC_AT) == Some(&[0xa1, 0x44, 0x03, 0x42, 0x00])
        && public.len() == 65
        && public.first() == Some(&0x04);
    if !framed {
        return None;
    }
    let mut raw = Zeroizing::new([0u8; EC_SEALED]);
    let (d, point) = raw.split_at_mut(32);
    d.copy_from_slice(private);
    point.copy_from_slice(public);
    Some(raw)
}

/// A random `jti`: 128 bits, base64url.
pub fn random_jti() -> Result<String, JwsError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|_| JwsError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// The claims of a `private_key_jwt` client assertion (RFC 7523 §3, OpenID Connect Core
/// §9): `iss` = `sub` = the client id, `aud` = the issuer identifier (FAPI 2.0 requires
/// exactly that, and other providers accept it), a minute of life, a unique `jti`.
pub fn client_assertion_claims(client_id: &str, issuer: &str, now: u64, jti: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": issuer,
        "iat": now,
        "exp": now + 60,
        "jti": jti,
    })
}

/// The claims of a DPoP proof (RFC 9449 §4.2): the method, the target URI without query
/// and fragment, the time, a unique `jti`, the server's nonce when it gave one, and `ath`
/// (base64url SHA-256 of the access token) when the proof goes with one.
pub fn dpop_claims(
    htm: &str,
    htu: &url::Url,
    now: u64,
    jti: &str,
    nonce: Option<&str>,
    access_token: Option<&str>,
) -> Value {
    let mut htu = htu.clone();
    htu.set_query(None);
    htu.set_fragment(None);
    let mut claims = json!({"htm": htm, "htu": htu.as_str(), "iat": now, "jti": jti});
    if let Some(obj) = claims.as_object_mut() {
        if let Some(nonce) = nonce {
            obj.insert("nonce".into(), nonce.into());
        }
        if let Some(at) = access_token {
            obj.insert(
                "ath".into(),
                URL_SAFE_NO_PAD.encode(Sha256::digest(at.as_bytes())).into(),
            );
        }
    }
    claims
}

/// `x` and `y` of an uncompressed P-256 point (0x04 || X || Y) as JWK members.
fn ec_members(point: &[u8]) -> Result<Map<String, Value>, JwsError> {
    let (x, y) = match point {
        [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
        _ => return Err(JwsError::WrongKey),
    };
    let mut m = Map::new();
    m.insert("crv".into(), "P-256".into());
    m.insert("kty".into(), "EC".into());
    m.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
    m.insert("y".into(), URL_SAFE_NO_PAD.encode(y).into());
    Ok(m)
}

/// RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace,
/// base64url. `serde_json`'s map keeps keys sorted, so serialising only the required
/// members is exactly the canonical form.
fn thumbprint(jwk: &Map<String, Value>) -> String {
    let required: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        Some("RSA") => &["e", "kty", "n"],
        _ => &[],
    };
    let canonical: Map<String, Value> = required
        .iter()
        .filter_map(|k| jwk.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    let text = Value::Object(canonical).to_string();
    URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

/// The RFC 7638 thumbprint of a JWK given as JSON (for tests and resource servers).
pub fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    jwk.as_object().map(thumbprint)
}

/// `base64url(header).base64url(claims).base64url(sign(those))`.
fn compact(
    header: &Value,
    claims: &Value,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, JwsError>,
) -> Result<String, JwsError> {
    let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(out)
}

fn pem(der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + 80));
    out.push_str(PEM_BEGIN);
    out.push('\n');
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(jws: &str) -> (Value, Value, Vec<u8>, String) {
        let p: Vec<&str> = jws.split('.').collect();
        assert_eq!(p.len(), 3);
        let dec = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        (
            serde_json::from_slice(&dec(p[0])).unwrap(),
            serde_json::from_slice(&dec(p[1])).unwrap(),
            dec(p[2]),
            format!("{}.{}", p[0], p[1]),
        )
    }

    #[test]
    fn es256_signatures_verify_with_the_published_key() {
        let (key, pem) = EcKey::generate().unwrap();
        let back = EcKey::from_pem(&pem).unwrap();
        assert_eq!(back.kid(), key.kid(), "PEM round trip keeps the key");
        let jws = back.sign("JWT", &json!({"iss": "bff"})).unwrap();
        let (header, claims, sig, input) = parts(&jws);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], key.kid());
        assert_eq!(claims["iss"], "bff");
        let jwk = key.public_jwk().unwrap();
        assert!(jwk.get("d").is_none(), "no private part");
        let dec = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
        let mut point = vec![4u8];
        point.extend(dec("x"));
        point.extend(dec("y"));
        let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
        public.verify(input.as_bytes(), &sig).unwrap();
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(public.verify(input.as_bytes(), &bad).is_err());
    }

    #[test]
    fn ed25519_proofs_carry_the_key_that_verifies_them() {
        let key = EdKey::generate().unwrap();
        let same = EdKey::from_seed(key.seed()).unwrap();
        assert_eq!(same.thumbprint(), key.thumbprint());
        assert_ne!(EdKey::generate().unwrap().thumbprint(), key.thumbprint());
        let jws = key
            .sign_with_jwk("dpop+jwt", &json!({"htm": "GET"}))
            .unwrap();
        let (header, _, sig, input) = parts(&jws);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(jwk_thumbprint(&header["jwk"]).unwrap(), key.thumbprint());
        let x = URL_SAFE_NO_PAD
            .decode(header["jwk"]["x"].as_str().unwrap())
            .unwrap();
        signature::UnparsedPublicKey::new(&signature::ED25519, x)
            .verify(input.as_bytes(), &sig)
            .unwrap();
    }

    /// Verifies a compact JWS by the `jwk` of its own header (ES256 or EdDSA).
    fn verify_by_header_jwk(jws: &str) -> Value {
        let (header, _, sig, input) = parts(jws);
        let dec = |k: &str| {
            URL_SAFE_NO_PAD
                .decode(header["jwk"][k].as_str().unwrap())
                .unwrap()
        };
        let result = match header["alg"].as_str().unwrap() {
            "ES256" => {
                let mut point = vec![4u8];
                point.extend(dec("x"));
                point.extend(dec("y"));
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input.as_bytes(), &sig)
            }
            "EdDSA" => signature::UnparsedPublicKey::new(&signature::ED25519, dec("x"))
                .verify(input.as_bytes(), &sig),
            other => panic!("alg {other}"),
        };
        result.unwrap();
        header
    }

    #[test]
    fn dpop_keys_of_both_algorithms_survive_sealing_and_sign_verifiable_proofs() {
        for alg in [DpopAlg::Es256, DpopAlg::EdDsa] {
            let key = DpopKey::generate(alg).unwrap();
            assert_eq!(key.alg(), alg);
            let sealed = key.sealed();
            let expected_len = if alg == DpopAlg::Es256 { 130 } else { 43 };
            assert_eq!(sealed.expose().len(), expected_len, "{alg:?}");
            let back = DpopKey::from_sealed(&sealed).unwrap();
            assert_eq!(back.alg(), alg);
            assert_eq!(back.thumbprint(), key.thumbprint(), "{alg:?}: the same key");
            assert_ne!(
                DpopKey::generate(alg).unwrap().thumbprint(),
                key.thumbprint()
            );
            let jws = back
                .sign_with_jwk("dpop+jwt", &json!({"htm": "GET"}))
                .unwrap();
            let header = verify_by_header_jwk(&jws);
            assert_eq!(header["alg"], alg.name());
            assert_eq!(jwk_thumbprint(&header["jwk"]).unwrap(), key.thumbprint());
            assert!(header["jwk"].get("d").is_none(), "no private part");
            assert!(!format!("{key:?}").contains(sealed.expose()));
        }
        // A session sealed before ES256 proof keys holds an Ed25519 seed: it still opens.
        let old = EdKey::generate().unwrap();
        let opened = DpopKey::from_sealed(&old.sealed_seed()).unwrap();
        assert_eq!(opened.alg(), DpopAlg::EdDsa);
        assert_eq!(opened.thumbprint(), old.thumbprint());
    }

    #[test]
    fn refuses_sealed_dpop_keys_of_other_lengths_or_inconsistent_halves() {
        for bad in ["", "AAAA", "!!", &"A".repeat(129), &"A".repeat(131)] {
            assert!(
                DpopKey::from_sealed(&SecretString::from(bad)).is_err(),
                "{bad}"
            );
        }
        // The scalar of one key with the public point of another: ring refuses the pair.
        let a = DpopKey::generate(DpopAlg::Es256).unwrap().sealed();
        let b = DpopKey::generate(DpopAlg::Es256).unwrap().sealed();
        let raw_a = URL_SAFE_NO_PAD.decode(a.expose()).unwrap();
        let raw_b = URL_SAFE_NO_PAD.decode(b.expose()).unwrap();
        let mixed = [&raw_a[..32], &raw_b[32..]].concat();
        let mixed = SecretString::new(URL_SAFE_NO_PAD.encode(mixed));
        assert!(DpopKey::from_sealed(&mixed).is_err());
        assert!(p256_parts(&[0u8; 138]).is_none(), "not ring's layout");
    }

    #[test]
    fn chooses_es256_when_offered_else_eddsa() {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(DpopAlg::choose(None), Some(DpopAlg::Es256));
        assert_eq!(
            DpopAlg::choose(Some(&list(&["EdDSA", "ES256"]))),
            Some(DpopAlg::Es256)
        );
        assert_eq!(
            DpopAlg::choose(Some(&list(&["PS256", "Ed25519"]))),
            Some(DpopAlg::EdDsa)
        );
        assert_eq!(DpopAlg::choose(Some(&list(&["PS256", "RS256"]))), None);
        assert_eq!(DpopAlg::choose(Some(&[])), None);
    }

    #[test]
    fn dpop_claims_bind_method_target_and_token() {
        let url = url::Url::parse("https://api.example/v1/x?secret=1#frag").unwrap();
        let c = dpop_claims("GET", &url, 1000, "j1", Some("n1"), Some("at"));
        assert_eq!(
            c["htu"], "https://api.example/v1/x",
            "no query, no fragment"
        );
        assert_eq!(c["htm"], "GET");
        assert_eq!(c["nonce"], "n1");
        // RFC 9449 §4.2: ath = base64url(SHA-256(ASCII(access token))).
        assert_eq!(c["ath"], URL_SAFE_NO_PAD.encode(Sha256::digest(b"at")));
        let bare = dpop_claims("POST", &url, 1000, "j2", None, None);
        assert!(bare.get("nonce").is_none() && bare.get("ath").is_none());
        assert_ne!(random_jti().unwrap(), random_jti().unwrap());
        let a = client_assertion_claims("bff", "https://op", 1000, "j");
        assert_eq!(
            (a["iss"].as_str(), a["sub"].as_str(), a["aud"].as_str()),
            (Some("bff"), Some("bff"), Some("https://op"))
        );
        assert_eq!(a["exp"], 1060);
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn refuses_keys_that_are_not_p256_pkcs8() {
        assert!(matches!(EcKey::from_pem("garbage"), Err(JwsError::NotPem)));
        let not_b64 = format!("{PEM_BEGIN}\n!!!\n{PEM_END}");
        assert!(matches!(EcKey::from_pem(&not_b64), Err(JwsError::NotPem)));
        let not_a_key = format!("{PEM_BEGIN}\nAAAA\n{PEM_END}");
        assert!(matches!(
            EcKey::from_pem(&not_a_key),
            Err(JwsError::WrongKey)
        ));
        let (key, pem) = EcKey::generate().unwrap();
        let shown = format!("{key:?} {:?}", EdKey::generate().unwrap());
        let body_line = pem.lines().nth(1).unwrap();
        assert!(
            !shown.contains(body_line) && shown.contains(key.kid()),
            "{shown}"
        );
    }
}
