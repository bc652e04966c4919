//! `[store]`: the optional shared store (Redis standalone or Cluster) of a fleet.
//!
//! The URL may carry a password, so it is a `SecretString` throughout, and no message
//! here ever repeats it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::Issues;
use crate::secret::SecretString;

/// Longest key prefix accepted: every key and channel carries it.
pub const MAX_PREFIX_LEN: usize = 64;

/// The shared store.
#[derive(Debug)]
pub struct Store {
    /// Standalone: one URL. Cluster: one URL per seed node, each with the credentials
    /// written once in the configured URL. Each is `redis://...` or `rediss://...`.
    pub nodes: Vec<SecretString>,
    /// `redis+cluster://` / `rediss+cluster://`.
    pub cluster: bool,
    /// Prepended to every key and channel, so that several deployments share one Redis.
    pub prefix: String,
    /// Bound on every command (and on connecting).
    pub timeout: Duration,
    /// How often the revocations are read in full (besides after every (re)subscribe).
    pub resync: Duration,
    /// A PEM file of the CA(s) that sign the store's TLS certificates (`rediss://`), trusted
    /// instead of the webpki roots: a managed Redis with a private CA.
    pub ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    url: Option<SecretString>,
    prefix: Option<String>,
    timeout: Option<String>,
    resync: Option<String>,
    ca_file: Option<String>,
}

impl RawStore {
    pub(super) fn validate(self, v: &mut Issues) -> Option<Store> {
        let nodes = v.required("store.url", self.url).and_then(|url| {
            parse_url(url.expose())
                .map_err(|m| v.push("store.url", m))
                .ok()
        });
        let prefix = self.prefix.unwrap_or_else(|| "sealgate:".to_owned());
        if prefix.len() > MAX_PREFIX_LEN || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            v.push(
                "store.prefix",
                format!("must be printable ASCII without spaces, at most {MAX_PREFIX_LEN} bytes"),
            );
        }
        let timeout = v.duration("store.timeout", self.timeout, "250ms");
        if timeout.is_some_and(|d| d.is_zero() || d > Duration::from_secs(30)) {
            v.push("store.timeout", "must be between 1ms and 30s");
        }
        let resync = v.duration("store.resync", self.resync, "30s");
        if resync.is_some_and(|d| d < Duration::from_secs(1)) {
            v.push("store.resync", "must be at least 1s");
        }
        let ca_file = match self.ca_file {
            Some(f) if f.is_empty() => {
                v.push("store.ca_file", "must name a PEM file");
                None
            }
            Some(f) => Some(PathBuf::from(f)),
            None => None,
        };
        let tls = nodes
            .as_ref()
            .is_some_and(|(n, _)| n.iter().all(|u| u.expose().starts_with("rediss://")));
        if ca_file.is_some() && nodes.is_some() && !tls {
            v.push(
                "store.ca_file",
                "needs a TLS store URL (rediss:// or rediss+cluster://)",
            );
        }
        let (nodes, cluster) = nodes?;
        Some(Store {
            nodes,
            cluster,
            prefix,
            timeout: timeout?,
            resync: resync?,
            ca_file,
        })
    }
}

/// Splits the configured URL into node URLs. Messages never quote the URL: it may hold a
/// password.
fn parse_url(url: &str) -> Result<(Vec<SecretString>, bool), String> {
    const FORMS: &str = "must be redis://[user:pass@]host:port[/db], rediss://..., \
                         redis+cluster://host:port,host:port,... or rediss+cluster://...";
    let (scheme, rest) = url.split_once("://").ok_or(FORMS)?;
    let (scheme, cluster) = match scheme {
        "redis" | "rediss" => (scheme, false),
        "redis+cluster" => ("redis", true),
        "rediss+cluster" => ("rediss", true),
        _ => return Err(FORMS.into()),
    };
    // Credentials, when present, come once before the first host (a password may hold
    // '@' only percent-encoded, as in any URL).
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hosts, path) = match hosts.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (hosts, None),
    };
    if cluster && path.is_some_and(|p| !p.is_empty()) {
        return Err("a cluster has only database 0: no /db in a cluster URL".into());
    }
    let hosts: Vec<&str> = hosts.split(',').collect();
    if !cluster && hosts.len() > 1 {
        return Err("several hosts need redis+cluster:// (or rediss+cluster://)".into());
    }
    let mut nodes = Vec::with_capacity(hosts.len());
    for host in hosts {
        let mut node = format!("{scheme}://");
        if let Some(u) = userinfo {
            node.push_str(u);
            node.push('@');
        }
        node.push_str(host);
        if let Some(p) = path {
            node.push('/');
            node.push_str(p);
        }
        let node = SecretString::new(node);
        check_node(node.expose())?;
        nodes.push(node);
    }
    Ok((nodes, cluster))
}

