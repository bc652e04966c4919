//! The `sealgate` command: parse the command line, run one command, map failures to the
//! exit status of the contract (0 success, 2 bad configuration or keys, 1 anything else).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sealgate::config::{Config, ENV_CONFIG_FILE, KeySource};
use sealgate::key_admin;
use sealgate::keys::{KeyError, KeyRing, ModePolicy};
use sealgate::revocations::Record;
use sealgate::store::Store;

#[derive(Parser)]
#[command(
    name = "sealgate",
    version,
    about = "A stateless Backend-for-Frontend for OpenID Connect"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the BFF.
    Serve {
        /// The configuration file (default: $SEALGATE_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and the keys, reach the provider's discovery document,
    /// print a summary; exit 0, or 2 naming what is wrong.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create a new random 256-bit sealing key in DIR and print its key id. The first key
    /// in a folder without keys becomes the primary; later keys only join the ring.
    Keygen {
        /// The key folder (created with mode 0700 if missing).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print a `KID:KEY` entry for SEALGATE_KEYS__RING instead of writing a file.
        #[arg(long, conflicts_with = "dir")]
        ring_entry: bool,
    },
    /// Create a P-256 client signing key for private_key_jwt in FILE (PKCS#8 PEM, mode
    /// 0600; an existing FILE is refused) and print its public JWK, to register at the
    /// provider.
    ClientKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// List, promote and retire the keys of a key folder (see keys/README.md).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sessions across the fleet (needs [store]).
    #[command(subcommand)]
    Sessions(SessionsCommand),
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// End sessions on every instance sharing the store: every session of a subject begun
    /// until now (--sub), or the session with a provider session id (--sid).
    Revoke {
        // Subjects and provider session ids are opaque strings that may start with `-`
        // (base64url ids do one time in 64): taken as values, never as flags.
        #[arg(
            long,
            required_unless_present = "sid",
            conflicts_with = "sid",
            allow_hyphen_values = true
        )]
        sub: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        sid: Option<String>,
        /// The configuration file (default: $SEALGATE_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print every kid of the folder, the primary marked, and check that the ring loads.
    List {
        #[arg(long)]
        dir: PathBuf,
        /// Accept key files the group may read (0640/0440).
        #[arg(long)]
        allow_group_read: bool,
    },
    /// Make KID the key that seals. Do this only once every instance holds KID.
    Promote {
        #[arg(long)]
        dir: PathBuf,
        /// (A kid may begin with `-`: base64url.)
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[arg(long)]
        allow_group_read: bool,
    },
    /// Delete a non-primary key: cookies sealed under it stop opening.
    Retire {
        #[arg(long)]
        dir: PathBuf,
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

/// A failure and the exit status it earns.
struct Failure {
    status: u8,
    message: String,
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Self {
        let status = match e {
            KeyError::Io { .. } | KeyError::Random(_) => 1,
            KeyError::BadKey { .. }
            | KeyError::BadKid { .. }
            | KeyError::DuplicateKid(_)
            | KeyError::DuplicateKey(..)
            | KeyError::Empty(_)
            | KeyError::Primary { .. }
            | KeyError::Permissions { .. }
            | KeyError::BadRingEntry(_)
            | KeyError::NoSuchKey { .. }
            | KeyError::RetirePrimary(_) => 2,
        };
        Failure {
            status,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
        Command::Sessions(SessionsCommand::Revoke { sub, sid, config }) => revoke(sub, sid, config),
        other => run(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("sealgate: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

fn policy(allow_group_read: bool) -> ModePolicy {
    if allow_group_read {
        ModePolicy::AllowGroupRead
    } else {
        ModePolicy::OwnerOnly
    }
}

fn bad_config(message: String) -> Failure {
    Failure { status: 2, message }
}

/// Reads the file named by `--config` or `$SEALGATE_CONFIG` and the environment (and
/// gives the file's text back, to name a route by its number): failures are status 2.
fn read_config(config: Option<PathBuf>) -> Result<(Config, String), Failure> {
    let path = config
        .or_else(|| std::env::var_os(ENV_CONFIG_FILE).map(PathBuf::from))
        .ok_or_else(|| {
            bad_config(format!(
                "no configuration: pass --config FILE or set {ENV_CONFIG_FILE}"
            ))
        })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad_config(format!("{}: {e}", path.display())))?;
    let config = Config::load(&text, std::env::vars()).map_err(|e| bad_config(e.to_string()))?;
    Ok((config, text))
}

/// A store that cannot be set up: a configuration error naming its key (exit 2).
fn store_failure(e: sealgate::store::StoreError) -> Failure {
    match e {
        sealgate::store::StoreError::CaFile(m) => bad_config(m),
        other => bad_config(format!("store.url: {other}")),
    }
}

/// Reads the configuration and loads the key ring it names: every failure here is exit
/// status 2.
fn load(config: Option<PathBuf>) -> Result<(Config, KeyRing), Failure> {
    let (config, text) = read_config(config)?;
    let ring = match &config.keys.source {
        KeySource::Dir(dir) => KeyRing::load_dir(dir, policy(config.keys.allow_group_read)),
        KeySource::Ring { ring, primary } => KeyRing::from_ring_string(ring.expose(), primary),
    }
    .map_err(|e| bad_config(format!("keys: {e}")))?;
    // A route's private CA is read now: a missing or broken file stops start-up (and
    // `check`) naming its key, with N as the file numbers the routes (Config keeps them
    // longest prefix first; prefixes are unique).
    for route in &config.routes {
        let Some(ca) = &route.ca_file else { continue };
        sealgate::http_client::read_roots(ca).map_err(|e| {
            let n = toml::from_str::<toml::Table>(&text).ok().and_then(|t| {
                t.get("routes")?.as_array()?.iter().position(|r| {
                    r.get("prefix").and_then(toml::Value::as_str) == Some(route.prefix.as_str())
                })
            });
            let n = n.map_or_else(|| "?".to_owned(), |n| n.to_string());
            bad_config(format!("routes[{n}].ca_file: {e}"))
        })?;
    }
    // The store's private CA too.
    if let Some(ca) = config.store.as_ref().and_then(|s| s.ca_file.as_ref()) {
        sealgate::http_client::read_roots(ca)
            .map_err(|e| bad_config(format!("store.ca_file: {e}")))?;
    }
    // The private_key_jwt keys too: a missing or unusable file stops start-up naming it.
    sealgate::app::provider_settings(&config)
        .check_client_keys()
        .map_err(|e| bad_config(e.to_string()))?;
    Ok((config, ring))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SEALGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SEALGATE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            status: 1,
            message: format!("runtime: {e}"),
        })
}

fn serve(config: Option<PathBuf>) -> Result<(), Failure> {
    let (config, ring) = load(config)?;
    init_logging();
    if !config.ignored_env.is_empty() {
        tracing::warn!(
            variables = %config.ignored_env.join(" "),
            "ignoring SEALGATE_ variables that are not configuration (a platform's service links?)"
        );
    }
    let listen = config.listen;
    let admin_listen = config.server.admin_listen;
    let tls = match &config.tls {
        Some(t) => {
            Some(sealgate::tls::acceptor(&t.cert, &t.key).map_err(|e| bad_config(e.to_string()))?)
        }
        None => None,
    };
    let rt = runtime()?;
    // The store's client spawns its connection task: built inside the runtime.
    let store = match &config.store {
        Some(c) => Some(Arc::new(
            rt.block_on(async { Store::new(c) })
                .map_err(store_failure)?,
        )),
        None => None,
    };
    let (app, discovery) =
        sealgate::app::App::new(config, ring, tls, store).map_err(|e| Failure {
            status: 1,
            message: e.to_string(),
        })?;
    rt.block_on(async move {
        // Listen first: discovery runs in the background and /readyz says when it is done.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Failure {
                status: 1,
                message: format!("listen on {listen}: {e}"),
            })?;
        tracing::info!(%listen, "serving");
        let admin = match admin_listen {
            Some(addr) => {
                let admin = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Failure {
                        status: 1,
                        message: format!("admin_listen on {addr}: {e}"),
                    })?;
                tracing::info!(%addr, "serving /metrics on the admin listener");
                Some(admin)
            }
            None => None,
        };
        tokio::spawn(discovery);
        tokio::spawn(app.clone().watch_keys(Duration::from_secs(2)));
        tokio::spawn(app.clone().watch_revocations());
        if let Some(store) = app.store() {
            app.metrics.register_store(store.metrics());
            tokio::spawn(store.clone().run());
        }
        sealgate::server::run(app, listener, admin).await;
        Ok(())
    })
}

