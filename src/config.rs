//! The configuration: a TOML file overlaid with `SEALGATE_<SECTION>__<KEY>` variables,
//! parsed once at start-up into typed values, with every problem reported together.
//!
//! Uses nothing else of the crate but `error` and `secret`. Reading the process environment
//! is the caller's business: `load` takes the variables as pairs, so tests pass a map.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::error::{ConfigError, ConfigIssue};
use crate::secret::SecretString;

/// Prefix of configuration variables.
pub const ENV_PREFIX: &str = "SEALGATE_";
/// Variable naming the configuration file; not itself a setting.
pub const ENV_CONFIG_FILE: &str = "SEALGATE_CONFIG";
/// `SEALGATE_*` variables that are read as documented and are not configuration keys.
pub const ENV_NOT_CONFIG: [&str; 3] = [ENV_CONFIG_FILE, "SEALGATE_LOG", "SEALGATE_LOG_FORMAT"];
/// The top-level keys that may come from `SEALGATE_<KEY>` (no `__`).
const ENV_TOP_LEVEL: [&str; 2] = ["listen", "public_url"];
/// The sections `SEALGATE_<SECTION>__<KEY>` may name.
const ENV_SECTIONS: [&str; 7] = [
    "oidc", "cookies", "keys", "session", "server", "tls", "frontend",
];
/// The platform's port variable (Cloud Run, Knative, Heroku-style platforms): used for
/// `listen = "0.0.0.0:$PORT"` when `listen` is not set.
pub const ENV_PORT: &str = "PORT";

/// Highest chunk count an operator may configure (`cookies.max_chunks`).
pub const MAX_CHUNKS_LIMIT: usize = 16;

/// The `SameSite` cookie attribute (RFC 6265bis §4.1.2.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// The whole configuration, validated.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// The origin browsers use, without a trailing slash.
    pub public_url: Url,
    pub oidc: Oidc,
    pub cookies: Cookies,
    pub keys: Keys,
    pub session: Session,
    pub routes: Vec<Route>,
    pub frontend: Option<Frontend>,
    pub tls: Option<Tls>,
    pub server: Server,
    /// `SEALGATE_*` variables that are not configuration (a platform's service links such as
    /// `SEALGATE_SERVICE_HOST`): ignored, and named in one warning once logging is up.
    pub ignored_env: Vec<String>,
}

/// TLS termination: PEM files, re-read when they change.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Server limits.
#[derive(Debug)]
pub struct Server {
    /// After SIGTERM, how long to keep accepting with `/readyz` answering 503, so that load
    /// balancers without connection retries see the instance leave before it stops listening.
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Idle HTTP/1.1 keep-alive and HTTP/2 connections (and WebSocket tunnels) are closed
    /// after this long without traffic.
    pub idle_timeout: Duration,
    /// When set, `/metrics` is served on this address only (not on `listen`).
    pub admin_listen: Option<SocketAddr>,
}

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

#[derive(Debug)]
pub struct Cookies {
    pub secure: bool,
    pub same_site: SameSite,
    /// Most chunks one sealed cookie may use.
    pub max_chunks: usize,
}

/// Where the key ring comes from.
#[derive(Debug)]
pub enum KeySource {
    /// A folder of `<kid>.key` files and a `primary` file.
    Dir(PathBuf),
    /// A `KID:KEY,...` string, usually from `SEALGATE_KEYS__RING`.
    Ring { ring: SecretString, primary: String },
}

#[derive(Debug)]
pub struct Keys {
    pub source: KeySource,
    /// Accept key files the group may read (0640/0440), as Kubernetes `fsGroup` needs.
    pub allow_group_read: bool,
}

#[derive(Debug)]
pub struct Session {
    pub absolute: Duration,
    pub idle: Duration,
    pub refresh_skew: Duration,
    /// Most opened sessions kept for proxied calls (`session_cache`); 0 disables the cache.
    pub cache_entries: usize,
}

