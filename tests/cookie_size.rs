//! The size of a realistic session on the wire (issue: 1.2 KB access token, 0.9 KB ID
//! token, 100 B refresh token): each cookie fits one chunk and the whole `Cookie` header
//! stays far below the 8 KB header-line limit of nginx and many load balancers.
//! `cargo test --test cookie_size -- --nocapture` prints the numbers quoted in README.md.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use sealgate::config::SameSite;
use sealgate::cookies::{CookieSpec, RequestCookies};
use sealgate::fuzzing::{NOW, ring};
use sealgate::session::{Profile, Session};
use serde_json::json;

/// A JWT-shaped token of exactly `len` characters.
fn token(len: usize, fill: char) -> String {
    let head = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.";
    let body: String = std::iter::repeat_n(fill, len - head.len() - 44).collect();
    format!("{head}{body}.{}", "s".repeat(43))
}

fn cookie_pairs(set_cookies: &[String]) -> Vec<String> {
    set_cookies
        .iter()
        .map(|h| h.split(';').next().unwrap().to_owned())
        .collect()
}

#[test]
fn realistic_session_fits_one_chunk_per_cookie_and_under_8_kb() {
    let ring = ring().unwrap();
    let session = Session {
        id: "q3Jm1yB1m2q3Jm1yB1m2qA".into(),
        access_token: token(1200, 'A').as_str().into(),
        access_expires_at: Some(NOW + 300),
        refresh_token: Some("r".repeat(100).as_str().into()),
        sub: "248289761001".into(),
        sid: Some("4d1c3f52-6f2e-4d2a-9b1f-0d9c8f2b7a11".into()),
        created_at: NOW,
        last_seen: NOW,
        dpop_key: None,
    };
    let claims = json!({
        "sub": "248289761001", "name": "Jane Doe", "given_name": "Jane", "family_name": "Doe",
        "email": "janedoe@example.com", "email_verified": true, "preferred_username": "j.doe",
    });
    let profile = Profile {
        session_id: session.id.clone(),
        id_token: Some(token(900, 'B').as_str().into()),
        claims: claims.as_object().unwrap().clone(),
    };
    let jar = RequestCookies::default();
    let session_spec = CookieSpec::new("sealgate", "/", true, SameSite::Lax, 4);
    let profile_spec = CookieSpec::new("sealgate-user", "/bff/", true, SameSite::Lax, 4);
    let session_bytes = session.to_bytes().unwrap();
    let profile_bytes = profile.to_bytes().unwrap();
    let s = session_spec
        .seal(&jar, ring, NOW, NOW + 3600, &session_bytes)
        .unwrap();
    let p = profile_spec
        .seal(&jar, ring, NOW, NOW + 3600, &profile_bytes)
        .unwrap();

    let api_header = cookie_pairs(&s).join("; ");
    let bff_header = [cookie_pairs(&s), cookie_pairs(&p)].concat().join("; ");
    eprintln!(
        "session payload {} B -> {} chunk(s), Set-Cookie {} B; profile payload {} B -> {} chunk(s), Set-Cookie {} B",
        session_bytes.len(),
        s.len(),
        s.iter().map(String::len).sum::<usize>(),
        profile_bytes.len(),
        p.len(),
        p.iter().map(String::len).sum::<usize>(),
    );
    eprintln!(
        "Cookie header: {} B on API calls (Path=/), {} B on /bff/*",
        api_header.len(),
        bff_header.len()
    );
    assert_eq!(s.len(), 1, "session cookie must fit one chunk");
    assert_eq!(p.len(), 1, "profile cookie must fit one chunk");
    // Tokens dominate: the sealed session is at most 4/3 (base64) of tokens + 25% framing.
    let tokens = 1200 + 100;
    assert!(
        api_header.len() < tokens * 4 / 3 * 5 / 4,
        "{}",
        api_header.len()
    );
    assert!(bff_header.len() < 8 * 1024 / 2, "{}", bff_header.len());
}
