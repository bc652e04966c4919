//! `[server]` (limits, timeouts, the admin listener) and `[tls]` (termination).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Issues, flex};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    shutdown_delay: Option<String>,
    drain_timeout: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_uint")]
    max_connections: Option<u64>,
    idle_timeout: Option<String>,
    admin_listen: Option<String>,
}

impl RawServer {
    /// `listen` is the main address, which the admin listener must not reuse.
    pub(super) fn validate(self, v: &mut Issues, listen: Option<SocketAddr>) -> Server {
        let drain_timeout = v.duration("server.drain_timeout", self.drain_timeout, "10s");
        let shutdown_delay = v.duration("server.shutdown_delay", self.shutdown_delay, "0s");
        let max_connections = self.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            v.push("server.max_connections", "must be at least 1");
        }
        let idle_timeout = v.duration("server.idle_timeout", self.idle_timeout, "60s");
        if idle_timeout.is_some_and(|d| d.is_zero()) {
            v.push("server.idle_timeout", "must be at least 1s");
        }
        let admin_listen = self.admin_listen.and_then(|s| {
            v.parse("server.admin_listen", &s, |s| {
                s.parse::<SocketAddr>().map_err(|e| e.to_string())
            })
        });
        if let (Some(a), Some(l)) = (admin_listen, listen)
            && a == l
        {
            v.push("server.admin_listen", "must differ from listen");
        }
        Server {
            shutdown_delay: shutdown_delay.unwrap_or_default(),
            drain_timeout: drain_timeout.unwrap_or(Duration::from_secs(10)),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            idle_timeout: idle_timeout.unwrap_or(Duration::from_secs(60)),
            admin_listen,
        }
    }
}

impl RawTls {
    pub(super) fn validate(self, v: &mut Issues) -> Option<Tls> {
        match self {
            RawTls {
                cert: Some(cert),
                key: Some(key),
            } => Some(Tls {
                cert: cert.into(),
                key: key.into(),
            }),
            RawTls { cert, .. } => {
                let key = if cert.is_none() {
                    "tls.cert"
                } else {
                    "tls.key"
                };
                v.push(key, "is required when [tls] is set");
                None
            }
        }
    }
}
