//! `GET /bff/jwks.json`: the public keys of sealgate's `private_key_jwt` client key (and
//! the next one during a rotation), for a provider that fetches the client's `jwks_uri`
//! rather than holding the keys in its registration. Public parts only (RFC 7517 §5).

use http::{Response, StatusCode};

use crate::app::App;
use crate::error::Error;
use crate::reply::{self, Body};

/// The client's JWK Set; 404 when the client authenticates with a secret.
pub async fn get(app: &App) -> Result<Response<Body>, Error> {
    let provider = app.provider().await?;
    let jwks = provider.client_jwks().ok_or(Error::NotFound)?;
    Ok(reply::json(StatusCode::OK, &jwks))
}
