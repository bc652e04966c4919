//! The key ring: which sealing keys this instance holds, which one seals, and how they are
//! loaded and checked from a folder or an environment string. The commands that create,
//! promote and retire keys live in `key_admin`.
//!
//! Knows nothing of cookies, HTTP or OIDC: `seal` asks it for keys by id.
//!
//! A key folder holds one file per key, `<kid>.key`, whose only content is the 32-byte key in
//! base64url without padding (43 characters, one optional trailing newline), and a file
//! `primary` naming the kid that seals. Every key opens. Names starting with `.` are ignored,
//! so a Kubernetes Secret volume (`..data` symlink swapped atomically) reads as a plain folder.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of a master key in bytes (256 bits).
pub const KEY_LEN: usize = 32;
/// Length of a master key as written in a key file: base64url of 32 bytes, no padding.
pub const KEY_B64_LEN: usize = 43;
/// Longest key id accepted. The kid travels in every cookie, so it stays short.
pub const KID_MAX_LEN: usize = 16;
/// Name of the file that names the primary key.
pub const PRIMARY_FILE: &str = "primary";
/// Ending of key files.
pub const KEY_SUFFIX: &str = ".key";
/// Largest key or `primary` file read, in bytes. A key file is 44 bytes; a file past this
/// is refused before anything is read, so a stray multi-gigabyte file (or a device behind
/// a symlink) in the folder cannot exhaust memory on every reload.
pub const MAX_KEY_FILE: u64 = 1024;

// The sealing key is derived from the master key rather than used as is, so that one master
// key can later serve other purposes (e.g. keyed hashes) under other labels without ever
// using the same bytes for two algorithms (RFC 5869 §3.2 on `info`).
const HKDF_SALT: &[u8] = b"sealgate key ring v1";
const HKDF_INFO_SEAL: &[u8] = b"sealgate cookie seal: xchacha20poly1305";

/// Why a key ring could not be loaded or changed. Each message names the file or kid.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The folder or a file in it could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key is not 32 bytes of base64url without padding.
    #[error(
        "{what}: not a key: expected {KEY_B64_LEN} characters of base64url (32 bytes), got {found}"
    )]
    BadKey { what: String, found: String },
    /// A kid has characters outside `A-Za-z0-9_-` or is too long.
    #[error("{what}: bad key id {kid:?}: use 1 to {KID_MAX_LEN} characters of A-Z a-z 0-9 _ -")]
    BadKid { what: String, kid: String },
    /// Two keys share a kid.
    #[error("duplicate key id {0:?}")]
    DuplicateKid(String),
    /// Two kids carry the same key bytes: a copy-paste mistake that would defeat retirement.
    #[error("keys {0:?} and {1:?} are the same key")]
    DuplicateKey(String, String),
    /// No key at all.
    #[error("{0}: no keys (create one with `sealgate keygen --dir {0}`)")]
    Empty(String),
    /// No primary named, or the named primary is not in the ring.
    #[error("{what}: {message}")]
    Primary { what: String, message: String },
    /// A key file others may read or write.
    #[error(
        "{path}: mode {mode:04o} lets others {access} this key; run `chmod 600 {path}` (on Kubernetes set defaultMode: 0400, or 0440 with allow_group_read = true)"
    )]
    Permissions {
        path: PathBuf,
        mode: u32,
        access: &'static str,
    },
    /// An environment ring entry that is not `kid:key`.
    #[error("keys.ring: entry {0} is not of the form KID:KEY")]
    BadRingEntry(usize),
    /// The system random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// An operation on a kid the ring does not hold.
    #[error("{dir}: no key {kid:?}")]
    NoSuchKey { dir: String, kid: String },
    /// Retiring the primary would leave nothing to seal with.
    #[error("{0:?} is the primary key: promote another key first")]
    RetirePrimary(String),
}

/// How strictly key-file permissions are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModePolicy {
    /// Only the owner may have any access (0600, 0400). The default.
    #[default]
    OwnerOnly,
    /// The group may also read (0640, 0440): Kubernetes Secret volumes with `fsGroup`.
    AllowGroupRead,
}

