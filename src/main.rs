//! The `sealgate` command: parse the command line, run one command, map failures to the
//! exit status of the contract (0 success, 2 bad configuration or keys, 1 anything else).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sealgate::keys::{self, KeyError, KeyRing, ModePolicy};

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
    /// List, promote and retire the keys of a key folder (see keys/README.md).
    #[command(subcommand)]
    Keys(KeysCommand),
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
        kid: String,
        #[arg(long)]
        allow_group_read: bool,
    },
    /// Delete a non-primary key: cookies sealed under it stop opening.
    Retire {
        #[arg(long)]
        dir: PathBuf,
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
    match run(cli.command) {
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

fn run(command: Command) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let print = |out: &mut dyn Write, text: &str| {
        writeln!(out, "{text}").map_err(|e| Failure {
            status: 1,
            message: format!("stdout: {e}"),
        })
    };
    match command {
        Command::Keygen {
            ring_entry: true, ..
        } => print(&mut out, &keys::keygen_ring_entry()?),
        Command::Keygen { dir, .. } => {
            let dir = dir.ok_or_else(|| Failure {
                status: 2,
                message: "keygen needs --dir DIR (or --ring-entry)".into(),
            })?;
            print(&mut out, &keys::keygen(&dir)?)
        }
        Command::Keys(KeysCommand::List {
            dir,
            allow_group_read,
        }) => {
            let (kids, primary) = keys::list(&dir)?;
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
            keys::promote(&dir, &kid, policy(allow_group_read))?;
            print(
                &mut out,
                &format!("{kid} is now the primary key of {}", dir.display()),
            )
        }
        Command::Keys(KeysCommand::Retire { dir, kid }) => {
            keys::retire(&dir, &kid)?;
            print(&mut out, &format!("{kid} retired from {}", dir.display()))
        }
    }
}