fn check(config: Option<PathBuf>) -> Result<(), Failure> {
    let (config, ring) = load(config)?;
    if !config.ignored_env.is_empty() {
        eprintln!(
            "sealgate: warning: ignoring SEALGATE_ variables that are not configuration: {}",
            config.ignored_env.join(" ")
        );
    }
    let issuer = config.oidc.issuer.clone();
    let summary = format!(
        "listen {}\npublic_url {}\nissuer {}\nclient_id {}\nkeys {} (primary {})\nroutes {}\ncookies secure={} same_site={} max_chunks={}",
        config.listen,
        config.public_url,
        issuer,
        config.oidc.client_id,
        ring.kids().count(),
        ring.primary().kid(),
        config.routes.len(),
        config.cookies.secure,
        config.cookies.same_site.as_str(),
        config.cookies.max_chunks,
    );
    if let Some(t) = &config.tls {
        sealgate::tls::acceptor(&t.cert, &t.key).map_err(|e| bad_config(e.to_string()))?;
    }
    let settings = sealgate::app::provider_settings(&config);
    let http = sealgate::http_client::HttpClient::new(Duration::from_secs(10), 256 * 1024)
        .map_err(|e| Failure {
            status: 1,
            message: e.to_string(),
        })?;
    runtime()?
        .block_on(sealgate::oidc::Provider::discover(settings, http))
        .map_err(|e| bad_config(format!("oidc.issuer: discovery at {issuer} failed: {e}")))?;
    println!("{summary}\nprovider discovery ok");
    Ok(())
}

