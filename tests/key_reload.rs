//! Hot key rotation against the real binary: the ring is re-read when its folder changes and
//! on SIGHUP, a bad new ring is refused (old ring kept, a log line), and the two-phase
//! rotation never turns a valid cookie away; and sealgate's cookies are found behind a
//! sibling domain's. Cookies are sealed here with the library from the same folder, exactly
//! as another instance of the fleet would seal them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly by design"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    exchange_lossy, free_port, head_and_body, keygen, metric, now, run_ok, status_code, wait_until,
    write_config,
};

use sealgate::config::SameSite;
use sealgate::cookies::RequestCookies;
use sealgate::jar::{self, Cookies};
use sealgate::keys::{KeyRing, ModePolicy};
use sealgate::session::{Limits, Profile, Session};

const LIMITS: Limits = Limits {
    absolute: 3600,
    idle: 3600,
    refresh_skew: 60,
};

struct Running {
    server: common::Server,
    port: u16,
    log: PathBuf,
}

fn keys_cmd(args: &[&str]) {
    run_ok(args);
}

fn start(dir: &Path, tmp: &Path) -> Running {
    // The provider is unreachable on purpose: /bff/user needs only the keys.
    let port = free_port();
    let config = write_config(tmp, port, dir, "[cookies]\nsecure = false\n");
    let log = tmp.join("sealgate.log");
    let server = common::Server::start(&config, Some(&log));
    wait_until("healthz", || get(port, "/healthz", None).0 == 200);
    Running { server, port, log }
}

/// A minimal HTTP/1.1 GET: (status, body).
fn get(port: u16, path: &str, cookie: Option<&str>) -> (u16, String) {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\n{cookie}Connection: close\r\n\r\n"
    );
    let text = exchange_lossy(port, request.as_bytes(), Duration::from_secs(5));
    (status_code(&text), head_and_body(&text).1.to_owned())
}

/// A session of `sub` and its profile, as a login writes them.
fn login(sub: &str) -> (Session, Profile) {
    let now = now();
    let session = Session {
        id: sealgate::session::random_id().unwrap(),
        access_token: "at".into(),
        access_expires_at: Some(now + 600),
        refresh_token: None,
        sub: sub.into(),
        sid: None,
        created_at: now,
        last_seen: now,
        dpop_key: None,
    };
    let profile = Profile {
        session_id: session.id.clone(),
        ..Profile::default()
    };
    (session, profile)
}

/// `Set-Cookie` values for the session and, when given, the profile, sealed with the ring
/// as the folder now holds it.
fn seal(dir: &Path, session: &Session, profile: Option<&Profile>) -> Vec<String> {
    let ring = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).unwrap();
    let cookies = Cookies::new(false, SameSite::Lax, 4);
    let jar = RequestCookies::default();
    let mut set = jar::write_session(&jar, &ring, &cookies, &LIMITS, now(), session).unwrap();
    if let Some(profile) = profile {
        set.extend(
            jar::write_profile(&jar, &ring, &cookies, &LIMITS, now(), session, profile).unwrap(),
        );
    }
    set
}

/// A session + profile cookie header sealed with the ring as the folder now holds it.
fn session_cookie(dir: &Path) -> String {
    let (session, profile) = login("alice");
    let mut jar = Jar::default();
    jar.apply(&seal(dir, &session, Some(&profile)));
    jar.header()
}

/// A browser's jar, as far as these tests need one: `Set-Cookie` replaces by name, and
/// `Max-Age=0` deletes.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn apply(&mut self, set_cookies: &[String]) {
        for line in set_cookies {
            let (name, value) = line.split(';').next().unwrap().split_once('=').unwrap();
            self.0.retain(|(n, _)| n != name);
            if !line.contains("Max-Age=0;") {
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }

    /// `GET /bff/user` with this jar, taking its `Set-Cookie` answers: (status, body).
    fn user(&mut self, port: u16) -> (u16, String) {
        let request = format!(
            "GET /bff/user HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            self.header()
        );
        let text = exchange_lossy(port, request.as_bytes(), Duration::from_secs(5));
        let (head, body) = head_and_body(&text);
        let set: Vec<String> = head
            .lines()
            .filter_map(|l| l.strip_prefix("set-cookie: "))
            .map(str::to_owned)
            .collect();
        self.apply(&set);
        (status_code(head), body.to_owned())
    }
}

