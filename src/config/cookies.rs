//! `[cookies]`: the attributes of sealgate's cookies.

use serde::Deserialize;

use super::{Issues, flex};

/// Highest chunk count an operator may configure (`cookies.max_chunks`).
pub const MAX_CHUNKS_LIMIT: usize = 16;

/// The `SameSite` cookie attribute (RFC 6265bis §4.1.2.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

#[derive(Debug)]
pub struct Cookies {
    pub secure: bool,
    pub same_site: SameSite,
    /// Most chunks one sealed cookie may use.
    pub max_chunks: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookies {
    #[serde(default, deserialize_with = "flex::opt_bool")]
    secure: Option<bool>,
    same_site: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_uint")]
    max_chunks: Option<u64>,
}

impl RawCookies {
    pub(super) fn validate(self, v: &mut Issues) -> Cookies {
        let same_site = match self
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("lax") => SameSite::Lax,
            Some("strict") => SameSite::Strict,
            Some("none") => SameSite::None,
            Some(other) => {
                v.push(
                    "cookies.same_site",
                    format!("{other:?} is not one of lax, strict, none"),
                );
                SameSite::Lax
            }
        };
        let secure = self.secure.unwrap_or(true);
        if same_site == SameSite::None && !secure {
            v.push(
                "cookies.same_site",
                "none requires cookies.secure = true (browsers refuse it otherwise)",
            );
        }
        let max_chunks = self.max_chunks.unwrap_or(4);
        if !(1..=MAX_CHUNKS_LIMIT as u64).contains(&max_chunks) {
            v.push(
                "cookies.max_chunks",
                format!("must be between 1 and {MAX_CHUNKS_LIMIT}"),
            );
        }
        Cookies {
            secure,
            same_site,
            max_chunks: usize::try_from(max_chunks).unwrap_or(MAX_CHUNKS_LIMIT),
        }
    }
}