/// Most `session.cache_entries` an operator may configure (about 8 KB each).
pub const MAX_CACHE_ENTRIES: u64 = 1 << 20;

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

// The file as written: every field optional or defaulted, unknown keys refused.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    public_url: Option<String>,
    #[serde(default)]
    oidc: RawOidc,
    #[serde(default)]
    cookies: RawCookies,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    routes: Vec<RawRoute>,
    frontend: Option<RawFrontend>,
    tls: Option<RawTls>,
    #[serde(default)]
    server: RawServer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    shutdown_delay: Option<String>,
    drain_timeout: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_uint")]
    max_connections: Option<u64>,
    idle_timeout: Option<String>,
    admin_listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    #[serde(default, deserialize_with = "flex::opt_list")]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "flex::opt_bool")]
    allow_insecure_http: Option<bool>,
    client_auth: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCookies {
    #[serde(default, deserialize_with = "flex::opt_bool")]
    secure: Option<bool>,
    same_site: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_uint")]
    max_chunks: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    dir: Option<String>,
    ring: Option<SecretString>,
    primary: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_bool")]
    allow_group_read: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSession {
    absolute: Option<String>,
    idle: Option<String>,
    refresh_skew: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_uint")]
    cache_entries: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
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
struct RawFrontend {
    static_dir: Option<String>,
    upstream: Option<String>,
}

impl Config {
    /// Parses `toml_text` (the file; may be empty) overlaid with `env`, the process's
    /// variables (only those starting with `SEALGATE_` are looked at).
    pub fn load<I, K, V>(toml_text: &str, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut table: toml::Table = toml::from_str(toml_text).map_err(|e| {
            ConfigError::one(
                "(file)",
                e.message().trim().to_owned() + &toml_position(toml_text, &e),
            )
        })?;
        let mut issues = Vec::new();
        let mut ignored_env = Vec::new();
        let mut port = None;
        let mut env_names = Vec::new();
        for (name, value) in env {
            let (name, value) = (name.as_ref(), value.as_ref());
            if name.starts_with(ENV_PREFIX) {
                env_names.push(name.to_owned());
            }
            if name == ENV_PORT {
                port = Some(value.to_owned());
                continue;
            }
            if !overlay(&mut table, name, value, &mut issues) && name.starts_with(ENV_PREFIX) {
                ignored_env.push(name.to_owned());
            }
        }
        if !table.contains_key("listen")
            && let Some(port) = port
        {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {
                    table.insert("listen".into(), toml::Value::String(format!("0.0.0.0:{p}")));
                }
                _ => issues.push(ConfigIssue {
                    key: ENV_PORT.into(),
                    message: format!("{port:?} is not a TCP port (1-65535)"),
                }),
            }
        }
        if !issues.is_empty() {
            return Err(ConfigError(issues));
        }
        ignored_env.sort();
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let message = e.into_inner().message().trim().to_owned();
                // An unknown key set from the environment is named by its variable.
                let var = Some(format!("{ENV_PREFIX}{}", key.replace('.', "__")))
                    .filter(|_| message.starts_with("unknown field"))
                    .map(|v| v.to_ascii_uppercase())
                    .filter(|var| env_names.iter().any(|n| n == var));
                ConfigError::one(var.as_deref().unwrap_or(&key), message)
            })?;
        let mut config = raw.validate()?;
        config.ignored_env = ignored_env;
        Ok(config)
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let mut v = Issues::default();

        let listen = v.parse(
            "listen",
            self.listen.as_deref().unwrap_or("127.0.0.1:8080"),
            |s| s.parse::<SocketAddr>().map_err(|e| e.to_string()),
        );
        let public_url = v.required("public_url", self.public_url).and_then(|s| {
            v.parse("public_url", &s, |s| {
                let url = Url::parse(s).map_err(|e| e.to_string())?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err("must be an http(s) origin such as https://app.example.com".into());
                }
                if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                    return Err("must be an origin only, with no path, query or fragment".into());
                }
                Ok(url)
            })
        });

        let allow_insecure_http = self.oidc.allow_insecure_http.unwrap_or(false);
        let client_auth = match self.oidc.client_auth.as_deref() {
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
        let issuer =
            v.required("oidc.issuer", self.oidc.issuer).and_then(|s| {
                v.parse("oidc.issuer", &s, |s| {
                    let url = Url::parse(s).map_err(|e| e.to_string())?;
                    match url.scheme() {
                        "https" => {}
                        "http" if allow_insecure_http => {}
                        "http" => return Err(
                            "is http://; set oidc.allow_insecure_http = true for development only"
                                .into(),
                        ),
                        _ => return Err("must be an https:// URL".into()),
                    }
                    if url.query().is_some() || url.fragment().is_some() {
                        return Err("must have no query or fragment".into());
                    }
                    Ok(s.to_owned())
                })
            });
        let client_id = v.required(
            "oidc.client_id",
            self.oidc.client_id.filter(|s| !s.is_empty()),
        );
        let client_secret = v.required(
            "oidc.client_secret",
            self.oidc.client_secret.filter(|s| !s.is_empty()),
        );
        let scopes = self.oidc.scopes.unwrap_or_else(|| {
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

        let same_site = match self
            .cookies
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("lax") => SameSite::Lax,
            Some("strict") => SameSite::Strict,
            Some("none") => SameSite::None,
            Some(other) => {
                v.push(
                    "cookies.same_site",
                    format!("{other:?} is not one of lax, strict, none"),
                );
                SameSite::Lax
            }
        };
        let secure = self.cookies.secure.unwrap_or(true);
        if same_site == SameSite::None && !secure {
            v.push(
                "cookies.same_site",
                "none requires cookies.secure = true (browsers refuse it otherwise)",
            );
        }
        let max_chunks = self.cookies.max_chunks.unwrap_or(4);
        if !(1..=MAX_CHUNKS_LIMIT as u64).contains(&max_chunks) {
            v.push(
                "cookies.max_chunks",
                format!("must be between 1 and {MAX_CHUNKS_LIMIT}"),
            );
        }

        let allow_group_read = self.keys.allow_group_read.unwrap_or(false);
        let source = match (self.keys.ring.filter(|r| !r.is_empty()), self.keys.primary) {
            (Some(ring), Some(primary)) if !primary.is_empty() => {
                Some(KeySource::Ring { ring, primary })
            }
            (Some(_), _) => {
                v.push(
                    "keys.primary",
                    "must name the sealing key when keys.ring is set",
                );
                None
            }
            (None, Some(_)) => {
                v.push(
                    "keys.primary",
                    "is only for keys.ring; a key folder names its primary in its `primary` file",
                );
                None
            }
            (None, None) => Some(KeySource::Dir(PathBuf::from(
                self.keys.dir.unwrap_or_else(|| "keys".into()),
            ))),
        };

        let duration = |v: &mut Issues, key: &str, value: Option<String>, default: &str| {
            v.parse(key, value.as_deref().unwrap_or(default), |s| {
                humantime::parse_duration(s)
                    .map_err(|e| format!("{e} (write durations like \"90s\", \"15m\", \"8h\")"))
            })
        };
        let absolute = duration(&mut v, "session.absolute", self.session.absolute, "12h");
        let idle = duration(&mut v, "session.idle", self.session.idle, "1h");
        let refresh_skew = duration(
            &mut v,
            "session.refresh_skew",
            self.session.refresh_skew,
            "60s",
        );
        let cache_entries = self.session.cache_entries.unwrap_or(1024);
        if cache_entries > MAX_CACHE_ENTRIES {
            v.push(
                "session.cache_entries",
                format!("must be between 0 and {MAX_CACHE_ENTRIES}"),
            );
        }
        if let (Some(a), Some(i)) = (absolute, idle) {
            if a.as_secs() == 0 || i.as_secs() == 0 {
                v.push("session", "absolute and idle must be at least 1s");
            } else if i > a {
                v.push("session.idle", "must not exceed session.absolute");
            }
        }

        let mut routes = Vec::new();
        for (i, r) in self.routes.into_iter().enumerate() {
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
            let timeout = duration(&mut v, &format!("{key}.timeout"), r.timeout, "30s");
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
        let frontend = match self.frontend {
            None => None,
            Some(RawFrontend {
                static_dir: Some(d),
                upstream: None,
            }) => Some(Frontend::StaticDir(d.into())),
            Some(RawFrontend {
                static_dir: None,
                upstream: Some(u),
            }) => v
                .parse("frontend.upstream", &u, http_url)
                .map(Frontend::Upstream),
            Some(_) => {
                v.push("frontend", "set exactly one of static_dir or upstream");
                None
            }
        };

        let tls = match self.tls {
            None => None,
            Some(RawTls {
                cert: Some(cert),
                key: Some(key),
            }) => Some(Tls {
                cert: cert.into(),
                key: key.into(),
            }),
            Some(RawTls { cert, .. }) => {
                let key = if cert.is_none() {
                    "tls.cert"
                } else {
                    "tls.key"
                };
                v.push(key, "is required when [tls] is set");
                None
            }
        };
        let drain_timeout = duration(
            &mut v,
            "server.drain_timeout",
            self.server.drain_timeout,
            "10s",
        );
        let shutdown_delay = duration(
            &mut v,
            "server.shutdown_delay",
            self.server.shutdown_delay,
            "0s",
        );
        let max_connections = self.server.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            v.push("server.max_connections", "must be at least 1");
        }
        let idle_timeout = duration(
            &mut v,
            "server.idle_timeout",
            self.server.idle_timeout,
            "60s",
        );
        if idle_timeout.is_some_and(|d| d.is_zero()) {
            v.push("server.idle_timeout", "must be at least 1s");
        }
        let admin_listen = self.server.admin_listen.and_then(|s| {
            v.parse("server.admin_listen", &s, |s| {
                s.parse::<SocketAddr>().map_err(|e| e.to_string())
            })
        });
        if let (Some(a), Some(l)) = (admin_listen, listen)
            && a == l
        {
            v.push("server.admin_listen", "must differ from listen");
        }

        match (
            listen,
            public_url,
            issuer,
            client_id,
            client_secret,
            source,
            absolute,
            idle,
            refresh_skew,
        ) {
            (
                Some(listen),
                Some(public_url),
                Some(issuer),
                Some(client_id),
                Some(client_secret),
                Some(source),
                Some(absolute),
                Some(idle),
                Some(refresh_skew),
            ) if v.0.is_empty() => Ok(Config {
                listen,
                public_url,
                oidc: Oidc {
                    issuer,
                    client_id,
                    client_secret,
                    scopes,
                    allow_insecure_http,
                    client_auth,
                },
                cookies: Cookies {
                    secure,
                    same_site,
                    max_chunks: max_chunks as usize,
                },
                keys: Keys {
                    source,
                    allow_group_read,
                },
                session: Session {
                    absolute,
                    idle,
                    refresh_skew,
                    cache_entries: usize::try_from(cache_entries).unwrap_or(usize::MAX),
                },
                routes,
                frontend,
                tls,
                server: Server {
                    shutdown_delay: shutdown_delay.unwrap_or_default(),
                    drain_timeout: drain_timeout.unwrap_or(Duration::from_secs(10)),
                    max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
                    idle_timeout: idle_timeout.unwrap_or(Duration::from_secs(60)),
                    admin_listen,
                },
                ignored_env: Vec::new(),
            }),
            _ => Err(ConfigError(v.0)),
        }
    }
}

