//! The configuration: a TOML file overlaid with `SEALGATE_<SECTION>__<KEY>` variables,
//! parsed once at start-up into typed values, with every problem reported together.
//!
//! One file per section, each with its types and its validator (`oidc`, `cookies`, `keys`,
//! `session`, `routes` with `frontend`, `server` with `tls`); `env` decides which variables
//! are configuration. Uses nothing else of the crate but `error` and `secret`. Reading the
//! process environment is the caller's business: `load` takes the variables as pairs, so
//! tests pass a map.

mod cookies;
mod env;
mod keys;
mod oidc;
mod routes;
mod server;
mod session;
mod store;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

pub use self::cookies::{Cookies, MAX_CHUNKS_LIMIT, SameSite};
pub use self::env::{ENV_CONFIG_FILE, ENV_NOT_CONFIG, ENV_PORT, ENV_PREFIX};
pub use self::keys::{KeySource, Keys};
pub use self::oidc::{ClientAuthMethod, ClientKey, Oidc, Par};
pub use self::routes::{Frontend, Route, TokenMode};
pub use self::server::{Server, Tls};
pub use self::session::{MAX_CACHE_ENTRIES, Session};
pub use self::store::{MAX_PREFIX_LEN, Store};
use crate::error::{ConfigError, ConfigIssue};

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
    /// `[store]`: the fleet's shared store; `None` keeps every instance on its own.
    pub store: Option<Store>,
    /// `SEALGATE_*` variables that are not configuration (a platform's service links such as
    /// `SEALGATE_SERVICE_HOST`): ignored, and named in one warning once logging is up.
    pub ignored_env: Vec<String>,
}

// The file as written: every field optional or defaulted, unknown keys refused.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    public_url: Option<String>,
    #[serde(default)]
    oidc: oidc::RawOidc,
    #[serde(default)]
    cookies: cookies::RawCookies,
    #[serde(default)]
    keys: keys::RawKeys,
    #[serde(default)]
    session: session::RawSession,
    #[serde(default)]
    routes: Vec<routes::RawRoute>,
    frontend: Option<routes::RawFrontend>,
    tls: Option<server::RawTls>,
    #[serde(default)]
    server: server::RawServer,
    store: Option<store::RawStore>,
}

impl Config {
    /// Parses `toml_text` (the file; may be empty) overlaid with `env`, the process's
    /// variables (only `SEALGATE_*` and `PORT` are looked at).
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
        let applied = env::apply(&mut table, env, &mut issues);
        if !issues.is_empty() {
            return Err(ConfigError(issues));
        }
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let message = e.into_inner().message().trim().to_owned();
                // An unknown key set from the environment is named by its variable.
                let var = Some(format!("{ENV_PREFIX}{}", key.replace('.', "__")))
                    .filter(|_| message.starts_with("unknown field"))
                    .map(|v| v.to_ascii_uppercase())
                    .filter(|var| applied.names.iter().any(|n| n == var));
                ConfigError::one(var.as_deref().unwrap_or(&key), message)
            })?;
        let mut config = raw.validate()?;
        config.ignored_env = applied.ignored;
        Ok(config)
    }
}

impl RawConfig {
    /// Every section's validator runs, so every problem is reported at once.
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
        let oidc = self.oidc.validate(&mut v);
        let cookies = self.cookies.validate(&mut v);
        let keys = self.keys.validate(&mut v);
        let session = self.session.validate(&mut v);
        let routes = routes::validate_routes(self.routes, &mut v);
        let frontend = self.frontend.and_then(|f| f.validate(&mut v));
        let tls = self.tls.and_then(|t| t.validate(&mut v));
        let server = self.server.validate(&mut v, listen);
        let store = self.store.and_then(|s| s.validate(&mut v));
        match (listen, public_url, oidc, keys, session) {
            (Some(listen), Some(public_url), Some(oidc), Some(keys), Some(session))
                if v.0.is_empty() =>
            {
                Ok(Config {
                    listen,
                    public_url,
                    oidc,
                    cookies,
                    keys,
                    session,
                    routes,
                    frontend,
                    tls,
                    server,
                    store,
                    ignored_env: Vec::new(),
                })
            }
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

    /// A duration such as `"90s"`, `"15m"`, `"8h"`, or `default` when not set.
    fn duration(&mut self, key: &str, value: Option<String>, default: &str) -> Option<Duration> {
        self.parse(key, value.as_deref().unwrap_or(default), |s| {
            humantime::parse_duration(s)
                .map_err(|e| format!("{e} (write durations like \"90s\", \"15m\", \"8h\")"))
        })
    }
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
    use std::path::PathBuf;

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
        assert_eq!(c.session.cache_entries, 4096);
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
