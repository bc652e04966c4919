//! Cookies sealed by an earlier release still open: a deploy never logs anyone out. Each
//! release that changes anything of the sealed format (envelope, chunking, session or
//! profile payload) commits a fixture of cookies its code sealed, and this test opens every
//! fixture ever committed with today's code, checking each field.
//!
//! A new fixture: `cargo test --test session_fixture -- --ignored --exact write_fixture`
//! writes `tests/fixtures/sessions-<date>.json` (or `-2`, ... after a committed one of that
//! day) with today's code (a test-only key; the cookies' sealed expiry is a year after
//! `now`, and `now` is stored with them).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a failure aborts the test with its message"
)]

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use common::cookie_header;
use sealgate::config::SameSite;
use sealgate::cookies::RequestCookies;
use sealgate::jar::{self, Cookies};
use sealgate::jws::{DpopAlg, DpopKey, EdKey};
use sealgate::keys::{KeyRing, MasterKey};
use sealgate::session::{Limits, Profile, Session};

/// Long enough that the fixtures' sessions are within their limits at their `now`.
const LIMITS: Limits = Limits {
    absolute: 400 * 24 * 3600,
    idle: 366 * 24 * 3600,
    refresh_skew: 60,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn ring_of(fixture: &Value) -> KeyRing {
    let kid = fixture["key"]["kid"].as_str().unwrap();
    let key = MasterKey::parse(fixture["key"]["secret"].as_str().unwrap(), "fixture").unwrap();
    KeyRing::new(vec![(kid.to_owned(), key)], kid, "fixture").unwrap()
}

fn spec() -> Cookies {
    // secure = false: the fixtures' names carry no __Host- prefix; the prefix is a name
    // choice made at read time from the configuration, not part of the sealed format.
    Cookies::new(false, SameSite::Lax, 4)
}

#[test]
fn opens_every_committed_fixture_with_todays_code() {
    let mut seen = 0;
    let mut formats = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("sessions-") && name.ends_with(".json")) {
            continue;
        }
        let fixture: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let ring = ring_of(&fixture);
        let now = fixture["now"].as_u64().unwrap();
        for case in fixture["sessions"].as_array().unwrap() {
            let what = format!("{name} {}", case["name"]);
            let header = case["cookie"].as_str().unwrap();
            let jar = RequestCookies::parse([header]);
            let loaded = jar::load(&jar, &ring, &spec(), &LIMITS, now)
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            let opened = spec().session.open(&jar, &ring, now).unwrap();
            formats.insert(opened.payload().first().copied());
            let s = &loaded.session;
            let want = &case["session"];
            assert_eq!(s.id, want["id"].as_str().unwrap(), "{what}");
            assert_eq!(s.access_token.expose(), want["access_token"], "{what}");
            assert_eq!(
                s.refresh_token.as_ref().map(|t| t.expose().to_owned()),
                want["refresh_token"].as_str().map(str::to_owned),
                "{what}"
            );
            assert_eq!(
                s.access_expires_at,
                want["access_expires_at"].as_u64(),
                "{what}"
            );
            assert_eq!(s.sub, want["sub"].as_str().unwrap(), "{what}");
            assert_eq!(s.sid.as_deref(), want["sid"].as_str(), "{what}");
            assert_eq!(s.created_at, want["created_at"].as_u64().unwrap(), "{what}");
            assert_eq!(s.last_seen, want["last_seen"].as_u64().unwrap(), "{what}");
            // A DPoP-bound session keeps the very key its tokens are bound to.
            let jkt = s
                .dpop_key
                .as_ref()
                .map(|k| DpopKey::from_sealed(k).unwrap().thumbprint());
            assert_eq!(jkt.as_deref(), want["dpop_jkt"].as_str(), "{what}");
            assert!(loaded.by_primary, "{what}");

            let profile = jar::open_profile(&jar, &ring, &spec(), s, now)
                .unwrap_or_else(|e| panic!("{what}: profile {e:?}"))
                .profile;
            let want = &case["profile"];
            assert_eq!(
                profile.id_token.as_ref().map(|t| t.expose().to_owned()),
                want["id_token"].as_str().map(str::to_owned),
                "{what}"
            );
            assert_eq!(Value::Object(profile.claims), want["claims"], "{what}");
        }
        seen += 1;
    }
    assert!(seen >= 1, "no fixture found in {}", fixtures().display());
    // Both session payload formats are among them: 1 (JSON, `{`) and 2 (binary).
    assert!(
        formats.is_superset(&[Some(2), Some(b'{')].into()),
        "payload formats seen: {formats:?}"
    );
}

