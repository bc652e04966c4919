//! Sealed, chunked cookies: parse the request's `Cookie` headers, seal a value and split it
//! over `NAME.0`, `NAME.1`, ..., join and open it again, expire stale chunks, and render
//! `Set-Cookie` attributes.
//!
//! Knows nothing of OIDC or of what a session holds: it moves opaque payload bytes.
//!
//! Seal, then split; join, then open. Chunk 0 carries the chunk count (`"3.<part>"`), so
//! the reader takes exactly the chunks that belong together and a stale higher chunk left
//! behind by an older, larger session can never be glued onto a newer one. Every write
//! reconciles the jar: the new chunks go out and every `NAME.i` the request carried beyond
//! them is expired in the same answer.

use std::borrow::Cow;
use std::fmt::Write as _;

pub use crate::config::{MAX_CHUNKS_LIMIT, SameSite};
use crate::keys::KeyRing;
use crate::seal::{self, OpenError, Opened, SealError};

/// The limit browsers enforce per cookie (RFC 6265bis §5.6: name + value at most 4096
/// bytes). We hold the whole `Set-Cookie:` header line to it, attributes included, which is
/// stricter than any browser.
pub const BROWSER_COOKIE_LIMIT: usize = 4096;
/// Cookies of any name read from one request. Real jars hold a few dozen; past these, only
/// the reader's own are kept (see `RequestCookies::parse_keeping`).
pub const MAX_REQUEST_COOKIES: usize = 128;
/// The reader's own cookies kept beyond `MAX_REQUEST_COOKIES`: a session and a profile of
/// `MAX_CHUNKS_LIMIT` chunks each and a few login transactions fit with room to spare. A
/// bound on work only: a jar with more of them than this is not one sealgate wrote.
pub const MAX_OWN_COOKIES: usize = 64;
/// Chunk indices above this are not ours to read (but cannot be produced either).
const MAX_CHUNK_INDEX: usize = 63;
/// Longest `Max-Age` rendered, in seconds (about 136 years): bounds the attribute length.
const MAX_AGE_CAP: u64 = u32::MAX as u64;

/// Why a sealed cookie could not be read. The browser only ever learns "no session".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The request carried no chunk of this cookie.
    #[error("no cookie")]
    Missing,
    /// Authentic but past its sealed expiry.
    #[error("expired")]
    Expired,
    /// Sealed under a key this ring does not hold.
    #[error("unknown key")]
    UnknownKey,
    /// Missing, duplicated or mixed chunks, or a value that does not open.
    #[error("invalid")]
    Invalid,
}

impl ReadError {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadError::Missing => "missing",
            ReadError::Expired => "expired",
            ReadError::UnknownKey => "unknown_key",
            ReadError::Invalid => "invalid",
        }
    }
}

impl From<OpenError> for ReadError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Expired => ReadError::Expired,
            OpenError::UnknownKey => ReadError::UnknownKey,
            OpenError::Invalid => ReadError::Invalid,
        }
    }
}

/// Why a sealed cookie could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The value needs more chunks than `cookies.max_chunks` allows.
    #[error("cookie {name} needs {needed} chunks, more than cookies.max_chunks = {max}")]
    TooManyChunks {
        name: String,
        needed: usize,
        max: usize,
    },
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The payload could not be encoded.
    #[error("payload encoding: {0}")]
    Encode(String),
}