/// Collected validation problems.
#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn required<T>(&mut self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.push(key, "is required");
        }
        value
    }

    fn parse<T>(
        &mut self,
        key: &str,
        text: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        f(text).map_err(|m| self.push(key, m)).ok()
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

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
fn is_scope_char(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
}

fn toml_position(text: &str, e: &toml::de::Error) -> String {
    e.span()
        .map(|span| {
            let line = text
                .get(..span.start)
                .map_or(0, |t| t.matches('\n').count())
                + 1;
            format!(" (line {line})")
        })
        .unwrap_or_default()
}

/// Sets `SEALGATE_<SECTION>__<KEY>` (or `SEALGATE_LISTEN` / `SEALGATE_PUBLIC_URL`) as a
/// string in the table; typed fields accept strings (see `flex`), so `"true"`, `"4"` and
/// `"openid profile"` work. Returns whether the variable is configuration: one without
/// `__` that is not a top-level key (`SEALGATE_SERVICE_HOST`, `SEALGATE_PORT=tcp://...`,
/// which Kubernetes injects for a Service named `sealgate`) is not, and is left to the
/// caller to warn about; one of the `__` form naming an unknown section is refused, so a
/// typo stays loud (an unknown key within a known section is refused by the section's
/// `deny_unknown_fields`).
fn overlay(
    table: &mut toml::Table,
    name: &str,
    value: &str,
    issues: &mut Vec<ConfigIssue>,
) -> bool {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return false;
    };
    if ENV_NOT_CONFIG.contains(&name) {
        return true;
    }
    let rest = rest.to_ascii_lowercase();
    let value = toml::Value::String(value.to_owned());
    let mut parts = rest.split("__");
    match (parts.next(), parts.next(), parts.next()) {
        (Some(key), None, None) => {
            if !ENV_TOP_LEVEL.contains(&key) {
                return false;
            }
            table.insert(key.to_owned(), value);
        }
        (Some(section), Some(key), None) if ENV_SECTIONS.contains(&section) && !key.is_empty() => {
            let entry = table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key.to_owned(), value);
                }
                _ => issues.push(ConfigIssue {
                    key: name.to_owned(),
                    message: format!("{section} is not a section"),
                }),
            }
        }
        (Some(section), Some(_), None) => issues.push(ConfigIssue {
            key: name.to_owned(),
            message: format!(
                "{section:?} is not a section that can be set from the environment (one of {})",
                ENV_SECTIONS.join(", ")
            ),
        }),
        _ => issues.push(ConfigIssue {
            key: name.to_owned(),
            message: "is not of the form SEALGATE_<SECTION>__<KEY>".into(),
        }),
    }
    true
}