#[test]
fn refuses_a_fixture_cookie_under_another_key() {
    // The fixtures prove something only if opening them needs their key.
    let path = fixtures().join("sessions-2026-12-02.json");
    let fixture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let other = KeyRing::new(
        vec![(
            "fx".to_owned(),
            MasterKey::parse(&URL_SAFE_NO_PAD.encode([9u8; 32]), "o").unwrap(),
        )],
        "fx",
        "other",
    )
    .unwrap();
    let header = fixture["sessions"][0]["cookie"].as_str().unwrap();
    let jar = RequestCookies::parse([header]);
    let now = fixture["now"].as_u64().unwrap();
    assert!(jar::load(&jar, &other, &spec(), &LIMITS, now).is_err());
    assert!(jar::load(&jar, &ring_of(&fixture), &spec(), &LIMITS, now).is_ok());
}

/// Writes today's fixture. Run by hand (see the module comment), then commit the file.
#[test]
#[ignore = "writes a fixture file; run by hand when the sealed format changes"]
fn write_fixture() {
    let now = sealgate::clock::now_secs();
    let secret = URL_SAFE_NO_PAD.encode(rand32());
    let fixture_key = json!({"kid": "fixture", "secret": secret});
    let ring = ring_of(&json!({"key": fixture_key}));
    let ed = EdKey::generate().unwrap();
    let es = DpopKey::generate(DpopAlg::Es256).unwrap();
    let cases = [
        ("bearer with refresh token", None, None),
        (
            "DPoP, ES256 proof key",
            Some(es.sealed()),
            Some(es.thumbprint()),
        ),
        (
            "DPoP, Ed25519 proof key (the first DPoP sessions)",
            Some(ed.sealed_seed()),
            Some(ed.thumbprint()),
        ),
    ];
    let mut sessions = Vec::new();
    for (i, (name, key, jkt)) in cases.into_iter().enumerate() {
        let session = Session {
            id: sealgate::session::random_id().unwrap(),
            access_token: format!("eyJhbGciOiJSUzI1NiJ9.at-{i}.{}", "s".repeat(300))
                .as_str()
                .into(),
            access_expires_at: Some(now + 3600),
            refresh_token: (i == 0).then(|| "rt-fixture-0".into()),
            sub: format!("user-{i}"),
            sid: Some(format!("sid-{i}")),
            created_at: now - 60,
            last_seen: now - 5,
            dpop_key: key,
        };
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(session.sub));
        claims.insert("name".into(), json!("Jürgen \"Fixture\""));
        claims.insert("groups".into(), json!(["a", "b"]));
        let profile = Profile {
            session_id: session.id.clone(),
            id_token: Some(format!("eyJhbGciOiJSUzI1NiJ9.id-{i}.sig").as_str().into()),
            claims: claims.clone(),
        };
        let empty = RequestCookies::default();
        let mut set = jar::write_session(&empty, &ring, &spec(), &LIMITS, now, &session).unwrap();
        set.extend(
            jar::write_profile(&empty, &ring, &spec(), &LIMITS, now, &session, &profile).unwrap(),
        );
        sessions.push(json!({
            "name": name,
            "cookie": cookie_header(&set),
            "session": {
                "id": session.id, "access_token": session.access_token.expose(),
                "refresh_token": session.refresh_token.as_ref().map(|t| t.expose().to_owned()),
                "access_expires_at": session.access_expires_at, "sub": session.sub,
                "sid": session.sid, "created_at": session.created_at, "last_seen": session.last_seen,
                "dpop_jkt": jkt,
            },
            "profile": {"id_token": profile.id_token.as_ref().map(|t| t.expose().to_owned()), "claims": claims},
        }));
    }
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .unwrap()
        .stdout;
    let date = String::from_utf8(date).unwrap();
    // Never over a committed fixture: a second format change on one day gets `-2`, ...
    let out = (1..)
        .map(|n| match n {
            1 => format!("sessions-{}.json", date.trim()),
            n => format!("sessions-{}-{n}.json", date.trim()),
        })
        .map(|name| fixtures().join(name))
        .find(|path| !path.exists())
        .unwrap();
    let doc = json!({
        "about": "cookies sealed by this release's code, with a test-only key; opened by tests/session_fixture.rs",
        "now": now, "key": fixture_key, "sessions": sessions,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    println!("wrote {}", out.display());
}

fn rand32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    b
}