/// A master key: exactly 32 bytes, zeroized on drop, never printed.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(bytes.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Strict parser: exactly 43 characters of base64url without padding, nothing else
    /// (surrounding whitespace is trimmed by the caller where a file format allows it).
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::BadKey {
            what: what.to_owned(),
            found: describe_len(text),
        };
        if text.len() != KEY_B64_LEN {
            return Err(bad());
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), bytes.as_mut()) {
            Ok(KEY_LEN) => Ok(Self(bytes)),
            _ => Err(bad()),
        }
    }

    /// The key as written in key files and ring strings.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(URL_SAFE_NO_PAD.encode(self.0.as_ref()))
    }

    fn seal_cipher(&self) -> XChaCha20Poly1305 {
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        // Expanding 32 bytes from SHA-256 HKDF cannot fail (limit is 255 * 32).
        let _ = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.0.as_ref())
            .expand(HKDF_INFO_SEAL, okm.as_mut());
        XChaCha20Poly1305::new(&(*okm).into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

fn describe_len(text: &str) -> String {
    format!("{} characters", text.chars().count())
}

/// Checks a kid: 1 to 16 characters of `A-Za-z0-9_-`.
pub fn validate_kid(kid: &str, what: &str) -> Result<(), KeyError> {
    let ok = !kid.is_empty()
        && kid.len() <= KID_MAX_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadKid {
            what: what.to_owned(),
            kid: kid.chars().take(40).collect(),
        })
    }
}

/// One key of the ring: its id and a ready cipher (built once, reused for every cookie).
pub struct Key {
    kid: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn cipher(&self) -> &XChaCha20Poly1305 {
        &self.cipher
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The keys that open cookies, and the one that seals them.
pub struct KeyRing {
    primary: Key,
    others: Vec<Key>,
    /// Unique to this ring in this process: what a cache of opened values is keyed to, so
    /// nothing opened under an older ring is served once it has been replaced.
    id: u64,
}

/// Source of `KeyRing::id`.
static NEXT_RING_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl KeyRing {
    /// Builds a ring from `(kid, key)` pairs, refusing duplicate kids, duplicate key bytes
    /// and a primary that is not among them. `what` names the source in error messages.
    pub fn new(
        entries: Vec<(String, MasterKey)>,
        primary: &str,
        what: &str,
    ) -> Result<Self, KeyError> {
        if entries.is_empty() {
            return Err(KeyError::Empty(what.to_owned()));
        }
        let mut kids = HashSet::new();
        for (i, (kid, key)) in entries.iter().enumerate() {
            validate_kid(kid, what)?;
            if !kids.insert(kid.as_str()) {
                return Err(KeyError::DuplicateKid(kid.clone()));
            }
            if let Some((other, _)) = entries.iter().take(i).find(|(_, k)| k.0 == key.0) {
                return Err(KeyError::DuplicateKey(other.clone(), kid.clone()));
            }
        }
        let (first, others): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .map(|(kid, key)| Key {
                cipher: key.seal_cipher(),
                kid,
            })
            .partition(|key| key.kid == primary);
        let primary = first.into_iter().next().ok_or_else(|| KeyError::Primary {
            what: what.to_owned(),
            message: format!("primary key {primary:?} is not in the ring"),
        })?;
        let id = NEXT_RING_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            primary,
            others,
            id,
        })
    }

    /// This ring's identity in this process: no two rings built here share it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Loads a key folder (see the module documentation for its layout).
    pub fn load_dir(dir: &Path, policy: ModePolicy) -> Result<Self, KeyError> {
        let what = dir.display().to_string();
        let (entries, primary) = read_dir_ring(dir, policy)?;
        let primary = primary.ok_or_else(|| KeyError::Primary {
            what: what.clone(),
            message: format!(
                "no `{PRIMARY_FILE}` file naming the key that seals (run `sealgate keys promote --dir {what} KID`)"
            ),
        })?;
        Self::new(entries, &primary, &what)
    }

    /// Parses a ring given as a string, as serverless platforms inject secrets as variables:
    /// entries `KID:KEY` separated by commas or white space, e.g.
    /// `SEALGATE_KEYS__RING="k1:<43 chars>,k2:<43 chars>"` with `SEALGATE_KEYS__PRIMARY=k2`.
    pub fn from_ring_string(ring: &str, primary: &str) -> Result<Self, KeyError> {
        let mut entries = Vec::new();
        for (i, entry) in ring
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let (kid, key) = entry.split_once(':').ok_or(KeyError::BadRingEntry(i + 1))?;
            validate_kid(kid, "keys.ring")?;
            let key = MasterKey::parse(key, &format!("keys.ring entry {kid:?}"))?;
            entries.push((kid.to_owned(), key));
        }
        if primary.is_empty() {
            return Err(KeyError::Primary {
                what: "keys.primary".to_owned(),
                message: "must name the ring's sealing key when keys.ring is set".to_owned(),
            });
        }
        Self::new(entries, primary, "keys.ring")
    }

    /// The key that seals.
    pub fn primary(&self) -> &Key {
        &self.primary
    }

    /// The key with this id, if the ring holds it.
    pub fn get(&self, kid: &[u8]) -> Option<&Key> {
        self.keys().find(|k| k.kid.as_bytes() == kid)
    }

    /// Every kid, the primary first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys().map(Key::kid)
    }

    fn keys(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.primary).chain(&self.others)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("primary", &self.primary().kid())
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish()
    }
}

/// A folder's keys as read, before the ring's checks, and the kid its `primary` file names.
pub(crate) type DirContents = (Vec<(String, MasterKey)>, Option<String>);

