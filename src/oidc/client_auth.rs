//! How sealgate proves at the provider's back channel (token, revocation and PAR endpoints)
//! that it is the client: a client secret (RFC 6749 §2.3.1), or a `private_key_jwt`
//! assertion signed with its own P-256 key (RFC 7523 §2.2, OpenID Connect Core §9), and
//! the public half of that key for `/bff/jwks.json`.
//!
//! Reads the key file once, at start-up (and at each discovery attempt, which builds the
//! provider); never logs or prints a private key.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::{ClientAuth, OidcError, Settings};
use crate::clock::now_secs;
use crate::config::ClientKey;
use crate::jws::{self, EcKey};
use crate::secret::SecretString;

/// RFC 7523 §2.2.
pub(super) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Largest key file read: a P-256 PKCS#8 PEM is about 240 bytes.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// The client's credentials, loaded.
pub(super) enum Credentials {
    /// `client_secret_basic`: the secret in an `Authorization: Basic` header.
    Basic(SecretString),
    /// `client_secret_post`: the secret in the form body.
    Post(SecretString),
    /// `private_key_jwt`: an assertion signed with `key`; `next` is only published.
    PrivateKeyJwt {
        key: Box<EcKey>,
        next: Option<Box<EcKey>>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic(_) => f.write_str("Basic"),
            Credentials::Post(_) => f.write_str("Post"),
            Credentials::PrivateKeyJwt { key, .. } => write!(f, "PrivateKeyJwt({})", key.kid()),
        }
    }
}

/// A client key that cannot be used: the configuration key, the file, and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {what}: {reason}")]
pub struct ClientKeyError {
    /// `oidc.client_key`, `oidc.client_key_pem` or `oidc.client_key_next`.
    pub key: &'static str,
    what: String,
    reason: String,
}

/// How one back-channel request authenticates the client: an `Authorization` header
/// value, and form parameters besides `client_id`.
pub(super) struct ClientProof {
    pub header: Option<SecretString>,
    pub params: Vec<(&'static str, SecretString)>,
}

impl Credentials {
    /// The credentials the settings name, the key files read and checked: a P-256 PKCS#8
    /// PEM that neither other users nor the group may write, and other users may not read
    /// (group read is allowed, as Kubernetes `fsGroup` mounts need).
    pub(super) fn load(settings: &Settings) -> Result<Credentials, ClientKeyError> {
        match settings.client_auth {
            ClientAuth::Basic => Ok(Credentials::Basic(settings.client_secret.clone())),
            ClientAuth::Post => Ok(Credentials::Post(settings.client_secret.clone())),
            ClientAuth::PrivateKeyJwt => {
                let key = match &settings.client_key {
                    Some(ClientKey::File(path)) => read_key("oidc.client_key", path)?,
                    Some(ClientKey::Pem(pem)) => {
                        EcKey::from_pem(pem.expose()).map_err(|e| ClientKeyError {
                            key: "oidc.client_key_pem",
                            what: "the PEM".into(),
                            reason: e.to_string(),
                        })?
                    }
                    None => {
                        return Err(ClientKeyError {
                            key: "oidc.client_key",
                            what: "(not set)".into(),
                            reason: "private_key_jwt needs a client key".into(),
                        });
                    }
                };
                let next = match &settings.client_key_next {
                    Some(path) => Some(Box::new(read_key("oidc.client_key_next", path)?)),
                    None => None,
                };
                Ok(Credentials::PrivateKeyJwt {
                    key: Box::new(key),
                    next,
                })
            }
        }
    }

