//! The wall clock, read in one place: Unix seconds, as sessions, cookies and ID tokens count
//! time.
//!
//! Sits below everything and imports nothing of the crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now; 0 if the system clock is set before 1970.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds now as an `i64`, the type ID token timestamps are compared in; saturates
/// rather than wraps (it cannot, before the year 292 billion).
pub fn now_secs_i64() -> i64 {
    i64::try_from(now_secs()).unwrap_or(i64::MAX)
}
