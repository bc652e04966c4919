//! Seal and open cost for 1, 4 and 8 KB payloads, beside the bare XChaCha20-Poly1305 pass
//! over the same bytes: the issue's target is open(4 KB) <= 2 x bare decrypt(4 KB).
//! Also the whole per-request read: parse a `Cookie` header, join the chunks, open; and the
//! same read when the session cache already holds the value (what most proxied calls do).
//! And the DPoP proof a DPoP-bound session signs per proxied call, with each proof key
//! algorithm (`proof/ES256`, `proof/EdDSA`), and what opening a sealed proof key costs.
//!
//! And a whole session cookie opened as a cache miss does (`session/open_3k`), and what a
//! cache hit could check a sealed value with (`cache_check`: the value itself, or a keyed hash).
//!
//! Run: `cargo bench --bench seal` (see README "Benchmarks").

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark aborts on any failure by design"
)]

use std::hint::black_box;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealgate::cookies::{CookieSpec, RequestCookies, SameSite};
use sealgate::keys::{KeyRing, MasterKey};
use sealgate::seal;
use sealgate::session_cache::SessionCache;

const NOW: u64 = 1_800_000_000;

fn ring() -> KeyRing {
    let text = URL_SAFE_NO_PAD.encode([42u8; 32]);
    let entries = vec![
        (
            "old".to_owned(),
            MasterKey::parse(&URL_SAFE_NO_PAD.encode([1u8; 32]), "b").unwrap(),
        ),
        (
            "k2026".to_owned(),
            MasterKey::parse(&text, "bench").unwrap(),
        ),
    ];
    KeyRing::new(entries, "k2026", "bench").unwrap()
}

fn bench(c: &mut Criterion) {
    let ring = ring();
    let bare = XChaCha20Poly1305::new(&[7u8; 32].into());
    let nonce = XNonce::from([9u8; 24]);
    let mut group = c.benchmark_group("seal");
    for kb in [1usize, 4, 8] {
        let payload = vec![0x5au8; kb * 1024];
        group.throughput(Throughput::Bytes(payload.len() as u64));

        group.bench_with_input(BenchmarkId::new("seal", kb), &payload, |b, p| {
            b.iter(|| seal::seal(&ring, "__Host-sealgate", NOW + 3600, black_box(p)).unwrap())
        });

        let sealed = seal::seal(&ring, "__Host-sealgate", NOW + 3600, &payload).unwrap();
        group.bench_with_input(BenchmarkId::new("open", kb), &sealed, |b, s| {
            b.iter(|| seal::open(&ring, "__Host-sealgate", NOW, black_box(s)).unwrap())
        });

        // The bare AEAD pass over the same bytes (payload + 8-byte expiry), including the
        // copy of the ciphertext that in-place decryption needs.
        let mut ct = vec![0x5au8; payload.len() + 8];
        let tag: Tag = bare
            .encrypt_inout_detached(&nonce, b"aad", ct.as_mut_slice().into())
            .unwrap();
        group.bench_with_input(BenchmarkId::new("bare_decrypt", kb), &ct, |b, ct| {
            b.iter(|| {
                let mut buf = black_box(ct).clone();
                bare.decrypt_inout_detached(&nonce, b"aad", buf.as_mut_slice().into(), &tag)
                    .unwrap();
                buf
            })
        });

        let spec = CookieSpec::new("sealgate", "/", true, SameSite::Lax, 8);
        let headers = spec
            .seal(&RequestCookies::default(), &ring, NOW, NOW + 3600, &payload)
            .unwrap();
        let cookie_header = headers
            .iter()
            .map(|h| h.split(';').next().unwrap())
            .chain(["theme=dark", "_ga=GA1.2.3"])
            .collect::<Vec<_>>()
            .join("; ");
        group.bench_with_input(
            BenchmarkId::new("read_cookie_header", kb),
            &cookie_header,
            |b, h| {
                b.iter(|| {
                    let jar = RequestCookies::parse([black_box(h.as_str())]);
                    spec.open(&jar, &ring, NOW).unwrap()
                })
            },
        );

        let cache = SessionCache::new(1024);
        let jar = RequestCookies::parse([cookie_header.as_str()]);
        let parts = spec.parts(&jar).unwrap();
        let bearer = http::HeaderValue::from_static("Bearer t");
        cache.insert(ring.id(), parts.as_slice(), NOW, NOW + 60, bearer);
        group.bench_with_input(
            BenchmarkId::new("read_cookie_header_cached", kb),
            &cookie_header,
            |b, h| {
                b.iter(|| {
                    let jar = RequestCookies::parse([black_box(h.as_str())]);
                    let parts = spec.parts(&jar).unwrap();
                    cache.get(ring.id(), parts.as_slice(), NOW).unwrap()
                })
            },
        );
    }
    group.finish();
}