const RELOAD_OK: &str = "sealgate_key_reloads_total{outcome=\"ok\"}";
const RELOAD_FAILED: &str = "sealgate_key_reloads_total{outcome=\"failed\"}";

#[test]
fn rotation_by_folder_changes_and_sighup_never_refuses_a_valid_cookie() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let old = keygen(&dir);
    let server = start(&dir, tmp.path());
    let port = server.port;
    let under_old = session_cookie(&dir);
    assert_eq!(get(port, "/bff/user", Some(&under_old)).0, 200);

    // Phase 1: a new key joins (not primary); this instance picks it up by itself.
    let new = keygen(&dir);
    wait_until("reload after keygen", || metric(port, RELOAD_OK) >= 1);
    // Another instance that already promoted the new key seals with it: we open it.
    let other = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), other.path().join(f.file_name())).unwrap();
    }
    keys_cmd(&[
        "keys",
        "promote",
        "--dir",
        other.path().to_str().unwrap(),
        &new,
    ]);
    let under_new = session_cookie(other.path());
    assert_eq!(
        get(port, "/bff/user", Some(&under_new)).0,
        200,
        "phase 1: the new key opens before promotion"
    );

    // Phase 2: promote here too; both keys still open.
    keys_cmd(&["keys", "promote", "--dir", dir.to_str().unwrap(), &new]);
    wait_until("reload after promote", || metric(port, RELOAD_OK) >= 2);
    assert_eq!(get(port, "/bff/user", Some(&under_old)).0, 200);
    assert_eq!(get(port, "/bff/user", Some(&under_new)).0, 200);

    // A bad ring is refused with a log line; the current ring stays.
    let bad = dir.join("broken.key");
    std::fs::write(&bad, "not-a-key\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    wait_until("refused reload", || metric(port, RELOAD_FAILED) >= 1);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("key ring reload refused") && log.contains("broken.key"),
        "{log}"
    );
    assert_eq!(get(port, "/bff/user", Some(&under_new)).0, 200);
    assert_eq!(get(port, "/bff/user", Some(&under_old)).0, 200);
    std::fs::remove_file(&bad).unwrap();
    wait_until("reload after the fix", || metric(port, RELOAD_OK) >= 3);

    // Retire the old key: its cookies no longer open; the new ones do.
    keys_cmd(&["keys", "retire", "--dir", dir.to_str().unwrap(), &old]);
    wait_until("retired key refused", || {
        get(port, "/bff/user", Some(&under_old)).0 == 401
    });
    assert_eq!(get(port, "/bff/user", Some(&under_new)).0, 200);

    // SIGHUP reloads on demand.
    let before = metric(port, RELOAD_OK);
    let pid = server.server.pid();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_until("reload on SIGHUP", || metric(port, RELOAD_OK) > before);
    assert!(
        std::fs::read_to_string(&server.log)
            .unwrap()
            .contains("why=\"SIGHUP\"")
    );
}

#[test]
fn keeps_session_behind_two_hundred_sibling_cookies() {
    // A sibling domain may set cookies on the parent domain (RFC 6265 §8.6); the browser
    // sends them first when they are older. Only the first 128 pairs used to be read.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    keygen(&dir);
    let server = start(&dir, tmp.path());
    let siblings: Vec<String> = (0..200).map(|i| format!("sibling{i}=value")).collect();
    let cookie = format!("{}; {}", siblings.join("; "), session_cookie(&dir));
    assert_eq!(get(server.port, "/bff/user", Some(&cookie)).0, 200);
}

