//! Authentication: who is calling, from an opaque bearer token.
//!
//! The token travels in `Authorization: Bearer <token>`, or in a `token`
//! query parameter because browsers cannot set headers on a WebSocket. The
//! store keeps only the token's hash and refuses unknown, revoked and
//! expired tokens alike.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Uri};
use serde::Deserialize;
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

/// The `token` query parameter; other parameters are the handler's.
#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

/// The token a request presents: the `Authorization` header first, then the
/// `token` query parameter.
pub(crate) fn presented_token(headers: &HeaderMap, uri: &Uri) -> Result<String, Error> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Error::Unauthorized)?;
        let (scheme, token) = value.split_once(' ').ok_or(Error::Unauthorized)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Error::Unauthorized);
        }
        return Ok(token.to_owned());
    }
    axum::extract::Query::<TokenParam>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.token)
        .filter(|t| !t.is_empty())
        .ok_or(Error::Unauthorized)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = presented_token(&parts.headers, &parts.uri)?;
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
        presented_token(&headers, &uri.parse().expect("uri"))
    }

    #[test]
    fn header_then_query() {
        assert_eq!(token(Some("Bearer abc"), "/x").expect("t"), "abc");
        assert_eq!(token(Some("bearer  abc "), "/x").expect("t"), "abc");
        assert_eq!(token(None, "/ws?token=xyz&q=1").expect("t"), "xyz");
        assert_eq!(
            token(Some("Bearer abc"), "/ws?token=xyz").expect("t"),
            "abc"
        );
    }

    #[test]
    fn missing_or_malformed_is_unauthorized() {
        for (auth, uri) in [
            (None, "/x"),
            (None, "/x?token="),
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
