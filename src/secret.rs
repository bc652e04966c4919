//! Secret strings (tokens, client secrets): zeroized on drop, never printed.
//!
//! Below everything else in the crate; knows nothing of where a secret comes from.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A secret string. `Debug` prints `[redacted]`; there is deliberately no `Display` and no
/// `PartialEq` (comparing secrets is a job for constant-time code, not `==`).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret itself: call this only where the value leaves for its one legitimate use.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretString::from("hunter2-token");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let s = SecretString::from("abc");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"abc\"");
        let back: SecretString = serde_json::from_str("\"xyz\"").unwrap();
        assert_eq!(back.expose(), "xyz");
    }
}