    /// The proof for one request to an endpoint of the provider whose issuer identifier is
    /// `issuer`: FAPI 2.0 Security Profile §5.3.2.1 wants the assertion's `aud` to be the
    /// issuer identifier, whichever endpoint it goes to, and every provider accepts that.
    pub(super) fn proof(&self, client_id: &str, issuer: &str) -> Result<ClientProof, OidcError> {
        Ok(match self {
            Credentials::Basic(secret) => ClientProof {
                header: Some(basic_auth(client_id, secret)),
                params: Vec::new(),
            },
            Credentials::Post(secret) => ClientProof {
                header: None,
                params: vec![("client_secret", secret.clone())],
            },
            Credentials::PrivateKeyJwt { .. } => ClientProof {
                header: None,
                params: self.assertion_params(client_id, issuer)?,
            },
        })
    }

    /// `client_assertion_type` and `client_assertion` with `private_key_jwt`, else nothing
    /// (the secret methods are the openidconnect crate's at the token endpoint).
    pub(super) fn assertion_params(
        &self,
        client_id: &str,
        issuer: &str,
    ) -> Result<Vec<(&'static str, SecretString)>, OidcError> {
        let Credentials::PrivateKeyJwt { key, .. } = self else {
            return Ok(Vec::new());
        };
        let internal = |e: jws::JwsError| OidcError::Invalid(format!("client assertion: {e}"));
        let jti = jws::random_jti().map_err(internal)?;
        let claims = jws::client_assertion_claims(client_id, issuer, now_secs(), &jti);
        let assertion = key.sign("JWT", &claims).map_err(internal)?;
        Ok(vec![
            ("client_assertion_type", SecretString::from(ASSERTION_TYPE)),
            ("client_assertion", SecretString::new(assertion)),
        ])
    }

    /// Whether the openidconnect client is built with the secret (the secret methods).
    pub(super) fn secret(&self) -> Option<&SecretString> {
        match self {
            Credentials::Basic(s) | Credentials::Post(s) => Some(s),
            Credentials::PrivateKeyJwt { .. } => None,
        }
    }

    /// The public JWK Set of the client's keys, signing key first; `None` without
    /// `private_key_jwt`.
    pub(super) fn public_jwks(&self) -> Option<Value> {
        let Credentials::PrivateKeyJwt { key, next } = self else {
            return None;
        };
        let keys: Vec<Value> = std::iter::once(key)
            .chain(next)
            .filter_map(|k| k.public_jwk().ok())
            .collect();
        Some(json!({ "keys": keys }))
    }
}

/// `sealgate client-key --out FILE`: a new P-256 key written to `out` as PKCS#8 PEM, mode
/// 0600, and its public JWK (no private part) returned. An existing `out` is never
/// overwritten: the key goes to a temporary file beside it (created exclusively, synced),
/// which is then hard-linked to `out` (`link(2)` fails if `out` exists, atomically, where
/// a check then `rename(2)` would race) and removed; then the folder is synced.
pub fn create_key_file(out: &Path) -> std::io::Result<Value> {
    let exists = || {
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists; refusing to overwrite a key (remove it first)",
        )
    };
    if out.symlink_metadata().is_ok() {
        return Err(exists());
    }
    let (key, pem) = EcKey::generate().map_err(std::io::Error::other)?;
    let jwk = key.public_jwk().map_err(std::io::Error::other)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| std::io::Error::other("--out names no file"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    // A leftover of a run that died before its link.
    let _ = std::fs::remove_file(&tmp);
    let written = crate::key_admin::write_new_private(&tmp, pem.as_bytes())
        .and_then(|()| std::fs::hard_link(&tmp, out));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
        other => other?,
    }
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(jwk)
}

