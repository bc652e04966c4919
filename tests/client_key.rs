//! Black-box tests of `sealgate client-key` and of the `private_key_jwt` key at start-up:
//! the real binary, real files, the contract's exit statuses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

mod common;

use std::fs;

use common::{bin, free_port, keygen, run as sealgate, stderr, stdout, write_config};

#[test]
fn client_key_writes_a_private_pem_and_prints_only_the_public_jwk() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("client.pem");
    let out = sealgate(&["client-key", "--out", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    assert_eq!(printed.lines().count(), 1, "one JSON line: {printed}");
    let jwk: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    assert!(jwk["kid"].as_str().is_some_and(|k| k.len() == 43), "{jwk}");
    assert!(jwk.get("d").is_none(), "no private part: {jwk}");
    let pem = fs::read_to_string(&file).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(!printed.contains(pem.lines().nth(1).unwrap()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // No temporary file is left beside it.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn refuses_to_overwrite_an_existing_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("client.pem");
    let first = sealgate(&["client-key", "--out", file.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before = fs::read_to_string(&file).unwrap();
    let again = sealgate(&["client-key", "--out", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("client.pem"), "{}", stderr(&again));
    assert!(stdout(&again).is_empty());
    assert_eq!(fs::read_to_string(&file).unwrap(), before, "key unchanged");
}

/// `sealgate check` with `private_key_jwt`: an unusable key stops it with exit 2 naming
/// `oidc.client_key`; a good one gets as far as the (unreachable) provider.
#[test]
fn refuses_to_start_with_an_unusable_client_key_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    keygen(&keys);
    let config = write_config(tmp.path(), free_port(), &keys, "");
    let file = tmp.path().join("client.pem");
    let check = |key: &str| {
        bin()
            .args(["check", "--config", config.to_str().unwrap()])
            .env("SEALGATE_OIDC__CLIENT_AUTH", "private_key_jwt")
            .env("SEALGATE_OIDC__CLIENT_KEY", key)
            .output()
            .unwrap()
    };
    let missing = check(file.to_str().unwrap());
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("oidc.client_key"),
        "{}",
        stderr(&missing)
    );

    let made = sealgate(&["client-key", "--out", file.to_str().unwrap()]);
    assert!(made.status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let readable = check(file.to_str().unwrap());
        assert_eq!(readable.status.code(), Some(2));
        let err = stderr(&readable);
        assert!(
            err.contains("oidc.client_key") && err.contains("0644"),
            "{err}"
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let good = check(file.to_str().unwrap());
    assert_eq!(good.status.code(), Some(2), "the provider is unreachable");
    let err = stderr(&good);
    assert!(
        err.contains("oidc.issuer") && !err.contains("oidc.client_key"),
        "{err}"
    );

    let not_a_key = tmp.path().join("not-a-key.pem");
    fs::write(&not_a_key, "hello").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&not_a_key, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let bad = check(not_a_key.to_str().unwrap());
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("PKCS#8"), "{}", stderr(&bad));
}