#[cfg(unix)]
#[test]
fn retries_a_refused_reload_when_only_the_mode_was_fixed() {
    // A new key copied in with the umask's 0644, then `chmod 600`: the first poll refuses
    // the folder, and the fix changes nothing the folder's fingerprint sees (names, sizes,
    // mtimes, inodes), as with any transient failure (EMFILE, EIO). It used to be retried
    // only when the folder changed again.
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    keygen(&dir);
    let server = start(&dir, tmp.path());
    let port = server.port;

    let other = tmp.path().join("other");
    let new = keygen(&other);
    let under_new = session_cookie(&other);
    let name = format!("{new}.key");
    let staged = dir.join(format!(".{name}.staged"));
    std::fs::copy(other.join(&name), &staged).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&staged, dir.join(&name)).unwrap();
    wait_until("refused reload", || metric(port, RELOAD_FAILED) >= 1);
    assert_eq!(get(port, "/bff/user", Some(&under_new)).0, 401);

    std::fs::set_permissions(dir.join(&name), std::fs::Permissions::from_mode(0o600)).unwrap();
    wait_until("reload retried after the fix", || {
        metric(port, RELOAD_OK) >= 1
    });
    assert_eq!(get(port, "/bff/user", Some(&under_new)).0, 200);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("why=\"retry of a refused reload\""), "{log}");
}

#[cfg(unix)]
#[test]
fn logs_a_folder_left_broken_once_and_counts_every_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    keygen(&dir);
    let server = start(&dir, tmp.path());
    let bad = dir.join("broken.key");
    std::fs::write(&bad, "not-a-key\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    wait_until("a retry counted", || {
        metric(server.port, RELOAD_FAILED) >= 2
    });
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert_eq!(
        log.matches("key ring reload refused").count(),
        1,
        "one error line, the retries at debug: {log}"
    );
}

#[test]
fn keeps_the_profile_when_the_old_key_is_retired_after_a_promotion() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let old = keygen(&dir);
    let server = start(&dir, tmp.path());
    let port = server.port;
    // Both log in under the old key.
    let (session, profile) = login("alice");
    let mut alice = Jar::default();
    alice.apply(&seal(&dir, &session, Some(&profile)));
    let (session, profile) = login("bob");
    let mut bob = Jar::default();
    bob.apply(&seal(&dir, &session, Some(&profile)));

    let new = keygen(&dir);
    wait_until("reload after keygen", || metric(port, RELOAD_OK) >= 1);
    keys_cmd(&["keys", "promote", "--dir", dir.to_str().unwrap(), &new]);
    wait_until("reload after promote", || metric(port, RELOAD_OK) >= 2);
    // Alice's SPA asks /bff/user: both her cookies move to the new primary.
    assert_eq!(alice.user(port).0, 200);
    // Bob's SPA only calls its API, which re-seals the session (Path=/) under the new
    // primary; the profile (Path=/bff/) is not sent there and stays under the old key.
    bob.apply(&seal(&dir, &session, None));

    // Emergency: the old key is retired without waiting for sessions to end.
    keys_cmd(&["keys", "retire", "--dir", dir.to_str().unwrap(), &old]);
    wait_until("reload after retire", || metric(port, RELOAD_OK) >= 3);
    let (status, body) = alice.user(port);
    assert_eq!(status, 200, "{body}");
    let (status, body) = bob.user(port);
    assert_eq!(
        status, 200,
        "the profile is rebuilt from the session: {body}"
    );
    assert!(body.contains("\"sub\":\"bob\""), "{body}");
    // The rebuilt profile was sealed in that answer: it opens as it is now.
    let before = bob.header();
    assert_eq!(bob.user(port).0, 200);
    assert_eq!(bob.header(), before, "nothing left to re-seal");
}