/// The cookies of one request, parsed once, borrowing from the header values. Its `Debug`
/// shows names only: the values include sealed sessions, bearer credentials in effect.
#[derive(Default)]
pub struct RequestCookies<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> RequestCookies<'a> {
    /// Parses every `Cookie` header value (HTTP/2 may split one jar over several).
    /// Malformed pairs are skipped; the first `MAX_REQUEST_COOKIES` pairs are kept.
    pub fn parse<I>(headers: I) -> Self
    where
        I: IntoIterator<Item = &'a str>,
    {
        Self::parse_keeping(headers, |_| false)
    }

    /// As `parse`, and past the first `MAX_REQUEST_COOKIES` pairs the ones `is_own` accepts
    /// are still kept (up to `MAX_OWN_COOKIES` of them), wherever they are in the header:
    /// a sibling domain that sets a hundred cookies on the parent domain must not crowd the
    /// session out of the jar (RFC 6265 §8.6, weak integrity across subdomains). The whole
    /// header is scanned, which the server's cap on the request head bounds.
    pub fn parse_keeping<I, F>(headers: I, is_own: F) -> Self
    where
        I: IntoIterator<Item = &'a str>,
        F: Fn(&str) -> bool,
    {
        let mut all = headers.into_iter().flat_map(header_pairs);
        let mut pairs: Vec<_> = all.by_ref().take(MAX_REQUEST_COOKIES).collect();
        pairs.extend(all.filter(|(name, _)| is_own(name)).take(MAX_OWN_COOKIES));
        Self { pairs }
    }

    /// Every `(name, value)` pair, in header order.
    pub fn pairs(&self) -> &[(&'a str, &'a str)] {
        &self.pairs
    }

    /// Whether `name` is one of the chunks of a chunked cookie called `base`.
    pub fn is_chunk_of(name: &str, base: &str) -> bool {
        chunk_index(name, base).is_some()
    }

    /// The chunks of `base` present in the request, by index.
    fn chunks(&self, base: &str) -> impl Iterator<Item = (usize, &'a str)> {
        self.pairs
            .iter()
            .filter_map(move |(n, v)| chunk_index(n, base).map(|i| (i, *v)))
    }
}

impl std::fmt::Debug for RequestCookies<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCookies")
            .field("names", &Names(&self.pairs))
            .finish_non_exhaustive()
    }
}

/// The names of a jar's pairs, for `Debug`.
struct Names<'p, 'a>(&'p [(&'a str, &'a str)]);

impl std::fmt::Debug for Names<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

/// The whitespace HTTP allows around cookie pairs (RFC 9110 OWS): space and tab.
const OWS: [char; 2] = [' ', '\t'];

/// The `name=value` pairs of one `Cookie` header value (RFC 6265 §5.4): split on `;`, name
/// and value trimmed of spaces and tabs, a piece without `=` or with an empty name skipped.
///
/// Only spaces and tabs are trimmed, as browsers do: a name that starts with another
/// (Unicode) space is a different cookie, one the browser set without the `__Host-` rules,
/// and must never be read as sealgate's. Otherwise this is what `cookie::Cookie::split_parse`
/// yields for a request header (a property test below holds the two equal on ASCII), in one
/// pass over the header: that crate parses each piece as a `Set-Cookie` line, scanning every
/// value again for attributes, and the session's values are kilobytes long on every API call.
pub fn header_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = header;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (piece, tail) = match memchr::memchr(b';', rest.as_bytes()) {
                // `;` is ASCII: both sides of it are character boundaries.
                Some(i) => (rest.get(..i)?, rest.get(i + 1..)?),
                None => (rest, ""),
            };
            rest = tail;
            let piece = piece.trim_matches(OWS);
            let Some(eq) = memchr::memchr(b'=', piece.as_bytes()) else {
                continue;
            };
            let name = piece.get(..eq)?.trim_matches(OWS);
            let value = piece.get(eq + 1..)?.trim_matches(OWS);
            if !name.is_empty() {
                return Some((name, value));
            }
        }
        None
    })
}

/// A sealed value as the request carries it: its chunks in order, chunk 0 without its
/// `"<count>."` prefix. Its `Debug` shows the count and length, never the value.
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    parts: [&'a str; MAX_CHUNKS_LIMIT],
    count: usize,
}

impl<'a> Parts<'a> {
    /// The chunks' values, in order.
    pub fn as_slice(&self) -> &[&'a str] {
        self.parts.get(..self.count).unwrap_or_default()
    }

    /// The whole sealed value (borrowed when it is one chunk).
    pub fn joined(&self) -> Cow<'a, str> {
        match self.as_slice() {
            [one] => Cow::Borrowed(one),
            many => Cow::Owned(many.concat()),
        }
    }
}

