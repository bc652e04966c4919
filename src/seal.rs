//! The sealed envelope: XChaCha20-Poly1305 under the key ring, and its wire format.
//!
//! Knows nothing of HTTP or cookies: it turns (purpose, expiry, bytes) into one base64url
//! string and back. The purpose (the cookie's name) is bound as associated data, so a value
//! sealed for one cookie never opens as another.

use std::fmt;

use base64_simd::{AsOut, URL_SAFE_NO_PAD as BASE64};
use chacha20poly1305::{AeadInOut, Tag, XNonce};
use zeroize::Zeroizing;

use crate::keys::{KID_MAX_LEN, KeyRing};

// Wire format, base64url without padding:
//
//   version[1] | kid_len[1] | kid[kid_len] | nonce[24] | ciphertext | tag[16]
//
// where the plaintext under the ciphertext is `expires_at[8] | payload`, expires_at being
// Unix seconds, big-endian. The associated data is
//
//   AAD_LABEL | version | kid_len | kid | purpose
//
// so the version, the key id and the purpose are all authenticated; the header is
// self-delimiting and the purpose comes last, so the AAD is unambiguous.
//
// The nonce is 24 random bytes: XChaCha20's 192-bit nonce makes random nonces safe for any
// number of messages a key will ever seal (collision odds ~2^-96 after 2^48 messages),
// which is what lets a fleet of instances seal under one key with no shared counter.

/// The envelope version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the random nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of the sealed expiry.
const EXPIRY_LEN: usize = 8;
/// Largest payload `seal` accepts: far above any session a browser could carry.
pub const MAX_PAYLOAD_LEN: usize = 48 * 1024;
/// Largest sealed string `open` looks at. Anything longer was never produced by `seal`,
/// so it is refused before any decoding or cryptography (as rustls' ticketer does).
pub const MAX_SEALED_LEN: usize = sealed_len(KID_MAX_LEN, MAX_PAYLOAD_LEN);
/// Characters at the start of every sealed string that hold its whole nonce: the header (at
/// most 2 + `KID_MAX_LEN` bytes) and the nonce, base64url. Two seals never share them
/// (random 192-bit nonces), which is what lets a cache of opened values key on them.
pub const UNIQUE_PREFIX_LEN: usize = (2 + KID_MAX_LEN + NONCE_LEN).div_ceil(3) * 4;
/// Domain-separation label at the head of the associated data.
const AAD_LABEL: &[u8] = b"sealgate envelope\0";

/// Why `seal` failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The payload is larger than `MAX_PAYLOAD_LEN`.
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD_LEN}-byte limit")]
    TooLarge(usize),
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// The AEAD refused to encrypt (cannot happen for sizes below the limit).
    #[error("encryption failed")]
    Encrypt,
}

/// Why `open` refused a value. For logs and metrics only: the browser sees "no session".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Authentic, but its sealed expiry has passed.
    #[error("expired")]
    Expired,
    /// Sealed under a key id this ring does not hold (retired, or from another deployment).
    #[error("unknown key")]
    UnknownKey,
    /// Not a value `seal` produced with this purpose: malformed, truncated, tampered with,
    /// another purpose, another version.
    #[error("invalid")]
    Invalid,
}

impl OpenError {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenError::Expired => "expired",
            OpenError::UnknownKey => "unknown_key",
            OpenError::Invalid => "invalid",
        }
    }
}

/// An opened value: the payload, its sealed expiry, and whether the primary key sealed it
/// (if not, the next write re-seals it under the primary).
pub struct Opened {
    buf: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
    pub expires_at: u64,
    pub by_primary: bool,
}

impl Opened {
    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("payload_len", &(self.end - self.start))
            .field("expires_at", &self.expires_at)
            .field("by_primary", &self.by_primary)
            .finish()
    }
}

/// Seals `payload` for `purpose` under the ring's primary key, valid until `expires_at`.
pub fn seal(
    ring: &KeyRing,
    purpose: &str,
    expires_at: u64,
    payload: &[u8],
) -> Result<String, SealError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(SealError::TooLarge(payload.len()));
    }
    let key = ring.primary();
    let kid = key.kid().as_bytes();
    let header_len = 2 + kid.len();
    let body_start = header_len + NONCE_LEN;
    let mut buf = Zeroizing::new(Vec::with_capacity(
        body_start + EXPIRY_LEN + payload.len() + TAG_LEN,
    ));
    buf.push(VERSION);
    // A kid is at most KID_MAX_LEN (16) bytes, checked when the ring was built.
    buf.push(kid.len() as u8);
    buf.extend_from_slice(kid);
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(&expires_at.to_be_bytes());
    buf.extend_from_slice(payload);

    let (head, body) = buf.split_at_mut(body_start);
    let header = head.get(..header_len).ok_or(SealError::Encrypt)?;
    let aad = associated_data(header, purpose);
    let tag = key
        .cipher()
        .encrypt_inout_detached(&XNonce::from(nonce), &aad, body.into())
        .map_err(|_| SealError::Encrypt)?;
    buf.extend_from_slice(&tag);
    Ok(BASE64.encode_to_string(buf.as_slice()))
}

