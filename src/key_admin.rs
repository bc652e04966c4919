//! The key folder's admin commands: `keygen`, `promote`, `retire` and `list`, and the
//! crash-safe writes they make.
//!
//! Writes what the ring loader (`keys`) reads, and checks every change by loading the folder
//! with it first; the server never calls this module.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::keys::{
    KEY_SUFFIX, KeyError, KeyRing, MasterKey, ModePolicy, PRIMARY_FILE, read_dir_ring, validate_kid,
};

/// Creates a new random key in `dir` (creating the folder, mode 0700; the file, mode 0600)
/// and returns its kid. The first key of a folder without keys becomes the primary; later
/// keys only join the ring, to be promoted once every instance has them (see keys/README.md).
/// The key file appears whole or not at all (see `write_atomically`): a running instance
/// polling the folder never reads a half-written key, and a keygen that dies mid-write
/// (disk full, a file size limit) leaves the folder loading as before.
pub fn keygen(dir: &Path) -> Result<String, KeyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    create_private_dir(dir).map_err(io(dir))?;
    let (existing, primary) = read_dir_ring(dir, ModePolicy::AllowGroupRead)?;
    let kid = loop {
        let kid = random_kid()?;
        if !existing.iter().any(|(k, _)| *k == kid) {
            break kid;
        }
    };
    let key = MasterKey::generate()?;
    let name = format!("{kid}{KEY_SUFFIX}");
    let text = Zeroizing::new(format!("{}\n", key.encode().as_str()));
    write_atomically(dir, &name, text.as_bytes()).map_err(io(&dir.join(&name)))?;
    if existing.is_empty() && primary.is_none() {
        set_primary_file(dir, &kid)?;
    }
    Ok(kid)
}

/// A new ring entry `KID:KEY` for `keys.ring`, written nowhere.
pub fn keygen_ring_entry() -> Result<Zeroizing<String>, KeyError> {
    let kid = random_kid()?;
    let key = MasterKey::generate()?;
    Ok(Zeroizing::new(format!("{kid}:{}", key.encode().as_str())))
}

/// Makes `kid` the primary of the folder's ring, after checking that the folder still loads
/// with it. The `primary` file is replaced atomically (write then rename).
pub fn promote(dir: &Path, kid: &str, policy: ModePolicy) -> Result<(), KeyError> {
    let (entries, _) = read_dir_ring(dir, policy)?;
    if !entries.iter().any(|(k, _)| k == kid) {
        return Err(KeyError::NoSuchKey {
            dir: dir.display().to_string(),
            kid: kid.to_owned(),
        });
    }
    KeyRing::new(entries, kid, &dir.display().to_string())?;
    set_primary_file(dir, kid)
}

/// Deletes a non-primary key from the folder: cookies sealed under it no longer open.
pub fn retire(dir: &Path, kid: &str) -> Result<(), KeyError> {
    validate_kid(kid, "kid")?;
    let (entries, primary) = read_dir_ring(dir, ModePolicy::AllowGroupRead)?;
    if primary.as_deref() == Some(kid) {
        return Err(KeyError::RetirePrimary(kid.to_owned()));
    }
    if !entries.iter().any(|(k, _)| k == kid) {
        return Err(KeyError::NoSuchKey {
            dir: dir.display().to_string(),
            kid: kid.to_owned(),
        });
    }
    let path = dir.join(format!("{kid}{KEY_SUFFIX}"));
    fs::remove_file(&path).map_err(|source| KeyError::Io { path, source })
}

/// The kids of a folder and which one is primary, without opening the ring's checks.
pub fn list(dir: &Path) -> Result<(Vec<String>, Option<String>), KeyError> {
    let (entries, primary) = read_dir_ring(dir, ModePolicy::AllowGroupRead)?;
    Ok((entries.into_iter().map(|(k, _)| k).collect(), primary))
}

fn set_primary_file(dir: &Path, kid: &str) -> Result<(), KeyError> {
    write_atomically(dir, PRIMARY_FILE, format!("{kid}\n").as_bytes()).map_err(|source| {
        KeyError::Io {
            path: dir.join(PRIMARY_FILE),
            source,
        }
    })
}

/// Writes `dir/name` so that the name never shows a partial file: the bytes go to
/// `.name.tmp` (created exclusively, mode 0600; a leading `.` is what the loader and the
/// fingerprint skip), are synced, and the temporary file is renamed over `name` (atomic
/// within a folder, POSIX `rename(2)`); then the folder is synced so that the rename
/// survives a crash. On failure the temporary file is removed.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover of a run that died before its rename.
    let _ = fs::remove_file(&tmp);
    let written = write_new_private(&tmp, bytes).and_then(|()| fs::rename(&tmp, dir.join(name)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// A random kid: 48 bits, base64url, never beginning with `-` (it would read as an option
/// on a command line; the CLI accepts such kids too, for rings made elsewhere).
fn random_kid() -> Result<String, KeyError> {
    loop {
        let mut raw = [0u8; 6];
        getrandom::fill(&mut raw).map_err(|e| KeyError::Random(e.to_string()))?;
        let kid = URL_SAFE_NO_PAD.encode(raw);
        if !kid.starts_with('-') {
            return Ok(kid);
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

/// Creates `path` (it must not exist), mode 0600, and writes and syncs `bytes`.
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_first_key_becomes_primary_later_keys_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ring");
        let first = keygen(&dir).unwrap();
        let second = keygen(&dir).unwrap();
        assert_ne!(first, second);
        let ring = KeyRing::load_dir(&dir, ModePolicy::OwnerOnly).unwrap();
        assert_eq!(ring.primary().kid(), first);
        assert!(ring.get(second.as_bytes()).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join(format!("{first}.key"))), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
    }

    #[test]
    fn random_kids_never_begin_with_a_dash() {
        // 1 in 64 base64url kids would; 5,000 draws miss that with probability ~1e-34.
        for _ in 0..5000 {
            assert!(!random_kid().unwrap().starts_with('-'));
        }
    }

    #[test]
    fn promote_and_retire() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let old = keygen(dir).unwrap();
        let new = keygen(dir).unwrap();
        assert!(matches!(retire(dir, &old), Err(KeyError::RetirePrimary(_))));
        assert!(matches!(
            promote(dir, "nope", ModePolicy::OwnerOnly),
            Err(KeyError::NoSuchKey { .. })
        ));
        promote(dir, &new, ModePolicy::OwnerOnly).unwrap();
        let ring = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap();
        assert_eq!(ring.primary().kid(), new);
        assert!(ring.get(old.as_bytes()).is_some());
        retire(dir, &old).unwrap();
        let ring = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap();
        assert!(ring.get(old.as_bytes()).is_none());
        assert_eq!(list(dir).unwrap(), (vec![new.clone()], Some(new)));
    }
}