impl std::fmt::Debug for Parts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("count", &self.count)
            .field(
                "len",
                &self.as_slice().iter().map(|p| p.len()).sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

/// `Some(i)` when `name` is `base.i`, `i` written in decimal without leading zeros.
fn chunk_index(name: &str, base: &str) -> Option<usize> {
    let digits = name.strip_prefix(base)?.strip_prefix('.')?;
    if digits.is_empty()
        || digits.len() > 2
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok().filter(|&i| i <= MAX_CHUNK_INDEX)
}

/// One sealed, chunked cookie: its name (which is also the sealing purpose), scope and
/// attributes.
#[derive(Clone, Debug)]
pub struct CookieSpec {
    name: String,
    path: String,
    secure: bool,
    same_site: SameSite,
    max_chunks: usize,
    /// Characters of sealed value that fit in one chunk's `Set-Cookie` line.
    chunk_capacity: usize,
}

impl CookieSpec {
    /// A cookie called `base` on `path`. With `secure`, the name gets the prefix that makes
    /// browsers enforce the attributes (RFC 6265bis §4.1.3): on `Path=/`, `__Host-Http-`
    /// (Secure, no Domain, Path=/, and HttpOnly: page script can neither set nor overwrite
    /// it, as the IETF browser-based-apps BFF section recommends; a browser that does not
    /// know the newer prefix still applies `__Host-`, which the name starts with);
    /// elsewhere `__Secure-`.
    pub fn new(
        base: &str,
        path: &str,
        secure: bool,
        same_site: SameSite,
        max_chunks: usize,
    ) -> Self {
        let name = match (secure, path == "/") {
            (true, true) => format!("__Host-Http-{base}"),
            (true, false) => format!("__Secure-{base}"),
            (false, _) => base.to_owned(),
        };
        let mut spec = Self {
            name,
            path: path.to_owned(),
            secure,
            same_site,
            max_chunks: max_chunks.clamp(1, MAX_CHUNKS_LIMIT),
            chunk_capacity: 0,
        };
        // The longest line a chunk can need around its value; chunk 0 spends part of its
        // value on the "<count>." prefix (see `split`).
        let overhead =
            "Set-Cookie: ".len() + spec.render(MAX_CHUNK_INDEX, "", Some(MAX_AGE_CAP)).len();
        spec.chunk_capacity = BROWSER_COOKIE_LIMIT.saturating_sub(overhead);
        spec
    }

    /// The cookie's name (without chunk suffix); also the purpose its value is sealed for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chunks of this cookie carried by the request, in order. Exactly chunks
    /// `0..count` are taken, `count` being what chunk 0 declares; a missing or duplicated one
    /// among them, or a count above `max_chunks`, makes the cookie invalid.
    pub fn parts<'a>(&self, jar: &RequestCookies<'a>) -> Result<Parts<'a>, ReadError> {
        let mut parts: [&'a str; MAX_CHUNKS_LIMIT] = [""; MAX_CHUNKS_LIMIT];
        let mut seen = 0u64;
        let mut any = false;
        for (i, value) in jar.chunks(&self.name) {
            any = true;
            // Chunks beyond the most a cookie can have are not ours to read.
            if let Some(slot) = parts.get_mut(i) {
                let bit = 1u64 << i;
                if seen & bit != 0 {
                    return Err(ReadError::Invalid);
                }
                seen |= bit;
                *slot = value;
            }
        }
        if !any {
            return Err(ReadError::Missing);
        }
        if seen & 1 == 0 {
            return Err(ReadError::Invalid);
        }
        let (count, head) = parts[0].split_once('.').ok_or(ReadError::Invalid)?;
        let count: usize = match count.parse() {
            Ok(n) if (1..=self.max_chunks).contains(&n) && !count.starts_with('0') => n,
            _ => return Err(ReadError::Invalid),
        };
        // Every chunk 1..count present.
        let wanted = (1u64 << count) - 2;
        if seen & wanted != wanted {
            return Err(ReadError::Invalid);
        }
        parts[0] = head;
        Ok(Parts { parts, count })
    }

    /// The sealed value the request carries for this cookie: its chunks joined.
    pub fn join<'a>(&self, jar: &RequestCookies<'a>) -> Result<Cow<'a, str>, ReadError> {
        Ok(self.parts(jar)?.joined())
    }

    /// Joins and opens this cookie: `Missing` when the request has none of it.
    pub fn open(
        &self,
        jar: &RequestCookies<'_>,
        ring: &KeyRing,
        now: u64,
    ) -> Result<Opened, ReadError> {
        let sealed = self.join(jar)?;
        Ok(seal::open(ring, &self.name, now, &sealed)?)
    }

    /// Seals `payload` until `expires_at` and returns the `Set-Cookie` header values that
    /// store it, followed by the expiry of every stale chunk the request carried.
    pub fn seal(
        &self,
        jar: &RequestCookies<'_>,
        ring: &KeyRing,
        now: u64,
        expires_at: u64,
        payload: &[u8],
    ) -> Result<Vec<String>, WriteError> {
        let sealed = seal::seal(ring, &self.name, expires_at, payload)?;
        self.split(jar, &sealed, expires_at.saturating_sub(now))
    }

    /// Splits a sealed value into `Set-Cookie` values with `Max-Age=max_age`, and expires
    /// every chunk of this cookie the request carried beyond the new ones.
    pub fn split(
        &self,
        jar: &RequestCookies<'_>,
        sealed: &str,
        max_age: u64,
    ) -> Result<Vec<String>, WriteError> {
        let count = chunk_count(sealed.len(), self.chunk_capacity);
        if count > self.max_chunks {
            return Err(WriteError::TooManyChunks {
                name: self.name.clone(),
                needed: count,
                max: self.max_chunks,
            });
        }
        let mut headers = Vec::with_capacity(count + 1);
        let mut rest = sealed;
        for i in 0..count {
            // The sealed value is base64url (ASCII), so any byte index is a char boundary.
            let take = if i == 0 {
                self.chunk_capacity.saturating_sub(digits(count))
            } else {
                self.chunk_capacity
            }
            .min(rest.len());
            let (part, tail) = rest.split_at(take);
            rest = tail;
            let value = if i == 0 {
                Cow::Owned(format!("{count}.{part}"))
            } else {
                Cow::Borrowed(part)
            };
            headers.push(self.render(i, &value, Some(max_age.min(MAX_AGE_CAP))));
        }
        headers.extend(self.expire_chunks(jar, count));
        Ok(headers)
    }

    /// `Set-Cookie` values that expire every chunk of this cookie the request carried.
    pub fn clear(&self, jar: &RequestCookies<'_>) -> Vec<String> {
        self.expire_chunks(jar, 0)
    }

    fn expire_chunks(&self, jar: &RequestCookies<'_>, from: usize) -> Vec<String> {
        let mut seen = 0u64;
        let mut out = Vec::new();
        for (i, _) in jar.chunks(&self.name) {
            let bit = 1u64 << i;
            if i >= from && seen & bit == 0 {
                seen |= bit;
                out.push(self.render(i, "", None));
            }
        }
        out
    }

    /// One `Set-Cookie` value; `max_age: None` renders the expiry of the chunk.
    fn render(&self, index: usize, value: &str, max_age: Option<u64>) -> String {
        let mut s = String::with_capacity(self.name.len() + value.len() + 80);
        let _ = write!(
            s,
            "{}.{index}={value}; Path={}; Max-Age={}; HttpOnly; SameSite={}",
            self.name,
            self.path,
            max_age.unwrap_or(0),
            self.same_site.as_str()
        );
        if self.secure {
            s.push_str("; Secure");
        }
        s
    }
}