/// Deserializers that accept a native TOML value or the string an environment variable
/// carries.
mod flex {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrStr {
        B(bool),
        S(String),
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum UintOrStr {
        N(u64),
        S(String),
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrStr {
        L(Vec<String>),
        S(String),
    }

    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match BoolOrStr::deserialize(d)? {
            BoolOrStr::B(b) => Ok(Some(b)),
            BoolOrStr::S(s) => match s.as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(D::Error::custom(format!(
                    "expected true or false, got {s:?}"
                ))),
            },
        }
    }

    pub fn opt_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match UintOrStr::deserialize(d)? {
            UintOrStr::N(n) => Ok(Some(n)),
            UintOrStr::S(s) => s
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("expected a whole number, got {s:?}"))),
        }
    }

    /// A list, or a string of items separated by spaces or commas.
    pub fn opt_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        Ok(Some(match ListOrStr::deserialize(d)? {
            ListOrStr::L(l) => l,
            ListOrStr::S(s) => s
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
public_url = "https://app.example.com"
[oidc]
issuer = "https://idp.example.com"
client_id = "bff"
client_secret = "s3cret"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(text, env.iter().copied())
    }

    fn keys_of(err: ConfigError) -> Vec<String> {
        err.0.into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.oidc.scopes,
            ["openid", "profile", "email", "offline_access"]
        );
        assert!(!c.oidc.allow_insecure_http);
        assert_eq!(c.oidc.client_auth, ClientAuthMethod::Basic);
        let post = load(
            MINIMAL,
            &[("SEALGATE_OIDC__CLIENT_AUTH", "client_secret_post")],
        )
        .unwrap();
        assert_eq!(post.oidc.client_auth, ClientAuthMethod::Post);
        assert!(
            load(
                MINIMAL,
                &[("SEALGATE_OIDC__CLIENT_AUTH", "private_key_jwt")]
            )
            .is_err()
        );
        assert!(c.cookies.secure);
        assert_eq!(c.cookies.same_site, SameSite::Lax);
        assert!(matches!(&c.keys.source, KeySource::Dir(d) if d == &PathBuf::from("keys")));
        assert!(!c.keys.allow_group_read);
        assert_eq!(c.session.absolute, Duration::from_secs(12 * 3600));
        assert_eq!(c.session.idle, Duration::from_secs(3600));
        assert!(c.routes.is_empty() && c.frontend.is_none() && c.tls.is_none());
        assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.session.cache_entries, 1024);
    }

    #[test]
    fn environment_wins_over_the_file() {
        let c = load(
            MINIMAL,
            &[
                ("SEALGATE_OIDC__CLIENT_SECRET", "from-env"),
                ("SEALGATE_LISTEN", "0.0.0.0:9000"),
                ("SEALGATE_COOKIES__SECURE", "false"),
                ("SEALGATE_COOKIES__MAX_CHUNKS", "6"),
                ("SEALGATE_OIDC__SCOPES", "openid email"),
                ("SEALGATE_SESSION__IDLE", "15m"),
                ("SEALGATE_SESSION__CACHE_ENTRIES", "0"),
                ("SEALGATE_CONFIG", "/etc/sealgate.toml"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(c.oidc.client_secret.expose(), "from-env");
        assert_eq!(c.listen.port(), 9000);
        assert!(!c.cookies.secure);
        assert_eq!(c.cookies.max_chunks, 6);
        assert_eq!(c.oidc.scopes, ["openid", "email"]);
        assert_eq!(c.session.idle, Duration::from_secs(900));
        assert_eq!(c.session.cache_entries, 0);
    }

    #[test]
    fn platform_variables_are_ignored_not_refused() {
        // What Kubernetes injects into every pod of a namespace with a Service `sealgate`.
        let c = load(
            MINIMAL,
            &[
                ("SEALGATE_SERVICE_HOST", "10.0.0.1"),
                ("SEALGATE_SERVICE_PORT", "80"),
                ("SEALGATE_SERVICE_PORT_HTTP", "80"),
                ("SEALGATE_PORT", "tcp://10.0.0.1:80"),
                ("SEALGATE_PORT_80_TCP", "tcp://10.0.0.1:80"),
                ("SEALGATE_PORT_80_TCP_ADDR", "10.0.0.1"),
                ("SEALGATE_PORT_80_TCP_PORT", "80"),
                ("SEALGATE_PORT_80_TCP_PROTO", "tcp"),
                ("SEALGATE_LOG_FORMAT", "json"),
                ("SEALGATE_LOG", "debug"),
                ("SEALGATE_CONFIG", "/etc/sealgate.toml"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.ignored_env,
            [
                "SEALGATE_PORT",
                "SEALGATE_PORT_80_TCP",
                "SEALGATE_PORT_80_TCP_ADDR",
                "SEALGATE_PORT_80_TCP_PORT",
                "SEALGATE_PORT_80_TCP_PROTO",
                "SEALGATE_SERVICE_HOST",
                "SEALGATE_SERVICE_PORT",
                "SEALGATE_SERVICE_PORT_HTTP",
            ]
        );
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn refuses_config_form_variables_with_unknown_section_or_key_naming_them() {
        let err = load(MINIMAL, &[("SEALGATE_OIDCC__CLIENT_ID", "x")]).unwrap_err();
        assert_eq!(keys_of(err), ["SEALGATE_OIDCC__CLIENT_ID"]);
        let err = load(MINIMAL, &[("SEALGATE_SERVER__IDLE_TIMOUT", "5s")]).unwrap_err();
        assert_eq!(keys_of(err), ["SEALGATE_SERVER__IDLE_TIMOUT"]);
        let err = load(MINIMAL, &[("SEALGATE_ROUTES__PREFIX", "/a/")]).unwrap_err();
        assert_eq!(keys_of(err), ["SEALGATE_ROUTES__PREFIX"]);
    }

    #[test]
    fn port_is_used_only_when_listen_is_not_set() {
        let c = load(MINIMAL, &[("PORT", "8081")]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8081");
        let c = load(
            MINIMAL,
            &[("PORT", "8081"), ("SEALGATE_LISTEN", "127.0.0.1:9")],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9");
        let c = load(
            &format!("listen = \"127.0.0.1:7\"\n{MINIMAL}"),
            &[("PORT", "8081")],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7");
        assert_eq!(
            keys_of(load(MINIMAL, &[("PORT", "http")]).unwrap_err()),
            ["PORT"]
        );
        assert_eq!(
            keys_of(load(MINIMAL, &[("PORT", "0")]).unwrap_err()),
            ["PORT"]
        );
    }

    #[test]
    fn server_timeouts_admin_listener_and_route_cookies() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert!(c.server.admin_listen.is_none());
        let c = load(
            &format!(
                "{MINIMAL}\n[[routes]]\nprefix = \"/api/\"\nupstream = \"https://a\"\nforward_cookies = [\"lang\"]\nca_file = \"ca.pem\"\n"
            ),
            &[
                ("SEALGATE_SERVER__IDLE_TIMEOUT", "5s"),
                ("SEALGATE_SERVER__ADMIN_LISTEN", "127.0.0.1:9090"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.server.admin_listen.unwrap().port(), 9090);
        assert_eq!(c.routes[0].forward_cookies, ["lang"]);
        assert_eq!(
            c.routes[0].ca_file.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        let bad = format!(
            "{MINIMAL}\n[[routes]]\nprefix = \"/api/\"\nupstream = \"https://a\"\nforward_cookies = [\"a b\"]\n"
        );
        let keys = keys_of(
            load(
                &bad,
                &[
                    ("SEALGATE_SERVER__IDLE_TIMEOUT", "0s"),
                    ("SEALGATE_SERVER__ADMIN_LISTEN", "127.0.0.1:8080"),
                ],
            )
            .unwrap_err(),
        );
        assert_eq!(
            keys,
            [
                "routes[0].forward_cookies",
                "server.idle_timeout",
                "server.admin_listen"
            ]
        );
    }

    #[test]
    fn key_ring_from_the_environment() {
        let c = load(
            MINIMAL,
            &[
                ("SEALGATE_KEYS__RING", "k1:abc"),
                ("SEALGATE_KEYS__PRIMARY", "k1"),
            ],
        )
        .unwrap();
        assert!(matches!(&c.keys.source, KeySource::Ring { primary, .. } if primary == "k1"));
        let err = load(MINIMAL, &[("SEALGATE_KEYS__RING", "k1:abc")]).unwrap_err();
        assert_eq!(keys_of(err), ["keys.primary"]);
    }

    #[test]
    fn reports_every_problem_at_once_naming_each_key() {
        let text = r#"
listen = "nowhere"
public_url = "https://app.example.com/path"
[oidc]
issuer = "http://idp.example.com"
client_id = "bff"
scopes = ["profile"]
[cookies]
same_site = "sometimes"
max_chunks = 99
[session]
idle = "2 fortnights and a bit"
cache_entries = 99999999
[[routes]]
prefix = "/bff/api/"
upstream = "ftp://x"
"#;
        let keys = keys_of(load(text, &[]).unwrap_err());
        for expected in [
            "listen",
            "public_url",
            "oidc.issuer",
            "oidc.client_secret",
            "oidc.scopes",
            "cookies.same_site",
            "cookies.max_chunks",
            "session.idle",
            "session.cache_entries",
            "routes[0].prefix",
            "routes[0].upstream",
        ] {
            assert!(
                keys.iter().any(|k| k == expected),
                "{expected} missing from {keys:?}"
            );
        }
    }

    #[test]
    fn refuses_unknown_keys_and_wrong_types_naming_them() {
        let err = load(&format!("{MINIMAL}\n[cookies]\nsecrue = true\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("cookies"), "{err}");
        assert!(err.to_string().contains("secrue"), "{err}");
        let err = load(MINIMAL, &[("SEALGATE_OIDC__ALLOW_INSECURE_HTTP", "yes")]).unwrap_err();
        assert!(
            err.to_string().contains("oidc.allow_insecure_http"),
            "{err}"
        );
        let err = load(MINIMAL, &[("SEALGATE_NOPE__A__B", "1")]).unwrap_err();
        assert!(err.to_string().contains("SEALGATE_NOPE__A__B"), "{err}");
        let err = load("listen = [", &[]).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn http_issuer_needs_the_development_switch() {
        let text = MINIMAL.replace("https://idp", "http://idp");
        assert_eq!(keys_of(load(&text, &[]).unwrap_err()), ["oidc.issuer"]);
        let c = load(&text, &[("SEALGATE_OIDC__ALLOW_INSECURE_HTTP", "true")]).unwrap();
        assert_eq!(c.oidc.issuer, "http://idp.example.com");
    }

    #[test]
    fn client_secret_is_never_in_debug_output() {
        let c = load(MINIMAL, &[]).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = load(
            MINIMAL,
            &[
                ("SEALGATE_KEYS__RING", "k:SECRETRING"),
                ("SEALGATE_KEYS__PRIMARY", "k"),
            ],
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("SECRETRING"));
    }

    #[test]
    fn routes_are_ordered_longest_prefix_first_with_options() {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nprefix = \"/api/\"\nupstream = \"http://a\"\n\
             [[routes]]\nprefix = \"/api/admin/\"\nupstream = \"https://b\"\nstrip_prefix = true\ntoken = \"optional\"\ntimeout = \"5s\"\n"
        );
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.routes[0].prefix, "/api/admin/");
        assert!(c.routes[0].strip_prefix);
        assert_eq!(c.routes[0].token, TokenMode::Optional);
        assert_eq!(c.routes[0].timeout, Duration::from_secs(5));
        let bad = format!(
            "{MINIMAL}\n[[routes]]\nprefix = \"/a/\"\nupstream = \"http://a\"\ntoken = \"sometimes\"\n\
             [[routes]]\nprefix = \"/a/\"\nupstream = \"http://b\"\n"
        );
        let keys = keys_of(load(&bad, &[]).unwrap_err());
        assert!(keys.contains(&"routes[0].token".to_owned()), "{keys:?}");
        assert!(keys.contains(&"routes[1].prefix".to_owned()), "{keys:?}");
    }

    #[test]
    fn routes_and_frontend() {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nprefix = \"/api/\"\nupstream = \"http://127.0.0.1:9100\"\n[frontend]\nstatic_dir = \"web/dist\"\n"
        );
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].prefix, "/api/");
        assert_eq!(c.routes[0].token, TokenMode::Required);
        assert!(!c.routes[0].strip_prefix);
        assert_eq!(c.routes[0].timeout, Duration::from_secs(30));
        assert!(matches!(c.frontend, Some(Frontend::StaticDir(_))));
        let both = format!("{MINIMAL}\n[frontend]\nstatic_dir = \"a\"\nupstream = \"http://x\"\n");
        assert_eq!(keys_of(load(&both, &[]).unwrap_err()), ["frontend"]);
    }
}
