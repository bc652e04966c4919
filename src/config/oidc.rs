//! `[oidc]`: the provider and this client's registration at it.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::{Issues, flex};
use crate::secret::SecretString;

#[derive(Debug)]
pub struct Oidc {
    /// The issuer exactly as written: discovery compares it character for character
    /// (OpenID Connect Discovery §4.3), so it is not normalized (no trailing slash added).
    pub issuer: String,
    pub client_id: String,
    /// Empty with `private_key_jwt`, which needs no secret.
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub allow_insecure_http: bool,
    /// Client authentication at the token, revocation and PAR endpoints.
    pub client_auth: ClientAuthMethod,
    /// The `private_key_jwt` signing key; `Some` exactly when `client_auth` is
    /// `PrivateKeyJwt`. Read and checked at start-up by the caller (`oidc`).
    pub client_key: Option<ClientKey>,
    /// The next client key, published in `/bff/jwks.json` but not used to sign: rotation
    /// is publish next, let the provider learn it, then swap.
    pub client_key_next: Option<PathBuf>,
    /// Pushed authorization requests (RFC 9126).
    pub par: Par,
    /// DPoP-bound tokens (RFC 9449), a proof key per session.
    pub dpop: bool,
    /// Extra parameters of every authorization request (pushed or not), in name order:
    /// what some providers need for a refresh token or an audience (Google's
    /// `access_type=offline`, Auth0's `audience`).
    pub authorization_params: Vec<(String, String)>,
}

/// Authorization request parameters sealgate sets itself, or that would change the flow
/// it runs (`response_mode`, `request`): never taken from `authorization_params`.
const RESERVED_PARAMS: [&str; 15] = [
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "code_challenge",
    "code_challenge_method",
    "dpop_jkt",
    "nonce",
    "redirect_uri",
    "request",
    "request_uri",
    "response_mode",
    "response_type",
    "scope",
    "state",
];
/// Longest value of one extra parameter (an `audience` URL, a `prompt` list).
const MAX_PARAM_VALUE: usize = 1024;

/// `authorization_params` as written: a TOML table of strings, or (for the environment,
/// `SEALGATE_OIDC__AUTHORIZATION_PARAMS`) one string in form encoding, `a=1&b=2`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawParams {
    Table(std::collections::BTreeMap<String, String>),
    Form(String),
}

impl RawParams {
    fn validate(self, v: &mut Issues) -> Vec<(String, String)> {
        const KEY: &str = "oidc.authorization_params";
        let mut pairs: Vec<(String, String)> = match self {
            RawParams::Table(t) => t.into_iter().collect(),
            RawParams::Form(f) => url::form_urlencoded::parse(f.as_bytes())
                .into_owned()
                .collect(),
        };
        pairs.sort();
        if let Some(w) = pairs
            .windows(2)
            .find(|w| w.first().map(|p| &p.0) == w.get(1).map(|p| &p.0))
        {
            if let Some((name, _)) = w.first() {
                v.push(KEY, format!("{name:?} is given twice"));
            }
        }
        for (name, value) in &pairs {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !valid_name {
                v.push(
                    KEY,
                    format!("{name:?} is not a parameter name (letters, digits, _ - .)"),
                );
            } else if RESERVED_PARAMS.contains(&name.to_ascii_lowercase().as_str()) {
                v.push(
                    KEY,
                    format!("{name:?} is set by sealgate itself (use oidc.scopes for scope)"),
                );
            } else if value.len() > MAX_PARAM_VALUE || value.chars().any(char::is_control) {
                v.push(
                    KEY,
                    format!("the value of {name:?} is longer than {MAX_PARAM_VALUE} bytes or has control characters"),
                );
            }
        }
        pairs
    }
}

/// How the client authenticates: `client_secret_basic` (default), `client_secret_post`
/// (RFC 6749 §2.3.1) or `private_key_jwt` (RFC 7523, OpenID Connect Core §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMethod {
    Basic,
    Post,
    PrivateKeyJwt,
}

/// Where the `private_key_jwt` key comes from.
#[derive(Clone, Debug)]
pub enum ClientKey {
    /// A PKCS#8 PEM file (`oidc.client_key`), as `sealgate client-key` writes it.
    File(PathBuf),
    /// The PEM itself (`oidc.client_key_pem`, usually `SEALGATE_OIDC__CLIENT_KEY_PEM`).
    Pem(SecretString),
}

/// When to push the authorization request (RFC 9126).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// Whenever discovery advertises a `pushed_authorization_request_endpoint`.
    Auto,
    /// Always: a provider without the endpoint fails discovery.
    Required,
    /// Never.
    Off,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    #[serde(default, deserialize_with = "flex::opt_list")]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "flex::opt_bool")]
    allow_insecure_http: Option<bool>,
    client_auth: Option<String>,
    client_key: Option<String>,
    client_key_pem: Option<SecretString>,
    client_key_next: Option<String>,
    par: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_bool")]
    dpop: Option<bool>,
    authorization_params: Option<RawParams>,
}

