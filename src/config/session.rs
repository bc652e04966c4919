//! `[session]`: the session's limits and the cache of opened sessions.

use std::time::Duration;

use serde::Deserialize;

use super::{Issues, flex};

#[derive(Debug)]
pub struct Session {
    pub absolute: Duration,
    pub idle: Duration,
    pub refresh_skew: Duration,
    /// Most opened sessions kept for proxied calls (`session_cache`); 0 disables the cache.
    pub cache_entries: usize,
}

/// `session.cache_entries` when not set: the sessions one instance typically serves within
/// the cache's minute (2,000 in turn missed half the time at 1,024 entries, never at 4,096:
/// README "Many sessions"), at most ~32 MB with 3 KB access tokens.
pub const DEFAULT_CACHE_ENTRIES: u64 = 4096;
/// Most `session.cache_entries` an operator may configure (about 8 KB each).
pub const MAX_CACHE_ENTRIES: u64 = 1 << 20;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    absolute: Option<String>,
    idle: Option<String>,
    refresh_skew: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_uint")]
    cache_entries: Option<u64>,
}

impl RawSession {
    pub(super) fn validate(self, v: &mut Issues) -> Option<Session> {
        let absolute = v.duration("session.absolute", self.absolute, "12h");
        let idle = v.duration("session.idle", self.idle, "1h");
        let refresh_skew = v.duration("session.refresh_skew", self.refresh_skew, "60s");
        let cache_entries = self.cache_entries.unwrap_or(DEFAULT_CACHE_ENTRIES);
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
        Some(Session {
            absolute: absolute?,
            idle: idle?,
            refresh_skew: refresh_skew?,
            cache_entries: usize::try_from(cache_entries).unwrap_or(usize::MAX),
        })
    }
}