/// Opens a value sealed by `seal` for `purpose`, refusing it if `now` is at or past its
/// sealed expiry. Never panics, whatever the input.
pub fn open(ring: &KeyRing, purpose: &str, now: u64, sealed: &str) -> Result<Opened, OpenError> {
    if sealed.len() > MAX_SEALED_LEN {
        return Err(OpenError::Invalid);
    }
    // Strict base64url without padding (non-zero trailing bits refused: one value, one
    // spelling), decoded with SIMD straight into a buffer of the exact size, zeroized after.
    let input = sealed.as_bytes();
    let len = BASE64
        .decoded_length(input)
        .map_err(|_| OpenError::Invalid)?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    BASE64
        .decode(input, buf.as_mut_slice().as_out())
        .map_err(|_| OpenError::Invalid)?;
    let (&version, rest) = buf.split_first().ok_or(OpenError::Invalid)?;
    if version != VERSION {
        return Err(OpenError::Invalid);
    }
    let (&kid_len, rest) = rest.split_first().ok_or(OpenError::Invalid)?;
    let kid_len = usize::from(kid_len);
    if kid_len == 0 || kid_len > KID_MAX_LEN {
        return Err(OpenError::Invalid);
    }
    let kid = rest.get(..kid_len).ok_or(OpenError::Invalid)?;
    // The kid is checked before any cryptography: an unknown key is its own answer.
    let key = ring.get(kid).ok_or(OpenError::UnknownKey)?;
    let by_primary = std::ptr::eq(key, ring.primary());

    let header_len = 2 + kid_len;
    let body_start = header_len + NONCE_LEN;
    let total = buf.len();
    let body_end = total
        .checked_sub(TAG_LEN)
        .filter(|&end| end >= body_start + EXPIRY_LEN)
        .ok_or(OpenError::Invalid)?;

    let (head, rest) = buf.split_at_mut(body_start);
    let (body, tag) = rest.split_at_mut(body_end - body_start);
    let header = head.get(..header_len).ok_or(OpenError::Invalid)?;
    let nonce = head
        .get(header_len..)
        .and_then(|n| XNonce::try_from(n).ok())
        .ok_or(OpenError::Invalid)?;
    let tag = Tag::try_from(&*tag).map_err(|_| OpenError::Invalid)?;
    let aad = associated_data(header, purpose);
    key.cipher()
        .decrypt_inout_detached(&nonce, &aad, (&mut *body).into(), &tag)
        .map_err(|_| OpenError::Invalid)?;

    let (expiry, _) = body
        .split_first_chunk::<EXPIRY_LEN>()
        .ok_or(OpenError::Invalid)?;
    let expires_at = u64::from_be_bytes(*expiry);
    if now >= expires_at {
        return Err(OpenError::Expired);
    }
    Ok(Opened {
        buf,
        start: body_start + EXPIRY_LEN,
        end: body_end,
        expires_at,
        by_primary,
    })
}

fn associated_data(header: &[u8], purpose: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + header.len() + purpose.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(header);
    aad.extend_from_slice(purpose.as_bytes());
    aad
}

