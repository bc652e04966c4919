//! The environment's part of the configuration: which `SEALGATE_*` variables are settings,
//! which are read elsewhere (`SEALGATE_CONFIG`, `SEALGATE_LOG`, `SEALGATE_LOG_FORMAT`), which
//! are a platform's and ignored, and the platform's `PORT`.

use crate::error::ConfigIssue;

/// Prefix of configuration variables.
pub const ENV_PREFIX: &str = "SEALGATE_";
/// Variable naming the configuration file; not itself a setting.
pub const ENV_CONFIG_FILE: &str = "SEALGATE_CONFIG";
/// `SEALGATE_*` variables that are read as documented and are not configuration keys.
pub const ENV_NOT_CONFIG: [&str; 3] = [ENV_CONFIG_FILE, "SEALGATE_LOG", "SEALGATE_LOG_FORMAT"];
/// The top-level keys that may come from `SEALGATE_<KEY>` (no `__`).
const ENV_TOP_LEVEL: [&str; 2] = ["listen", "public_url"];
/// The sections `SEALGATE_<SECTION>__<KEY>` may name.
const ENV_SECTIONS: [&str; 8] = [
    "oidc", "cookies", "keys", "session", "server", "tls", "frontend", "store",
];
/// The platform's port variable (Cloud Run, Knative, Heroku-style platforms): used for
/// `listen = "0.0.0.0:$PORT"` when `listen` is not set.
pub const ENV_PORT: &str = "PORT";

/// What the environment did to the table.
pub(super) struct Applied {
    /// Every `SEALGATE_*` variable seen, to name an unknown key by its variable.
    pub names: Vec<String>,
    /// The `SEALGATE_*` variables that are not configuration, sorted.
    pub ignored: Vec<String>,
}

/// Overlays the configuration variables of `env` on `table`, then `PORT` when `listen` is
/// set by neither.
pub(super) fn apply<I, K, V>(
    table: &mut toml::Table,
    env: I,
    issues: &mut Vec<ConfigIssue>,
) -> Applied
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut names = Vec::new();
    let mut ignored = Vec::new();
    let mut port = None;
    for (name, value) in env {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name == ENV_PORT {
            port = Some(value.to_owned());
            continue;
        }
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        names.push(name.to_owned());
        if !overlay(table, name, value, issues) {
            ignored.push(name.to_owned());
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
    ignored.sort();
    Applied { names, ignored }
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
