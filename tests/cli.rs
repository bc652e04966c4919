//! Black-box tests of the key commands: the real binary, real files, the contract's exit
//! statuses (0 success, 2 bad keys, naming the file or kid on stderr).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly by design"
)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{keygen, run as sealgate, stderr, stdout};

#[test]
fn keygen_creates_a_private_primary_key_in_a_new_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/ring");
    let kid = keygen(&dir);
    assert!(
        kid.len() >= 4
            && kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let key_file = dir.join(format!("{kid}.key"));
    let text = fs::read_to_string(&key_file).unwrap();
    assert_eq!(
        text.trim_end().len(),
        43,
        "32 bytes in base64url without padding"
    );
    assert_eq!(fs::read_to_string(dir.join("primary")).unwrap().trim(), kid);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn two_phase_rotation_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let old = keygen(tmp.path());
    // Phase 1: the new key joins the ring; the old one still seals.
    let new = keygen(tmp.path());
    assert_ne!(old, new);
    let list = sealgate(&["keys", "list", "--dir", dir]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    let listed = stdout(&list);
    assert!(listed.contains(&format!("{old}\tprimary")), "{listed}");
    assert!(listed.lines().any(|l| l == new), "{listed}");

    // Retiring the primary is refused, naming it.
    let refused = sealgate(&["keys", "retire", "--dir", dir, &old]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains(&old), "{}", stderr(&refused));

    // Phase 2: promote, then retire the old key.
    let promoted = sealgate(&["keys", "promote", "--dir", dir, &new]);
    assert_eq!(promoted.status.code(), Some(0), "{}", stderr(&promoted));
    let retired = sealgate(&["keys", "retire", "--dir", dir, &old]);
    assert_eq!(retired.status.code(), Some(0), "{}", stderr(&retired));
    assert_eq!(
        stdout(&sealgate(&["keys", "list", "--dir", dir])),
        format!("{new}\tprimary")
    );

    let unknown = sealgate(&["keys", "promote", "--dir", dir, "nosuchkid"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("nosuchkid"));
    // A base64url kid may begin with `-` (rings made elsewhere): read as the kid, not an option.
    for cmd in ["promote", "retire"] {
        let dashed = sealgate(&["keys", cmd, "--dir", dir, "-Mx1"]);
        assert_eq!(dashed.status.code(), Some(2), "{cmd}: {}", stderr(&dashed));
        assert!(
            stderr(&dashed).contains("-Mx1"),
            "{cmd}: {}",
            stderr(&dashed)
        );
    }
}

#[cfg(unix)]
#[test]
fn refuses_a_world_readable_key_with_exit_2_naming_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let kid = keygen(tmp.path());
    let file = tmp.path().join(format!("{kid}.key"));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let out = sealgate(&["keys", "list", "--dir", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("chmod 600"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

#[cfg(unix)]
#[test]
fn keygen_that_dies_mid_write_leaves_the_folder_loading() {
    // `ulimit -f 0` with SIGXFSZ ignored: any write to a regular file fails with EFBIG, as
    // on a full disk. The key file used to be created under its final name first, so an
    // empty `<kid>.key` was left behind and every later load of the folder was refused.
    let tmp = tempfile::tempdir().unwrap();
    let first = keygen(tmp.path());
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 0 && exec \"$0\" keygen --dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_sealgate"))
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = [format!("{first}.key"), "primary".to_owned()];
    expected.sort();
    assert_eq!(
        names, expected,
        "no partial key file visible, no temporary file left"
    );
    let list = sealgate(&["keys", "list", "--dir", tmp.path().to_str().unwrap()]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    assert_eq!(stdout(&list), format!("{first}\tprimary"));
}

#[test]
fn refuses_an_oversized_key_file_unread_with_exit_2_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    keygen(tmp.path());
    let big = tmp.path().join("big.key");
    fs::write(&big, vec![b'A'; 1 << 20]).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&big, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = sealgate(&["keys", "list", "--dir", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(big.to_str().unwrap()) && err.contains("1048576 bytes, more than 1024"),
        "{err}"
    );
}

#[test]
fn refuses_a_key_of_the_wrong_length_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    keygen(tmp.path());
    let bad = tmp.path().join("short.key");
    fs::write(&bad, "c2hvcnQ\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = sealgate(&["keys", "list", "--dir", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("short.key"), "{}", stderr(&out));
}

#[test]
fn ring_entry_is_a_kid_and_a_43_character_key() {
    let out = sealgate(&["keygen", "--ring-entry"]);
    assert_eq!(out.status.code(), Some(0));
    let entry = stdout(&out);
    let (kid, key) = entry.split_once(':').unwrap();
    assert!(!kid.is_empty());
    assert_eq!(key.len(), 43);
    assert_ne!(entry, stdout(&sealgate(&["keygen", "--ring-entry"])));
}

#[test]
fn help_and_version() {
    let out = sealgate(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!("sealgate {}", env!("CARGO_PKG_VERSION"))
    );
    let out = sealgate(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("keygen"));
    let out = sealgate(&["keygen"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "keygen without --dir is a usage error"
    );
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("sealgate.toml");
    fs::write(&path, body).unwrap();
    path
}

#[test]
fn serve_refuses_bad_configuration_with_exit_2_naming_each_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(
        tmp.path(),
        "public_url = \"https://app.example.com/x\"\n[oidc]\nissuer = \"http://idp.example.com\"\nclient_id = \"bff\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("SEALGATE_OIDC__CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for key in ["public_url", "oidc.issuer", "oidc.client_secret"] {
        assert!(
            err.lines().any(|l| l.contains(&format!("config: {key}:"))),
            "{key} missing in: {err}"
        );
    }
}

#[test]
fn serve_refuses_missing_config_file_and_bad_keys_with_exit_2() {
    let out = sealgate(&["serve", "--config", "/nonexistent/sealgate.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/sealgate.toml"));

    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(
        tmp.path(),
        &format!(
            "public_url = \"https://app.example.com\"\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"bff\"\nclient_secret = \"s\"\n[keys]\ndir = \"{}\"\n",
            tmp.path().join("empty-ring").display()
        ),
    );
    fs::create_dir(tmp.path().join("empty-ring")).unwrap();
    let out = sealgate(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("keys:"), "{}", stderr(&out));
}

#[test]
fn check_fails_with_exit_2_when_discovery_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    keygen(&keys);
    // A port nothing listens on: bind one, then drop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(
        tmp.path(),
        &format!(
            "public_url = \"http://127.0.0.1:1\"\n[oidc]\nissuer = \"http://127.0.0.1:{port}\"\nclient_id = \"bff\"\nclient_secret = \"s\"\nallow_insecure_http = true\n[keys]\ndir = \"{}\"\n",
            keys.display()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args(["check"])
        .env("SEALGATE_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("oidc.issuer"), "{}", stderr(&out));
}