fn read_key(name: &'static str, path: &Path) -> Result<EcKey, ClientKeyError> {
    let refuse = |reason: String| ClientKeyError {
        key: name,
        what: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    if meta.len() > MAX_KEY_FILE {
        return Err(refuse(format!("larger than {MAX_KEY_FILE} bytes")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o137 != 0 {
            return Err(refuse(format!(
                "mode {mode:04o} lets others read or write the key; chmod 600 (or 640)"
            )));
        }
    }
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?);
    EcKey::from_pem(&text).map_err(|e| refuse(e.to_string()))
}

/// RFC 6749 §2.3.1: both parts form-urlencoded before base64.
fn basic_auth(client_id: &str, secret: &SecretString) -> SecretString {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = zeroize::Zeroizing::new(format!("{}:{}", enc(client_id), enc(secret.expose())));
    SecretString::new(format!("Basic {}", STANDARD.encode(pair.as_bytes())))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn claims_and_header(jwt: &str) -> (Value, Value) {
        let mut parts = jwt.split('.');
        let mut dec = || {
            serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap())
                .unwrap()
        };
        let header = dec();
        (header, dec())
    }

    fn jwt_credentials() -> Credentials {
        let (key, _) = EcKey::generate().unwrap();
        let (next, _) = EcKey::generate().unwrap();
        Credentials::PrivateKeyJwt {
            key: Box::new(key),
            next: Some(Box::new(next)),
        }
    }

    #[test]
    fn assertion_names_the_client_and_the_issuer() {
        let creds = jwt_credentials();
        let Credentials::PrivateKeyJwt { key, .. } = &creds else {
            unreachable!()
        };
        let proof = creds.proof("bff", "https://op.example").unwrap();
        assert!(proof.header.is_none());
        assert_eq!(proof.params[0].0, "client_assertion_type");
        assert_eq!(proof.params[0].1.expose(), ASSERTION_TYPE);
        assert_eq!(proof.params[1].0, "client_assertion");
        let (header, claims) = claims_and_header(proof.params[1].1.expose());
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], key.kid());
        assert_eq!(claims["iss"], "bff");
        assert_eq!(claims["sub"], "bff");
        assert_eq!(claims["aud"], "https://op.example");
        let exp = claims["exp"].as_u64().unwrap();
        let iat = claims["iat"].as_u64().unwrap();
        assert!(exp > iat && exp - iat <= 60);
        let again = creds.proof("bff", "https://op.example").unwrap();
        let (_, claims2) = claims_and_header(again.params[1].1.expose());
        assert_ne!(claims["jti"], claims2["jti"], "a fresh jti per assertion");
    }

    #[test]
    fn jwks_publishes_both_keys_and_no_private_part() {
        let creds = jwt_credentials();
        let jwks = creds.public_jwks().unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0]["kid"], keys[1]["kid"]);
        assert!(
            keys.iter()
                .all(|k| k.get("d").is_none() && k["kty"] == "EC")
        );
        assert!(Credentials::Basic("s".into()).public_jwks().is_none());
    }

    #[test]
    fn secret_methods_send_the_secret_where_they_say() {
        let basic = Credentials::Basic("p@ss word".into())
            .proof("my client", "https://op")
            .unwrap();
        // RFC 6749 §2.3.1: "my+client:p%40ss+word".
        assert_eq!(
            basic.header.unwrap().expose(),
            format!("Basic {}", STANDARD.encode("my+client:p%40ss+word"))
        );
        let post = Credentials::Post("s".into())
            .proof("c", "https://op")
            .unwrap();
        assert!(post.header.is_none());
        assert_eq!(post.params[0].0, "client_secret");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_key_files_others_may_read_or_that_are_no_p256_key() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("client.pem");
        let (_, pem) = EcKey::generate().unwrap();
        std::fs::write(&path, pem.as_bytes()).unwrap();
        let settings = |path: &Path| Settings {
            client_auth: ClientAuth::PrivateKeyJwt,
            client_key: Some(ClientKey::File(path.to_path_buf())),
            ..Settings::for_tests()
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Credentials::load(&settings(&path)).unwrap_err();
        assert_eq!(err.key, "oidc.client_key");
        assert!(err.to_string().contains("0644"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Credentials::load(&settings(&path)).is_ok());
        std::fs::write(&path, "not a key").unwrap();
        let err = Credentials::load(&settings(&path)).unwrap_err();
        assert!(err.to_string().contains("PKCS#8"), "{err}");
        let err = Credentials::load(&settings(&tmp.path().join("missing.pem"))).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
