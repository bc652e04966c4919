//! Errors shared across the crate: configuration problems now, request errors and their one
//! mapping to HTTP answers as the endpoints arrive.
//!
//! Uses nothing else of the crate.

use std::fmt;

/// One configuration problem: the key (`oidc.issuer`, `routes[0].upstream`, or an
/// environment variable's name) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

/// Every configuration problem found, reported together. Displays one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl ConfigError {
    pub fn one(key: &str, message: impl Into<String>) -> Self {
        Self(vec![ConfigIssue {
            key: key.to_owned(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "config: {}: {}", issue.key, issue.message)?;
        }
        Ok(())
    }
}