fn check_node(node: &str) -> Result<(), String> {
    let url = Url::parse(node).map_err(|e| format!("is not a URL ({e})"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("needs a host".into());
    }
    if url.port().is_none() {
        return Err("needs a port on every host (Redis: 6379)".into());
    }
    // redis-rs reads options from the query and fragment (`#insecure` turns off TLS
    // certificate checks): none is accepted.
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment".into());
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err("the path must be a database number".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(url: &str) -> Result<(Vec<String>, bool), String> {
        parse_url(url).map(|(n, c)| (n.iter().map(|n| n.expose().to_owned()).collect(), c))
    }

    #[test]
    fn standalone_and_cluster_urls_become_node_urls() {
        assert_eq!(
            nodes("redis://127.0.0.1:6379").unwrap(),
            (vec!["redis://127.0.0.1:6379".to_owned()], false)
        );
        assert_eq!(
            nodes("rediss://u:p%40ss@redis.internal:6380/2").unwrap(),
            (
                vec!["rediss://u:p%40ss@redis.internal:6380/2".to_owned()],
                false
            )
        );
        assert_eq!(
            nodes("rediss+cluster://:pw@a:7000,b:7001,[::1]:7002").unwrap(),
            (
                vec![
                    "rediss://:pw@a:7000".to_owned(),
                    "rediss://:pw@b:7001".to_owned(),
                    "rediss://:pw@[::1]:7002".to_owned()
                ],
                true
            )
        );
    }

    #[test]
    fn refuses_bad_urls_without_repeating_them() {
        for url in [
            "http://h:1",
            "redis://h",
            "redis://:hunter2@:6379",
            "redis://h:1,h:2",
            "redis+cluster://h:1,h:2/3",
            "redis+cluster://h:1,,h:2",
            "redis://h:1/db",
            "rediss://:hunter2@h:1/#insecure",
            "redis://h:1/?protocol=resp3",
            "hunter2",
        ] {
            let err = nodes(url).unwrap_err();
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    const MINIMAL: &str = "public_url = \"https://app.example.com\"\n[oidc]\n\
        issuer = \"https://idp.example.com\"\nclient_id = \"bff\"\nclient_secret = \"s\"\n";

    fn load(extra: &str, env: &[(&str, &str)]) -> Result<crate::config::Config, Vec<String>> {
        crate::config::Config::load(&format!("{MINIMAL}{extra}"), env.iter().copied())
            .map_err(|e| e.0.into_iter().map(|i| i.key).collect())
    }

    #[test]
    fn no_section_no_store_and_defaults_with_one() {
        assert!(load("", &[]).unwrap().store.is_none());
        let c = load("", &[("SEALGATE_STORE__URL", "redis://127.0.0.1:6379")]).unwrap();
        let s = c.store.unwrap();
        assert_eq!(s.prefix, "sealgate:");
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.resync, Duration::from_secs(30));
        assert!(!s.cluster);
    }

    #[test]
    fn refuses_bad_store_values_naming_each_key() {
        let long = "p".repeat(MAX_PREFIX_LEN + 1);
        let err = load(
            &format!("[store]\nprefix = \"{long}\"\ntimeout = \"0s\"\nresync = \"soon\"\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            ["store.url", "store.prefix", "store.timeout", "store.resync"]
        );
        let err = load(
            "[store]\nurl = \"redis://:hunter2@h\"\nprefix = \"a b\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(err, ["store.url", "store.prefix"]);
        let err = load("[store]\nurl = \"redis://h:1\"\nurll = \"x\"\n", &[]).unwrap_err();
        assert_eq!(err, ["store.urll"]);
    }

    #[test]
    fn ca_file_is_for_tls_store_urls_only() {
        let c = load(
            "[store]\nurl = \"rediss://h:6380\"\nca_file = \"/etc/ca.pem\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.store.unwrap().ca_file, Some(PathBuf::from("/etc/ca.pem")));
        let env = [
            ("SEALGATE_STORE__URL", "rediss+cluster://a:7000,b:7001"),
            ("SEALGATE_STORE__CA_FILE", "ca.pem"),
        ];
        assert!(load("", &env).unwrap().store.unwrap().ca_file.is_some());
        assert!(
            load("[store]\nurl = \"rediss://h:1\"\n", &[])
                .unwrap()
                .store
                .unwrap()
                .ca_file
                .is_none()
        );
        for url in ["redis://h:6379", "redis+cluster://a:7000,b:7001"] {
            let err = load(
                &format!("[store]\nurl = \"{url}\"\nca_file = \"ca.pem\"\n"),
                &[],
            );
            assert_eq!(err.unwrap_err(), ["store.ca_file"], "{url}");
        }
        let err = load("[store]\nurl = \"rediss://h:1\"\nca_file = \"\"\n", &[]);
        assert_eq!(err.unwrap_err(), ["store.ca_file"]);
    }

    #[test]
    fn store_url_is_never_in_debug_output_or_errors() {
        let c = load("", &[("SEALGATE_STORE__URL", "redis://:hunter2@h:1")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let err = crate::config::Config::load(
            &format!("{MINIMAL}[store]\nurl = \"redis://:hunter2@h\"\n"),
            std::iter::empty::<(&str, &str)>(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