impl RawOidc {
    pub(super) fn validate(self, v: &mut Issues) -> Option<Oidc> {
        let allow_insecure_http = self.allow_insecure_http.unwrap_or(false);
        let client_auth = match self.client_auth.as_deref() {
            None | Some("client_secret_basic") => ClientAuthMethod::Basic,
            Some("client_secret_post") => ClientAuthMethod::Post,
            Some("private_key_jwt") => ClientAuthMethod::PrivateKeyJwt,
            Some(other) => {
                v.push(
                    "oidc.client_auth",
                    format!(
                        "{other:?} is not one of client_secret_basic, client_secret_post, private_key_jwt"
                    ),
                );
                ClientAuthMethod::Basic
            }
        };
        let par = match self.par.as_deref() {
            None | Some("auto") => Par::Auto,
            Some("required") => Par::Required,
            Some("off") => Par::Off,
            Some(other) => {
                v.push(
                    "oidc.par",
                    format!("{other:?} is not one of auto, required, off"),
                );
                Par::Auto
            }
        };
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let file = nonempty(self.client_key);
        let pem = self.client_key_pem.filter(|s| !s.is_empty());
        let key_given = file.is_some() || pem.is_some();
        let client_key = match (file, pem) {
            (Some(_), Some(_)) => {
                v.push(
                    "oidc.client_key",
                    "set either oidc.client_key (a file) or oidc.client_key_pem, not both",
                );
                None
            }
            (Some(file), None) => Some(ClientKey::File(PathBuf::from(file))),
            (None, Some(pem)) => Some(ClientKey::Pem(pem)),
            (None, None) => None,
        };
        let client_key_next = nonempty(self.client_key_next).map(PathBuf::from);
        let client_key = if client_auth == ClientAuthMethod::PrivateKeyJwt {
            if !key_given {
                v.push(
                    "oidc.client_key",
                    "is required with client_auth = \"private_key_jwt\" (create one with `sealgate client-key --out FILE`)",
                );
            }
            client_key
        } else {
            if client_key.is_some() || client_key_next.is_some() {
                v.push(
                    "oidc.client_key",
                    "is only used with client_auth = \"private_key_jwt\"",
                );
            }
            None
        };
        let issuer = v.required("oidc.issuer", self.issuer).and_then(|s| {
            v.parse("oidc.issuer", &s, |s| {
                let url = Url::parse(s).map_err(|e| e.to_string())?;
                match url.scheme() {
                    "https" => {}
                    "http" if allow_insecure_http => {}
                    "http" => {
                        return Err(
                            "is http://; set oidc.allow_insecure_http = true for development only"
                                .into(),
                        );
                    }
                    _ => return Err("must be an https:// URL".into()),
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err("must have no query or fragment".into());
                }
                Ok(s.to_owned())
            })
        });
        let client_id = v.required("oidc.client_id", self.client_id.filter(|s| !s.is_empty()));
        let client_secret = self.client_secret.filter(|s| !s.is_empty());
        // private_key_jwt needs no secret; one left over from before the switch is unused,
        // and the caller says so in a warning rather than refusing to start.
        let client_secret = if client_auth == ClientAuthMethod::PrivateKeyJwt {
            Some(client_secret.unwrap_or_default())
        } else {
            v.required("oidc.client_secret", client_secret)
        };
        let scopes = self.scopes.unwrap_or_else(|| {
            ["openid", "profile", "email", "offline_access"]
                .map(String::from)
                .to_vec()
        });
        if !scopes.iter().any(|s| s == "openid") {
            v.push("oidc.scopes", "must include \"openid\"");
        }
        if let Some(bad) = scopes
            .iter()
            .find(|s| s.is_empty() || !s.bytes().all(is_scope_char))
        {
            v.push("oidc.scopes", format!("{bad:?} is not a valid scope"));
        }
        Some(Oidc {
            issuer: issuer?,
            client_id: client_id?,
            client_secret: client_secret?,
            scopes,
            allow_insecure_http,
            client_auth,
            client_key,
            client_key_next,
            par,
            dpop: self.dpop.unwrap_or(false),
            authorization_params: self
                .authorization_params
                .map(|p| p.validate(v))
                .unwrap_or_default(),
        })
    }
}

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
fn is_scope_char(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::error::ConfigError;

    const BASE: &str = r#"
public_url = "https://app.example.com"
[oidc]
issuer = "https://idp.example.com"
client_id = "bff"
"#;

    fn load(extra: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(&format!("{BASE}{extra}"), env.iter().copied())
    }

    fn keys_of(err: ConfigError) -> Vec<String> {
        err.0.into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn private_key_jwt_needs_a_key_and_no_secret() {
        let c = load(
            "client_auth = \"private_key_jwt\"\nclient_key = \"client.pem\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.oidc.client_auth, ClientAuthMethod::PrivateKeyJwt);
        assert!(
            matches!(&c.oidc.client_key, Some(ClientKey::File(f)) if f == &PathBuf::from("client.pem"))
        );
        assert!(c.oidc.client_secret.is_empty());
        let env = load(
            "client_auth = \"private_key_jwt\"\n",
            &[(
                "SEALGATE_OIDC__CLIENT_KEY_PEM",
                "-----BEGIN PRIVATE KEY-----",
            )],
        )
        .unwrap();
        assert!(matches!(env.oidc.client_key, Some(ClientKey::Pem(_))));
        assert!(!format!("{env:?}").contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn authorization_params_come_from_a_table_or_a_form_encoded_variable() {
        let table = load(
            "client_secret = \"s\"\nauthorization_params = { prompt = \"consent\", access_type = \"offline\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            table.oidc.authorization_params,
            [
                ("access_type".to_owned(), "offline".to_owned()),
                ("prompt".to_owned(), "consent".to_owned())
            ]
        );
        let env = load(
            "client_secret = \"s\"\n",
            &[(
                "SEALGATE_OIDC__AUTHORIZATION_PARAMS",
                "audience=https%3A%2F%2Fapi.example.com&prompt=login",
            )],
        )
        .unwrap();
        assert_eq!(
            env.oidc.authorization_params,
            [
                ("audience".to_owned(), "https://api.example.com".to_owned()),
                ("prompt".to_owned(), "login".to_owned())
            ]
        );
        assert!(
            load("client_secret = \"s\"\n", &[])
                .unwrap()
                .oidc
                .authorization_params
                .is_empty()
        );
    }

    #[test]
    fn refuses_authorization_params_sealgate_sets_or_that_change_the_flow() {
        for bad in [
            "{ state = \"x\" }",
            "{ Redirect_Uri = \"https://evil.example\" }",
            "{ response_mode = \"form_post\" }",
            "{ scope = \"admin\" }",
            "{ \"a b\" = \"1\" }",
            "{ ok = \"line\\nbreak\" }",
        ] {
            let err = load(
                &format!("client_secret = \"s\"\nauthorization_params = {bad}\n"),
                &[],
            )
            .unwrap_err();
            assert_eq!(keys_of(err), ["oidc.authorization_params"], "{bad}");
        }
        let twice = load(
            "client_secret = \"s\"\n",
            &[(
                "SEALGATE_OIDC__AUTHORIZATION_PARAMS",
                "prompt=login&prompt=none",
            )],
        )
        .unwrap_err();
        assert_eq!(keys_of(twice), ["oidc.authorization_params"]);
        assert!(
            load(
                "client_secret = \"s\"\nauthorization_params = { max_age = 5 }\n",
                &[]
            )
            .is_err(),
            "values are strings"
        );
    }

    #[test]
    fn refuses_private_key_jwt_without_a_key_naming_it() {
        let err = load("client_auth = \"private_key_jwt\"\n", &[]).unwrap_err();
        assert_eq!(keys_of(err), ["oidc.client_key"]);
        let both = load(
            "client_auth = \"private_key_jwt\"\nclient_key = \"a.pem\"\nclient_key_pem = \"x\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys_of(both), ["oidc.client_key"]);
    }

    #[test]
    fn refuses_a_client_key_without_private_key_jwt() {
        let err = load(
            "client_secret = \"s\"\nclient_key_next = \"next.pem\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys_of(err), ["oidc.client_key"]);
        // And a secret is still required for the secret methods.
        assert_eq!(keys_of(load("", &[]).unwrap_err()), ["oidc.client_secret"]);
    }

    #[test]
    fn par_and_dpop_default_to_auto_and_off() {
        let c = load("client_secret = \"s\"\n", &[]).unwrap();
        assert_eq!((c.oidc.par, c.oidc.dpop), (Par::Auto, false));
        let c = load(
            "client_secret = \"s\"\npar = \"required\"\n",
            &[("SEALGATE_OIDC__DPOP", "true")],
        )
        .unwrap();
        assert_eq!((c.oidc.par, c.oidc.dpop), (Par::Required, true));
        let c = load("client_secret = \"s\"\npar = \"off\"\ndpop = false\n", &[]).unwrap();
        assert_eq!(c.oidc.par, Par::Off);
        let err = load(
            "client_secret = \"s\"\npar = \"sometimes\"\n",
            &[("SEALGATE_OIDC__DPOP", "maybe")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("oidc.dpop"), "{err}");
        let err = load("client_secret = \"s\"\npar = \"sometimes\"\n", &[]).unwrap_err();
        assert_eq!(keys_of(err), ["oidc.par"]);
    }
}