/// Chunks needed for `len` sealed characters when chunk 0 also carries `"<count>."`.
fn chunk_count(len: usize, capacity: usize) -> usize {
    let mut count = 1;
    while count * capacity < len + digits(count) {
        count += 1;
    }
    count
}

/// Characters of `"<count>."`.
fn digits(count: usize) -> usize {
    if count < 10 { 2 } else { 3 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use cookie::Cookie;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn ring(primary: u8) -> KeyRing {
        let text = URL_SAFE_NO_PAD.encode([primary; 32]);
        KeyRing::new(
            vec![("k1".into(), MasterKey::parse(&text, "t").unwrap())],
            "k1",
            "t",
        )
        .unwrap()
    }

    fn spec(max_chunks: usize) -> CookieSpec {
        CookieSpec::new("sealgate", "/", true, SameSite::Lax, max_chunks)
    }

    /// What a browser would send back for these `Set-Cookie` values.
    fn cookie_header(set_cookies: &[String]) -> String {
        set_cookies
            .iter()
            .filter(|h| !h.contains("Max-Age=0;"))
            .map(|h| h.split(';').next().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn open_header(spec: &CookieSpec, ring: &KeyRing, header: &str) -> Result<Vec<u8>, ReadError> {
        let jar = RequestCookies::parse([header]);
        spec.open(&jar, ring, NOW).map(|o| o.payload().to_vec())
    }

    proptest! {
        #[test]
        fn header_pairs_are_what_the_cookie_crate_parses(
            header in "[a-c=; \t\"é]{0,40}"
        ) {
            let ours: Vec<_> = header_pairs(&header).collect();
            let theirs: Vec<_> = Cookie::split_parse(header.as_str())
                .filter_map(|c| {
                    let c = c.ok()?;
                    Some((c.name_raw()?, c.value_raw()?))
                })
                .collect();
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn a_name_behind_a_unicode_space_is_not_ours() {
        // A browser sets "\u{a0}__Host-Http-sealgate.0" without the __Host- rules (page script,
        // a sibling domain): it must never be read as, or collide with, the session's chunk.
        let spec = CookieSpec::new("sealgate", "/", true, SameSite::Lax, 4);
        for space in ['\u{a0}', '\u{2003}', '\u{feff}'] {
            let header = format!("{space}__Host-Http-sealgate.0=1.planted");
            let pairs: Vec<_> = header_pairs(&header).collect();
            assert_eq!(pairs.len(), 1);
            assert_ne!(pairs[0].0, "__Host-Http-sealgate.0");
            let jar = RequestCookies::parse([header.as_str()]);
            assert_eq!(spec.parts(&jar).unwrap_err(), ReadError::Missing);
        }
        let pairs: Vec<_> = header_pairs(" \t a = b \t; c=d").collect();
        assert_eq!(
            pairs,
            [("a", "b"), ("c", "d")],
            "spaces and tabs are trimmed"
        );
    }

    #[test]
    fn keeps_own_cookies_behind_two_hundred_sibling_cookies() {
        let ring = ring(1);
        let s = spec(8);
        let session = cookie_header(
            &s.seal(
                &RequestCookies::default(),
                &ring,
                NOW,
                NOW + 60,
                &vec![b's'; 6000],
            )
            .unwrap(),
        );
        let siblings: Vec<String> = (0..200).map(|i| format!("sib{i}=v")).collect();
        let header = format!("{}; {session}", siblings.join("; "));
        let is_own = |name: &str| RequestCookies::is_chunk_of(name, s.name());
        let jar = RequestCookies::parse_keeping([header.as_str()], is_own);
        assert_eq!(
            s.open(&jar, &ring, NOW).unwrap().payload(),
            vec![b's'; 6000]
        );
        assert_eq!(
            jar.pairs().len(),
            MAX_REQUEST_COOKIES + 3,
            "siblings stay bounded; the session's 3 chunks are kept"
        );

        // Own cookies are bounded too: a flood of them is cut, not collected.
        let flood: Vec<String> = (0..500).map(|_| format!("{}.0=x", s.name())).collect();
        let header = format!("{}; {}", siblings.join("; "), flood.join("; "));
        let jar = RequestCookies::parse_keeping([header.as_str()], is_own);
        assert_eq!(jar.pairs().len(), MAX_REQUEST_COOKIES + MAX_OWN_COOKIES);
    }

    #[test]
    fn debug_of_a_jar_and_its_parts_never_shows_a_value() {
        let ring = ring(1);
        let s = spec(8);
        let headers = s
            .seal(
                &RequestCookies::default(),
                &ring,
                NOW,
                NOW + 60,
                &vec![b'x'; 5000],
            )
            .unwrap();
        let header = format!("{}; other=visible-value", cookie_header(&headers));
        let jar = RequestCookies::parse([header.as_str()]);
        let parts = s.parts(&jar).unwrap();
        let sealed = parts.joined().into_owned();
        for shown in [
            format!("{jar:?}"),
            format!("{parts:?}"),
            format!("{jar:#?}"),
        ] {
            for secret in parts.as_slice().iter().chain([&"visible-value"]) {
                assert!(
                    !shown.contains(secret.get(..20).unwrap_or(secret)),
                    "{shown}"
                );
            }
            assert!(!shown.contains(&sealed[sealed.len() - 20..]), "{shown}");
        }
        assert!(format!("{jar:?}").contains("__Host-Http-sealgate.1"));
        assert!(format!("{parts:?}").contains(&format!("len: {}", sealed.len())));
    }

    #[test]
    fn names_carry_the_prefix_that_browsers_enforce() {
        assert_eq!(
            CookieSpec::new("s", "/", true, SameSite::Lax, 4).name(),
            "__Host-Http-s"
        );
        assert_eq!(
            CookieSpec::new("s", "/bff/", true, SameSite::Lax, 4).name(),
            "__Secure-s"
        );
        assert_eq!(
            CookieSpec::new("s", "/", false, SameSite::Lax, 4).name(),
            "s"
        );
    }

    #[test]
    fn attributes_are_httponly_secure_path_samesite_and_no_domain() {
        let ring = ring(1);
        let jar = RequestCookies::default();
        let headers = spec(4)
            .seal(&jar, &ring, NOW, NOW + 3600, b"hello")
            .unwrap();
        assert_eq!(headers.len(), 1);
        let c = Cookie::parse(headers[0].as_str()).unwrap();
        assert_eq!(c.name(), "__Host-Http-sealgate.0");
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(c.secure(), Some(true));
        assert_eq!(c.path(), Some("/"));
        assert_eq!(c.domain(), None);
        assert_eq!(c.same_site(), Some(cookie::SameSite::Lax));
        assert_eq!(c.max_age(), Some(cookie::time::Duration::seconds(3600)));
    }

    #[test]
    fn every_set_cookie_line_fits_the_browser_limit() {
        let ring = ring(1);
        let jar = RequestCookies::default();
        for len in [0, 100, 2900, 2950, 3000, 5000, 9000, 12000] {
            let payload = vec![b'x'; len];
            let headers = spec(8)
                .seal(&jar, &ring, NOW, NOW + 43200, &payload)
                .unwrap();
            for h in &headers {
                assert!(
                    "Set-Cookie: ".len() + h.len() <= BROWSER_COOKIE_LIMIT,
                    "{} bytes for payload {len}",
                    h.len()
                );
            }
            let back = open_header(&spec(8), &ring, &cookie_header(&headers)).unwrap();
            assert_eq!(back, payload);
        }
    }

    #[test]
    fn refuses_value_needing_more_chunks_than_the_cap() {
        let ring = ring(1);
        let jar = RequestCookies::default();
        let err = spec(2)
            .seal(&jar, &ring, NOW, NOW + 60, &vec![b'x'; 8000])
            .unwrap_err();
        assert!(
            matches!(
                err,
                WriteError::TooManyChunks {
                    needed: 3,
                    max: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn shrinking_session_expires_stale_chunks_in_the_same_answer() {
        let ring = ring(1);
        let big = spec(8)
            .seal(
                &RequestCookies::default(),
                &ring,
                NOW,
                NOW + 60,
                &vec![b'x'; 9000],
            )
            .unwrap();
        assert_eq!(big.len(), 4);
        let header = cookie_header(&big);
        let jar = RequestCookies::parse([header.as_str()]);
        let small = spec(8).seal(&jar, &ring, NOW, NOW + 60, b"small").unwrap();
        let names: Vec<_> = small.iter().map(|h| h.split('=').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "__Host-Http-sealgate.0",
                "__Host-Http-sealgate.1",
                "__Host-Http-sealgate.2",
                "__Host-Http-sealgate.3"
            ]
        );
        assert!(!small[0].contains("Max-Age=0;"));
        for stale in &small[1..] {
            let c = Cookie::parse(stale.as_str()).unwrap();
            assert_eq!(c.max_age(), Some(cookie::time::Duration::ZERO));
            assert_eq!(
                c.path(),
                Some("/"),
                "a deletion must match the cookie's path"
            );
            assert_eq!(c.secure(), Some(true), "__Host- deletions must be Secure");
        }
    }

    #[test]
    fn stale_higher_chunk_is_ignored_when_reading() {
        let ring = ring(1);
        let headers = spec(8)
            .seal(
                &RequestCookies::default(),
                &ring,
                NOW,
                NOW + 60,
                b"fits in one",
            )
            .unwrap();
        let header = format!(
            "{}; __Host-Http-sealgate.1=stale-leftover",
            cookie_header(&headers)
        );
        assert_eq!(
            open_header(&spec(8), &ring, &header).unwrap(),
            b"fits in one"
        );
    }

    #[test]
    fn clear_expires_every_chunk_present() {
        let jar = RequestCookies::parse([
            "__Host-Http-sealgate.0=2.a; other=1; __Host-Http-sealgate.1=b",
        ]);
        let cleared = spec(4).clear(&jar);
        assert_eq!(cleared.len(), 2);
        assert!(cleared.iter().all(|h| h.contains("Max-Age=0;")));
        assert!(spec(4).clear(&RequestCookies::default()).is_empty());
    }

    #[test]
    fn refuses_missing_reordered_mixed_and_duplicated_chunks() {
        let ring = ring(1);
        let s = spec(8);
        let jar = RequestCookies::default();
        let a = cookie_header(
            &s.seal(&jar, &ring, NOW, NOW + 60, &vec![b'a'; 6000])
                .unwrap(),
        );
        let b = cookie_header(
            &s.seal(&jar, &ring, NOW, NOW + 60, &vec![b'b'; 6000])
                .unwrap(),
        );
        let parts = |h: &str| h.split("; ").map(str::to_owned).collect::<Vec<_>>();
        let (a, b) = (parts(&a), parts(&b));
        assert_eq!(a.len(), 3);
        let value = |p: &str| p.split_once('=').unwrap().1.to_owned();

        // Missing a middle chunk, or the first.
        let h = format!("{}; {}", a[0], a[2]);
        assert_eq!(open_header(&s, &ring, &h).unwrap_err(), ReadError::Invalid);
        let h = format!("{}; {}", a[1], a[2]);
        assert_eq!(open_header(&s, &ring, &h).unwrap_err(), ReadError::Invalid);
        // Mixed: chunk 1 of another session.
        let h = format!("{}; {}; {}", a[0], b[1], a[2]);
        assert_eq!(open_header(&s, &ring, &h).unwrap_err(), ReadError::Invalid);
        // Reordered values under the right names.
        let h = format!(
            "__Host-Http-sealgate.0={}; __Host-Http-sealgate.1={}; __Host-Http-sealgate.2={}",
            value(&a[0]),
            value(&a[2]),
            value(&a[1])
        );
        assert_eq!(open_header(&s, &ring, &h).unwrap_err(), ReadError::Invalid);
        // Duplicated chunk, even with the same value.
        let h = format!("{}; {}; {}; {}", a[0], a[1], a[1], a[2]);
        assert_eq!(open_header(&s, &ring, &h).unwrap_err(), ReadError::Invalid);
        // Header order does not matter when names are right.
        let h = format!("{}; {}; {}", a[2], a[0], a[1]);
        assert_eq!(open_header(&s, &ring, &h).unwrap(), vec![b'a'; 6000]);
    }

    #[test]
    fn refuses_chunk_from_other_cookie() {
        let ring = ring(1);
        let jar = RequestCookies::default();
        let other = CookieSpec::new("sealgate-tx", "/", true, SameSite::Lax, 4);
        let headers = other.seal(&jar, &ring, NOW, NOW + 60, b"tx").unwrap();
        let renamed =
            cookie_header(&headers).replace("__Host-Http-sealgate-tx.0", "__Host-Http-sealgate.0");
        assert_eq!(
            open_header(&spec(4), &ring, &renamed).unwrap_err(),
            ReadError::Invalid
        );
    }

    #[test]
    fn distinguishes_missing_expired_unknown_key_and_invalid() {
        let ring1 = ring(1);
        let s = spec(4);
        let jar = RequestCookies::default();
        assert_eq!(open_header(&s, &ring1, "").unwrap_err(), ReadError::Missing);
        assert_eq!(
            open_header(&s, &ring1, "other=1").unwrap_err(),
            ReadError::Missing
        );
        let expired = cookie_header(&s.seal(&jar, &ring1, NOW - 100, NOW, b"x").unwrap());
        assert_eq!(
            open_header(&s, &ring1, &expired).unwrap_err(),
            ReadError::Expired
        );
        let foreign_text = URL_SAFE_NO_PAD.encode([9u8; 32]);
        let foreign = KeyRing::new(
            vec![("zz".into(), MasterKey::parse(&foreign_text, "t").unwrap())],
            "zz",
            "t",
        )
        .unwrap();
        let unknown = cookie_header(&s.seal(&jar, &foreign, NOW, NOW + 60, b"x").unwrap());
        assert_eq!(
            open_header(&s, &ring1, &unknown).unwrap_err(),
            ReadError::UnknownKey
        );
        for bad in [
            "__Host-Http-sealgate.0=",
            "__Host-Http-sealgate.0=1.",
            "__Host-Http-sealgate.0=0.abc",
            "__Host-Http-sealgate.0=01.abc",
            "__Host-Http-sealgate.0=99.abc",
            "__Host-Http-sealgate.0=abc",
            "__Host-Http-sealgate.0=1.!!!!",
        ] {
            assert_eq!(
                open_header(&s, &ring1, bad).unwrap_err(),
                ReadError::Invalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn chunk_names_are_strict() {
        assert_eq!(chunk_index("s.0", "s"), Some(0));
        assert_eq!(chunk_index("s.15", "s"), Some(15));
        for bad in [
            "s", "s.", "s.00", "s.01", "s.a", "s.100", "s.64", "s.-1", "sx.0", "s.0 ",
        ] {
            assert_eq!(chunk_index(bad, "s"), None, "{bad}");
        }
    }

    #[test]
    fn chunk_count_accounts_for_the_count_prefix() {
        assert_eq!(chunk_count(0, 100), 1);
        assert_eq!(chunk_count(98, 100), 1);
        assert_eq!(chunk_count(99, 100), 2);
        assert_eq!(chunk_count(198, 100), 2);
        assert_eq!(chunk_count(199, 100), 3);
    }

    proptest! {
        #[test]
        fn any_payload_round_trips_through_chunks(len in 0usize..20_000, byte in any::<u8>()) {
            let ring = ring(3);
            let s = spec(MAX_CHUNKS_LIMIT);
            let payload = vec![byte; len];
            let headers = s.seal(&RequestCookies::default(), &ring, NOW, NOW + 60, &payload).unwrap();
            prop_assert_eq!(open_header(&s, &ring, &cookie_header(&headers)).unwrap(), payload);
        }

        #[test]
        fn dropping_any_chunk_is_refused(drop in any::<prop::sample::Index>()) {
            let ring = ring(3);
            let s = spec(8);
            let headers = s.seal(&RequestCookies::default(), &ring, NOW, NOW + 60, &vec![1; 9000]).unwrap();
            let mut parts: Vec<_> = cookie_header(&headers).split("; ").map(str::to_owned).collect();
            parts.remove(drop.index(parts.len()));
            prop_assert_eq!(open_header(&s, &ring, &parts.join("; ")).unwrap_err(), ReadError::Invalid);
        }

        #[test]
        fn arbitrary_cookie_headers_never_panic(header in "[ -~]{0,400}") {
            let ring = ring(3);
            let s = CookieSpec::new("s", "/", false, SameSite::Lax, 4);
            let jar = RequestCookies::parse([header.as_str()]);
            let _ = s.open(&jar, &ring, NOW);
            let _ = s.clear(&jar);
        }
    }
}