/// Length of the sealed string for a payload of `payload_len` bytes under a kid of
/// `kid_len` bytes: what chunking and size budgets plan with.
pub const fn sealed_len(kid_len: usize, payload_len: usize) -> usize {
    // base64 without padding: 4 characters per 3 bytes, rounded up.
    ((2 + kid_len + NONCE_LEN + EXPIRY_LEN + payload_len + TAG_LEN) * 4).div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    pub(crate) fn ring(kids: &[(&str, u8)], primary: &str) -> KeyRing {
        let entries = kids
            .iter()
            .map(|(kid, byte)| {
                let text = URL_SAFE_NO_PAD.encode([*byte; 32]);
                ((*kid).to_owned(), MasterKey::parse(&text, "test").unwrap())
            })
            .collect();
        KeyRing::new(entries, primary, "test").unwrap()
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn round_trip_and_reported_length() {
        let ring = ring(&[("k1", 1)], "k1");
        for len in [0, 1, 2, 3, 100, 4096] {
            let payload = vec![0xa5; len];
            let sealed = seal(&ring, "__Host-s", NOW + 60, &payload).unwrap();
            assert_eq!(sealed.len(), sealed_len(2, len));
            let opened = open(&ring, "__Host-s", NOW, &sealed).unwrap();
            assert_eq!(opened.payload(), payload.as_slice());
            assert_eq!(opened.expires_at, NOW + 60);
            assert!(opened.by_primary);
        }
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let ring = ring(&[("k1", 1)], "k1");
        let a = seal(&ring, "p", NOW + 60, b"same").unwrap();
        let b = seal(&ring, "p", NOW + 60, b"same").unwrap();
        assert_ne!(a, b, "nonce must be fresh for every seal");
    }

    #[test]
    fn refuses_expired_value() {
        let ring = ring(&[("k1", 1)], "k1");
        let sealed = seal(&ring, "p", NOW, b"x").unwrap();
        assert_eq!(
            open(&ring, "p", NOW, &sealed).unwrap_err(),
            OpenError::Expired
        );
        assert_eq!(
            open(&ring, "p", NOW + 1, &sealed).unwrap_err(),
            OpenError::Expired
        );
        assert!(open(&ring, "p", NOW - 1, &sealed).is_ok());
    }

    #[test]
    fn refuses_value_sealed_for_another_purpose() {
        let ring = ring(&[("k1", 1)], "k1");
        let sealed = seal(&ring, "__Host-sealgate-tx", NOW + 60, b"x").unwrap();
        assert_eq!(
            open(&ring, "__Host-sealgate", NOW, &sealed).unwrap_err(),
            OpenError::Invalid
        );
    }

    #[test]
    fn refuses_unknown_key_and_retired_key() {
        let old = ring(&[("old", 1)], "old");
        let sealed = seal(&old, "p", NOW + 60, b"x").unwrap();
        let other = ring(&[("new", 2)], "new");
        assert_eq!(
            open(&other, "p", NOW, &sealed).unwrap_err(),
            OpenError::UnknownKey
        );
    }

    #[test]
    fn refuses_same_kid_with_other_key_bytes() {
        let a = ring(&[("k", 1)], "k");
        let b = ring(&[("k", 2)], "k");
        let sealed = seal(&a, "p", NOW + 60, b"x").unwrap();
        assert_eq!(open(&b, "p", NOW, &sealed).unwrap_err(), OpenError::Invalid);
    }

    #[test]
    fn rotation_old_primary_still_opens_after_promotion_until_retired() {
        let before = ring(&[("old", 1), ("new", 2)], "old");
        let sealed_old = seal(&before, "p", NOW + 60, b"s").unwrap();
        // Phase 2: another instance already promoted "new"; this one has not yet.
        let after = ring(&[("old", 1), ("new", 2)], "new");
        let sealed_new = seal(&after, "p", NOW + 60, b"s").unwrap();
        let opened = open(&after, "p", NOW, &sealed_old).unwrap();
        assert!(!opened.by_primary, "must be flagged for re-sealing");
        assert!(open(&before, "p", NOW, &sealed_new).is_ok());
        let retired = ring(&[("new", 2)], "new");
        assert_eq!(
            open(&retired, "p", NOW, &sealed_old).unwrap_err(),
            OpenError::UnknownKey
        );
        assert!(open(&retired, "p", NOW, &sealed_new).unwrap().by_primary);
    }

    #[test]
    fn refuses_decrypt_larger_than_largest_encryption() {
        let ring = ring(&[("k1", 1)], "k1");
        let huge = "A".repeat(MAX_SEALED_LEN + 1);
        assert_eq!(
            open(&ring, "p", NOW, &huge).unwrap_err(),
            OpenError::Invalid
        );
        assert!(matches!(
            seal(&ring, "p", NOW, &vec![0; MAX_PAYLOAD_LEN + 1]),
            Err(SealError::TooLarge(_))
        ));
        // The largest payload seal accepts still opens.
        let max = seal(&ring, "p", NOW + 1, &vec![7; MAX_PAYLOAD_LEN]).unwrap();
        assert!(max.len() <= MAX_SEALED_LEN);
        assert!(open(&ring, "p", NOW, &max).is_ok());
    }

    #[test]
    fn refuses_other_version_and_padding() {
        let ring = ring(&[("k1", 1)], "k1");
        let sealed = seal(&ring, "p", NOW + 60, b"payload").unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        raw[0] = 2;
        let other_version = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            open(&ring, "p", NOW, &other_version).unwrap_err(),
            OpenError::Invalid
        );
        assert_eq!(
            open(&ring, "p", NOW, &format!("{sealed}=")).unwrap_err(),
            OpenError::Invalid
        );
    }

    #[test]
    fn refuses_a_second_spelling_of_the_same_bytes() {
        // "AA" and "AB" would both decode to one zero byte if trailing bits were ignored.
        assert_eq!(BASE64.decode_to_vec("AA").unwrap(), [0]);
        assert!(BASE64.decode_to_vec("AB").is_err());
        assert!(BASE64.decode_to_vec("AAA=").is_err(), "padding");
        let ring = ring(&[("k1", 1)], "k1");
        let sealed = seal(&ring, "__Host-s", NOW + 60, b"x").unwrap();
        // 53 sealed bytes: the last of their 71 characters carries 2 unused bits.
        assert_eq!(sealed.len(), 71);
        let last = sealed.chars().last().unwrap();
        let index = BASE64
            .charset()
            .iter()
            .position(|&c| char::from(c) == last)
            .unwrap();
        let twin = char::from(BASE64.charset()[index ^ 1]);
        let other = format!("{}{twin}", &sealed[..sealed.len() - 1]);
        assert!(open(&ring, "__Host-s", NOW, &other).is_err());
    }

    proptest! {
        /// The SIMD codec reads and writes exactly what the `base64` crate's strict
        /// URL-safe, unpadded engine does (the one the rest of the crate uses): the same
        /// bytes from the same strings, the same strings refused (padding, other alphabets,
        /// non-zero trailing bits).
        #[test]
        fn simd_base64_agrees_with_the_reference_codec(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            text in "[A-Za-z0-9_=+/ -]{0,80}",
        ) {
            let encoded = BASE64.encode_to_string(&bytes);
            prop_assert_eq!(&encoded, &URL_SAFE_NO_PAD.encode(&bytes));
            for s in [encoded.as_str(), text.as_str()] {
                prop_assert_eq!(BASE64.decode_to_vec(s).ok(), URL_SAFE_NO_PAD.decode(s).ok(), "{:?}", s);
            }
        }

        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..2048),
                                   ttl in 1u64..1_000_000) {
            let ring = ring(&[("k1", 1), ("k2", 2)], "k2");
            let sealed = seal(&ring, "purpose", NOW + ttl, &payload).unwrap();
            let opened = open(&ring, "purpose", NOW, &sealed).unwrap();
            prop_assert_eq!(opened.payload(), payload.as_slice());
        }

        #[test]
        fn any_single_bit_flip_is_refused(payload in proptest::collection::vec(any::<u8>(), 0..512),
                                          bit in any::<prop::sample::Index>()) {
            let ring = ring(&[("k1", 1)], "k1");
            let sealed = seal(&ring, "p", NOW + 60, &payload).unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
            let i = bit.index(raw.len() * 8);
            raw[i / 8] ^= 1 << (i % 8);
            let tampered = URL_SAFE_NO_PAD.encode(&raw);
            // A flip in the kid may name an unknown key; anything else is invalid.
            let err = open(&ring, "p", NOW, &tampered).unwrap_err();
            prop_assert!(matches!(err, OpenError::Invalid | OpenError::UnknownKey), "{:?}", err);
        }

        #[test]
        fn any_truncation_is_refused(payload in proptest::collection::vec(any::<u8>(), 0..512),
                                     cut in any::<prop::sample::Index>()) {
            let ring = ring(&[("k1", 1)], "k1");
            let sealed = seal(&ring, "p", NOW + 60, &payload).unwrap();
            let keep = cut.index(sealed.len());
            prop_assert!(open(&ring, "p", NOW, &sealed[..keep]).is_err());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,300}") {
            let ring = ring(&[("k1", 1)], "k1");
            let _ = open(&ring, "p", NOW, &s);
        }

        #[test]
        fn arbitrary_bytes_with_a_known_kid_never_open(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let ring = ring(&[("k1", 1)], "k1");
            let mut raw = vec![VERSION, 2, b'k', b'1'];
            raw.extend_from_slice(&tail);
            let err = open(&ring, "p", NOW, &URL_SAFE_NO_PAD.encode(&raw)).unwrap_err();
            prop_assert_eq!(err, OpenError::Invalid);
        }
    }
}