/// `sealgate sessions revoke`: writes and publishes one revocation, kept for
/// `session.absolute` (the longest any session it ends could still live).
fn revoke(
    sub: Option<String>,
    sid: Option<String>,
    config: Option<PathBuf>,
) -> Result<(), Failure> {
    let (config, _) = read_config(config)?;
    let store_config = config.store.as_ref().ok_or_else(|| {
        bad_config("store.url: is required: sessions revoke needs [store]".into())
    })?;
    let now = sealgate::clock::now_secs();
    let expires_at = now.saturating_add(config.session.absolute.as_secs());
    let (record, what) = match (sub, sid) {
        (Some(sub), _) => (
            Record::sub(&sub, now, expires_at),
            format!("every session of sub {sub:?} begun until now"),
        ),
        (None, Some(sid)) => (
            Record::sid(&sid, expires_at),
            format!("the session with sid {sid:?}"),
        ),
        (None, None) => return Err(bad_config("pass --sub SUB or --sid SID".into())),
    };
    runtime()?.block_on(async {
        let store = Store::new(store_config).map_err(store_failure)?;
        store.publish(&record).await.map_err(|e| Failure {
            status: 1,
            message: format!("nothing revoked: {e}"),
        })
    })?;
    println!("revoked {what} on every instance");
    Ok(())
}

fn run(command: Command) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let print = |out: &mut dyn Write, text: &str| {
        writeln!(out, "{text}").map_err(|e| Failure {
            status: 1,
            message: format!("stdout: {e}"),
        })
    };
    match command {
        Command::Serve { .. } | Command::Check { .. } | Command::Sessions(_) => Ok(()),
        Command::Keygen {
            ring_entry: true, ..
        } => print(&mut out, &key_admin::keygen_ring_entry()?),
        Command::Keygen { dir, .. } => {
            let dir = dir.ok_or_else(|| Failure {
                status: 2,
                message: "keygen needs --dir DIR (or --ring-entry)".into(),
            })?;
            print(&mut out, &key_admin::keygen(&dir)?)
        }
        Command::ClientKey { out: file } => {
            let jwk = sealgate::oidc::create_key_file(&file).map_err(|e| Failure {
                status: 1,
                message: format!("client-key: {}: {e}", file.display()),
            })?;
            print(&mut out, &jwk.to_string())
        }
        Command::Keys(KeysCommand::List {
            dir,
            allow_group_read,
        }) => {
            let (kids, primary) = key_admin::list(&dir)?;
            for kid in &kids {
                let mark = if primary.as_deref() == Some(kid) {
                    "\tprimary"
                } else {
                    ""
                };
                print(&mut out, &format!("{kid}{mark}"))?;
            }
            KeyRing::load_dir(&dir, policy(allow_group_read))?;
            Ok(())
        }
        Command::Keys(KeysCommand::Promote {
            dir,
            kid,
            allow_group_read,
        }) => {
            key_admin::promote(&dir, &kid, policy(allow_group_read))?;
            print(
                &mut out,
                &format!("{kid} is now the primary key of {}", dir.display()),
            )
        }
        Command::Keys(KeysCommand::Retire { dir, kid }) => {
            key_admin::retire(&dir, &kid)?;
            print(&mut out, &format!("{kid} retired from {}", dir.display()))
        }
    }
}
