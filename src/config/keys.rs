//! `[keys]`: where the key ring comes from.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Issues, flex};
use crate::secret::SecretString;

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    dir: Option<String>,
    ring: Option<SecretString>,
    primary: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_bool")]
    allow_group_read: Option<bool>,
}

impl RawKeys {
    pub(super) fn validate(self, v: &mut Issues) -> Option<Keys> {
        let allow_group_read = self.allow_group_read.unwrap_or(false);
        let source = match (self.ring.filter(|r| !r.is_empty()), self.primary) {
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
                self.dir.unwrap_or_else(|| "keys".into()),
            ))),
        };
        Some(Keys {
            source: source?,
            allow_group_read,
        })
    }
}
