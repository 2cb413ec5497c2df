//! Authentication: who is calling, from an opaque bearer token.
//!
//! The token travels in `Authorization: Bearer <token>`. Only the
//! WebSocket upgrade (`/ws`, see `ws`) also takes a `token` query parameter,
//! because browsers cannot set headers on a WebSocket; REST routes refuse
//! it (a token in a URL ends up in logs and proxies' histories). The
//! store keeps only the token's hash and refuses unknown, revoked and
//! expired tokens alike.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use storage::chat::UserId;

use crate::{AppState, Error};

/// The authenticated caller of a request. Extracting it answers 401 unless
/// the request carries a valid token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// Who is calling.
    pub user_id: UserId,
    /// The token they presented (logout revokes exactly this one).
    pub token: String,
}

/// Resolves a token to its user (401 when unknown, revoked or expired).
/// The WebSocket handler reuses it for tokens that arrive in a frame.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<UserId, Error> {
    let token = token.to_owned();
    state
        .blocking(move |store| store.resolve_token(&token))
        .await
}

/// The token a request presents in its `Authorization` header. A `token`
/// query parameter is not looked at: 401 like no token at all.
pub(crate) fn presented_token(headers: &HeaderMap) -> Result<String, Error> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Error::Unauthorized)?;
        let (scheme, token) = value.split_once(' ').ok_or(Error::Unauthorized)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Error::Unauthorized);
        }
        return Ok(token.to_owned());
    }
    Err(Error::Unauthorized)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = presented_token(&parts.headers)?;
        let user_id = authenticate(state, &token).await?;
        tracing::Span::current().record("user", user_id);
        Ok(AuthUser { user_id, token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token(auth: Option<&str>, uri: &str) -> Result<String, Error> {
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(auth).expect("header"),
            );
        }
        let _: axum::http::Uri = uri.parse().expect("uri");
        presented_token(&headers)
    }

    #[test]
    fn header_only() {
        assert_eq!(token(Some("Bearer abc"), "/x").expect("t"), "abc");
        assert_eq!(token(Some("bearer  abc "), "/x").expect("t"), "abc");
        assert_eq!(token(Some("Bearer abc"), "/x?token=xyz").expect("t"), "abc");
    }

    #[test]
    fn missing_or_malformed_is_unauthorized() {
        for (auth, uri) in [
            (None, "/x"),
            (None, "/x?token="),
            (None, "/api/chats?token=xyz"),
            (Some("Basic abc"), "/x"),
            (Some("Bearer"), "/x"),
            (Some("Bearer "), "/x"),
        ] {
            assert!(
                matches!(token(auth, uri), Err(Error::Unauthorized)),
                "{auth:?} {uri}"
            );
        }
    }
}