/// Reads every `<kid>.key` file and the `primary` file of a folder.
pub(crate) fn read_dir_ring(dir: &Path, policy: ModePolicy) -> Result<DirContents, KeyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    let mut entries = Vec::new();
    let mut primary = None;
    for name in names {
        let path = dir.join(&name);
        let what = path.display().to_string();
        if name == PRIMARY_FILE {
            let text = read_small(&path, None, |len| KeyError::Primary {
                what: what.clone(),
                message: format!("{len} bytes, not a key id (refused unread)"),
            })?;
            let kid = text.trim();
            validate_kid(kid, &what)?;
            primary = Some(kid.to_owned());
        } else if let Some(kid) = name.strip_suffix(KEY_SUFFIX) {
            validate_kid(kid, &what)?;
            let text = read_small(&path, Some(policy), |len| KeyError::BadKey {
                what: what.clone(),
                found: format!("a file of {len} bytes, more than {MAX_KEY_FILE} (refused unread)"),
            })?;
            let body = text.strip_suffix('\n').unwrap_or(&text);
            entries.push((kid.to_owned(), MasterKey::parse(body, &what)?));
        }
    }
    Ok((entries, primary))
}

/// Reads a small file of the folder through one descriptor: opened once (following
/// symlinks: a Kubernetes Secret's files are links into `..data/`), its mode (when `policy`
/// is given) and size checked on that descriptor (`fstat`), then read from it. The file
/// checked is the file read, even if the name is swapped in between. Past `MAX_KEY_FILE`
/// bytes, `too_large(len)` is returned and nothing is read; a file that grows, or a device
/// that reports no size, is read no further than that either.
fn read_small(
    path: &Path,
    policy: Option<ModePolicy>,
    too_large: impl Fn(u64) -> KeyError,
) -> Result<Zeroizing<String>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(policy) = policy {
        check_mode(path, &meta, policy)?;
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(too_large(meta.len()));
    }
    // Reserved up front so the buffer never reallocates: no unzeroized copy of a key is
    // left behind in freed memory.
    let limit = MAX_KEY_FILE + 1;
    let mut text = Zeroizing::new(String::with_capacity(limit as usize));
    file.take(limit).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(too_large(text.len() as u64));
    }
    Ok(text)
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &fs::Metadata, policy: ModePolicy) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    let allowed = match policy {
        ModePolicy::OwnerOnly => 0o700,
        ModePolicy::AllowGroupRead => 0o740,
    };
    if mode & !allowed == 0 {
        return Ok(());
    }
    let access = if mode & 0o022 != 0 { "write" } else { "read" };
    Err(KeyError::Permissions {
        path: path.to_path_buf(),
        mode,
        access,
    })
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &fs::Metadata, _policy: ModePolicy) -> Result<(), KeyError> {
    Ok(())
}

