//! `[[routes]]` (the API upstreams) and `[frontend]` (the SPA).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{Issues, flex};

/// Whether a route sends the access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    /// A session is required (401 without); its token is sent. The default.
    Required,
    /// The token is sent when there is a session; without one the call goes anonymously.
    Optional,
    /// No token is ever sent (a public upstream behind the same origin).
    None,
}

#[derive(Debug)]
pub struct Route {
    pub prefix: String,
    pub upstream: Url,
    /// Remove the prefix from the path before forwarding (default false).
    pub strip_prefix: bool,
    pub token: TokenMode,
    /// How long the upstream may take to start answering (default 30s).
    pub timeout: Duration,
    /// The browser's cookies (by name) that this upstream receives; by default none: the
    /// `Cookie` header never goes upstream.
    pub forward_cookies: Vec<String>,
    /// PEM file of CA certificates trusted for this upstream's TLS instead of the webpki
    /// roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug)]
pub enum Frontend {
    StaticDir(PathBuf),
    Upstream(Url),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    prefix: String,
    upstream: String,
    #[serde(default, deserialize_with = "flex::opt_bool")]
    strip_prefix: Option<bool>,
    token: Option<String>,
    timeout: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_list")]
    forward_cookies: Option<Vec<String>>,
    ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFrontend {
    static_dir: Option<String>,
    upstream: Option<String>,
}

/// The routes, longest prefix first (the first match is the one), each problem named by
/// its index in the file.
pub(super) fn validate_routes(raw: Vec<RawRoute>, v: &mut Issues) -> Vec<Route> {
    let mut routes = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        if !r.prefix.starts_with('/') || r.prefix.starts_with("/bff/") || r.prefix == "/bff" {
            v.push(
                &format!("{key}.prefix"),
                "must start with / and not be under /bff/",
            );
        }
        let token = match r.token.as_deref() {
            None | Some("required") => TokenMode::Required,
            Some("optional") => TokenMode::Optional,
            Some("none") => TokenMode::None,
            Some(other) => {
                v.push(
                    &format!("{key}.token"),
                    format!("{other:?} is not one of required, optional, none"),
                );
                TokenMode::Required
            }
        };
        let timeout = v.duration(&format!("{key}.timeout"), r.timeout, "30s");
        let forward_cookies = r.forward_cookies.unwrap_or_default();
        if let Some(bad) = forward_cookies
            .iter()
            .find(|n| n.is_empty() || !n.bytes().all(is_token_char))
        {
            v.push(
                &format!("{key}.forward_cookies"),
                format!("{bad:?} is not a cookie name"),
            );
        }
        if r.ca_file.as_deref() == Some("") {
            v.push(&format!("{key}.ca_file"), "must name a PEM file");
        }
        if let (Some(upstream), Some(timeout)) = (
            v.parse(&format!("{key}.upstream"), &r.upstream, http_url),
            timeout,
        ) {
            routes.push(Route {
                prefix: r.prefix,
                upstream,
                strip_prefix: r.strip_prefix.unwrap_or(false),
                token,
                timeout,
                forward_cookies,
                ca_file: r.ca_file.filter(|f| !f.is_empty()).map(PathBuf::from),
            });
        }
    }
    if let Some(dup) = routes
        .iter()
        .enumerate()
        .find(|(i, r)| routes.iter().take(*i).any(|o| o.prefix == r.prefix))
    {
        v.push(&format!("routes[{}].prefix", dup.0), "is given twice");
    }
    // Longest prefix wins: keep them longest first, so the first match is the one.
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    routes
}

impl RawFrontend {
    pub(super) fn validate(self, v: &mut Issues) -> Option<Frontend> {
        match self {
            RawFrontend {
                static_dir: Some(d),
                upstream: None,
            } => Some(Frontend::StaticDir(d.into())),
            RawFrontend {
                static_dir: None,
                upstream: Some(u),
            } => v
                .parse("frontend.upstream", &u, http_url)
                .map(Frontend::Upstream),
            _ => {
                v.push("frontend", "set exactly one of static_dir or upstream");
                None
            }
        }
    }
}

fn http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| e.to_string())?;
    if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
        Ok(url)
    } else {
        Err("must be an http:// or https:// URL".into())
    }
}

/// RFC 9110 §5.6.2 tchar, the characters of a cookie name (RFC 6265 §4.1.1).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
