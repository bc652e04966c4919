//! sealgate: a stateless Backend-for-Frontend for OpenID Connect.
//!
//! The browser never holds a token: sealgate keeps them in sealed (XChaCha20-Poly1305),
//! chunked, `HttpOnly` cookies that any instance holding the key ring can open.
//!
//! Dependencies point one way: `cookies` and `session` build on `seal`, which builds on
//! `keys`; `config`, `error` and `secret` sit below everything.
#![forbid(unsafe_code)]

pub mod config;
pub mod cookies;
pub mod error;
pub mod keys;
pub mod seal;
pub mod secret;
pub mod session;