/// A fingerprint of a key folder: names, sizes, modification times and inodes of what it
/// holds, following symlinks, so that a Kubernetes Secret update (a `..data` symlink swapped
/// to a new folder) changes it as surely as an edit in place. Compared by the reload loop.
pub fn dir_fingerprint(dir: &Path) -> std::io::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = fs::metadata(entry.path())?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0u64;
        entries.push((name, meta.len(), modified, inode));
    }
    entries.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    entries.hash(&mut h);
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_admin::{keygen, promote, write_new_private};

    fn key_text(byte: u8) -> String {
        URL_SAFE_NO_PAD.encode([byte; KEY_LEN])
    }

    #[test]
    fn master_key_parser_is_strict() {
        assert!(MasterKey::parse(&key_text(7), "t").is_ok());
        for bad in [
            String::new(),
            key_text(7)[..42].to_owned(),
            format!("{}A", key_text(7)),
            format!("{}=", key_text(7)),
            key_text(7).replace('H', "+"),
            " ".repeat(43),
            // Standard base64 alphabet where base64url is required.
            URL_SAFE_NO_PAD
                .encode([0xfb; KEY_LEN])
                .replace('-', "+")
                .replace('_', "/"),
        ] {
            assert!(MasterKey::parse(&bad, "t").is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn master_key_debug_is_redacted() {
        let key = MasterKey::parse(&key_text(9), "t").unwrap();
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
        let ring = KeyRing::new(vec![("a".into(), key)], "a", "t").unwrap();
        let shown = format!("{ring:?}");
        assert!(!shown.contains(&key_text(9)), "{shown}");
    }

    #[test]
    fn refuses_duplicate_kids_keys_and_missing_primary() {
        let k = |b| MasterKey::parse(&key_text(b), "t").unwrap();
        assert!(matches!(
            KeyRing::new(vec![("a".into(), k(1)), ("a".into(), k(2))], "a", "t"),
            Err(KeyError::DuplicateKid(_))
        ));
        assert!(matches!(
            KeyRing::new(vec![("a".into(), k(1)), ("b".into(), k(1))], "a", "t"),
            Err(KeyError::DuplicateKey(..))
        ));
        assert!(matches!(
            KeyRing::new(vec![("a".into(), k(1))], "b", "t"),
            Err(KeyError::Primary { .. })
        ));
        assert!(matches!(
            KeyRing::new(vec![], "a", "t"),
            Err(KeyError::Empty(_))
        ));
        assert!(matches!(
            KeyRing::new(vec![("a/b".into(), k(1))], "a/b", "t"),
            Err(KeyError::BadKid { .. })
        ));
    }

    #[test]
    fn ring_string_parses_and_names_the_primary() {
        let ring = format!("k1:{}, k2:{}\nk3:{}", key_text(1), key_text(2), key_text(3));
        let parsed = KeyRing::from_ring_string(&ring, "k2").unwrap();
        assert_eq!(parsed.primary().kid(), "k2");
        assert_eq!(parsed.kids().collect::<Vec<_>>(), ["k2", "k1", "k3"]);
        assert!(matches!(
            KeyRing::from_ring_string(&ring, ""),
            Err(KeyError::Primary { .. })
        ));
        assert!(matches!(
            KeyRing::from_ring_string("k1", "k1"),
            Err(KeyError::BadRingEntry(1))
        ));
        assert!(matches!(
            KeyRing::from_ring_string("k1:short", "k1"),
            Err(KeyError::BadKey { .. })
        ));
    }

    #[test]
    fn refuses_missing_primary_file_and_bad_key_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        keygen(dir).unwrap();
        fs::remove_file(dir.join(PRIMARY_FILE)).unwrap();
        let err = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap_err();
        assert!(err.to_string().contains("no `primary` file"), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        keygen(dir).unwrap();
        write_new_private(&dir.join("short.key"), b"abc\n").unwrap();
        let err = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap_err();
        assert!(err.to_string().contains("short.key"), "{err}");
    }

    #[test]
    fn refuses_an_oversized_key_file_unread_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        keygen(dir).unwrap();
        let big = dir.join("big.key");
        write_new_private(&big, &vec![b'A'; 64 * 1024]).unwrap();
        let err = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("big.key") && text.contains("65536 bytes") && text.contains("unread"),
            "{text}"
        );
        fs::remove_file(&big).unwrap();
        fs::write(dir.join(PRIMARY_FILE), vec![b'a'; 4096]).unwrap();
        let err = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap_err();
        assert!(
            matches!(&err, KeyError::Primary { message, .. } if message.contains("4096 bytes")),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn refuses_group_or_world_readable_key_files() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let kid = keygen(dir).unwrap();
        let path = dir.join(format!("{kid}.key"));
        let set = |mode| fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();

        set(0o640);
        let err = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        assert!(KeyRing::load_dir(dir, ModePolicy::AllowGroupRead).is_ok());

        set(0o644);
        assert!(KeyRing::load_dir(dir, ModePolicy::AllowGroupRead).is_err());
        set(0o660);
        let err = KeyRing::load_dir(dir, ModePolicy::AllowGroupRead).unwrap_err();
        assert!(matches!(
            err,
            KeyError::Permissions {
                access: "write",
                ..
            }
        ));
        set(0o400);
        assert!(KeyRing::load_dir(dir, ModePolicy::OwnerOnly).is_ok());
    }

    #[test]
    fn fingerprint_changes_when_a_key_is_added_or_promoted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        keygen(dir).unwrap();
        let a = dir_fingerprint(dir).unwrap();
        assert_eq!(
            a,
            dir_fingerprint(dir).unwrap(),
            "stable when nothing changes"
        );
        let new = keygen(dir).unwrap();
        let b = dir_fingerprint(dir).unwrap();
        assert_ne!(a, b);
        promote(dir, &new, ModePolicy::OwnerOnly).unwrap();
        assert_ne!(b, dir_fingerprint(dir).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn reads_a_kubernetes_secret_volume_through_its_symlinks() {
        // Kubernetes mounts a Secret as `..data -> ..<timestamp>/` plus one link per item.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let real = dir.join("..2026_11_27_09_00_00.1");
        fs::create_dir(&real).unwrap();
        write_new_private(
            &real.join("k8s.key"),
            format!("{}\n", key_text(5)).as_bytes(),
        )
        .unwrap();
        write_new_private(&real.join("primary"), b"k8s\n").unwrap();
        std::os::unix::fs::symlink("..2026_11_27_09_00_00.1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/k8s.key", dir.join("k8s.key")).unwrap();
        std::os::unix::fs::symlink("..data/primary", dir.join("primary")).unwrap();
        let ring = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap();
        assert_eq!(ring.primary().kid(), "k8s");
    }
}
