//! The committed fuzz seeds must stay valid sealed cookies, so the fuzzer starts from the
//! deep end (a value that opens) and not only from the parser's error paths.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use sealgate::cookies::{ReadError, RequestCookies};
use sealgate::fuzzing::{NOW, ring, spec};
use sealgate::session::Session;

fn open(seed: &str) -> Result<Vec<u8>, ReadError> {
    let text = std::fs::read_to_string(format!("fuzz/corpus/cookie_open/{seed}")).unwrap();
    let jar = RequestCookies::parse(text.split('\n'));
    spec()
        .open(&jar, ring().unwrap(), NOW)
        .map(|o| o.payload().to_vec())
}

#[test]
fn committed_seeds_open() {
    let session = Session::from_bytes(&open("seed-session").unwrap()).unwrap();
    assert_eq!(session.sub, "alice");
    assert_eq!(open("seed-two-chunks").unwrap(), vec![b'x'; 5000]);
    // A stale chunk 3 beside a one-chunk session is ignored, not glued on.
    assert!(open("seed-stale").is_ok());
    // The session payload target starts from a payload of each format.
    for seed in ["seed-binary", "seed-json"] {
        let bytes = std::fs::read(format!("fuzz/corpus/session_payload/{seed}")).unwrap();
        let session = Session::from_bytes(&bytes).unwrap();
        assert_eq!(
            (session.sub.as_str(), session.sid.as_deref()),
            ("alice", Some("sid-1")),
            "{seed}"
        );
    }
}

#[test]
fn every_fuzz_target_runs_over_its_seeds() {
    type Target = fn(&[u8]);
    let targets: [(&str, Target); 5] = [
        ("cookie_open", sealgate::fuzzing::cookie_header),
        ("session_payload", sealgate::fuzzing::session_payload),
        ("callback_query", sealgate::fuzzing::callback_query),
        ("config", sealgate::fuzzing::config),
        ("proxy_headers", sealgate::fuzzing::proxy_headers),
    ];
    for (target, run) in targets {
        let seeds: Vec<_> = std::fs::read_dir(format!("fuzz/corpus/{target}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
            })
            .collect();
        assert!(!seeds.is_empty(), "{target} has no seed");
        for seed in seeds {
            run(&std::fs::read(&seed).unwrap());
        }
    }
}
