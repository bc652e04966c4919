//! `[oidc]`: the provider and this client's registration at it.

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
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub allow_insecure_http: bool,
    /// Client authentication at the token and revocation endpoints.
    pub client_auth: ClientAuthMethod,
}

/// `client_secret_basic` (default) or `client_secret_post` (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMethod {
    Basic,
    Post,
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
}

impl RawOidc {
    pub(super) fn validate(self, v: &mut Issues) -> Option<Oidc> {
        let allow_insecure_http = self.allow_insecure_http.unwrap_or(false);
        let client_auth = match self.client_auth.as_deref() {
            None | Some("client_secret_basic") => ClientAuthMethod::Basic,
            Some("client_secret_post") => ClientAuthMethod::Post,
            Some(other) => {
                v.push(
                    "oidc.client_auth",
                    format!("{other:?} is not one of client_secret_basic, client_secret_post"),
                );
                ClientAuthMethod::Basic
            }
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
        let client_secret = v.required(
            "oidc.client_secret",
            self.client_secret.filter(|s| !s.is_empty()),
        );
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
        })
    }
}

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
fn is_scope_char(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
}