fn proof(c: &mut Criterion) {
    use sealgate::dpop::ProofKey;
    use sealgate::jws::{DpopAlg, DpopKey};
    use sealgate::secret::SecretString;

    let token = SecretString::new("a".repeat(3000));
    let uri: http::Uri = "http://127.0.0.1:9100/v1/items/7".parse().unwrap();
    let mut group = c.benchmark_group("proof");
    for alg in [DpopAlg::Es256, DpopAlg::EdDsa] {
        let sealed = DpopKey::generate(alg).unwrap().sealed();
        let key = ProofKey::new(&sealed, &token).unwrap();
        group.bench_function(alg.name(), |b| {
            b.iter(|| {
                key.proof(&http::Method::GET, black_box(&uri), NOW, None)
                    .unwrap()
            })
        });
        group.bench_function(format!("open_{}", alg.name()), |b| {
            b.iter(|| ProofKey::new(black_box(&sealed), &token).unwrap())
        });
    }
    group.finish();
}

/// What a proxied call pays when the session cache does not hold its cookie: the `Cookie`
/// header parsed, the chunks joined and opened, the session payload decoded and checked, and
/// its `Authorization` value made (a 3,000-byte access token, as Entra ID and Cognito issue).
fn session(c: &mut Criterion) {
    use sealgate::config::SameSite as Site;
    use sealgate::dpop::Credential;
    use sealgate::jar::{self, Cookies};
    use sealgate::session::{Limits, Session};

    let ring = ring();
    let cookies = Cookies::new(true, Site::Lax, 4);
    let limits = Limits {
        absolute: 12 * 3600,
        idle: 3600,
        refresh_skew: 60,
    };
    let session = Session {
        id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        access_token: "a".repeat(3000).as_str().into(),
        access_expires_at: Some(NOW + 300),
        refresh_token: Some("r".repeat(200).as_str().into()),
        sub: "248289761001".into(),
        sid: Some("08a5019c-17e1-4977-8f42-65a12843ea02".into()),
        created_at: NOW,
        last_seen: NOW,
        dpop_key: None,
    };
    let headers = jar::write_session(
        &RequestCookies::default(),
        &ring,
        &cookies,
        &limits,
        NOW,
        &session,
    )
    .unwrap();
    let header = headers
        .iter()
        .map(|h| h.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("; ");
    let mut group = c.benchmark_group("session");
    group.bench_function("open_3k", |b| {
        b.iter(|| {
            let jar = RequestCookies::parse([black_box(header.as_str())]);
            let loaded = jar::load(&jar, &ring, &cookies, &limits, NOW).unwrap();
            let s = &loaded.session;
            Credential::of(&s.access_token, s.dpop_key.as_ref()).unwrap()
        })
    });
    group.bench_function("decode_3k", |b| {
        let bytes = session.to_bytes().unwrap();
        b.iter(|| Session::from_bytes(black_box(&bytes)).unwrap())
    });
    group.finish();
}

/// What a session cache hit could check a 4.4 KB sealed value against: the whole value kept
/// and compared in constant time (what the cache does), or a keyed hash of it kept instead
/// (HMAC-SHA-256 with ring, SHA-NI here), which would shrink each entry by the value's size.
fn cache_check(c: &mut Criterion) {
    let value = "x".repeat(4400);
    let kept = value.clone();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[3u8; 32]);
    let tag = ring::hmac::sign(&key, value.as_bytes());
    let mut group = c.benchmark_group("cache_check");
    group.bench_function("compare_4400", |b| {
        b.iter(|| {
            let diff = black_box(&kept)
                .bytes()
                .zip(black_box(&value).bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y));
            black_box(diff) == 0
        })
    });
    group.bench_function("hmac_sha256_4400", |b| {
        b.iter(|| ring::hmac::verify(&key, black_box(value.as_bytes()), tag.as_ref()).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench, proof, session, cache_check);
criterion_main!(benches);
