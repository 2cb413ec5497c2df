//! The gateway's one error type, and the only place errors become HTTP
//! statuses.
//!
//! Every handler returns [`Error`]; storage errors arrive typed and are
//! classified by [`ErrorCode`] (shared with the WebSocket `error` frame), and
//! [`status`] turns a code into an HTTP status. The body is always
//! `{"error": {"code": "...", "message": "..."}}`, so a client parses one
//! shape whatever failed, including axum's own extractor rejections (see
//! `http::extract`) and unknown routes.

use actors::frames::{ErrorCode, ServerFrame};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Everything a gateway request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage layer refused or failed; its typed error says which.
    #[error(transparent)]
    Storage(#[from] storage::Error),

    /// Malformed input the storage layer never saw: bad JSON, a bad query
    /// string or path parameter, a request that changes nothing.
    #[error("{0}")]
    BadRequest(String),

    /// No bearer token was presented (a wrong one is a storage
    /// `InvalidToken`).
    #[error("missing bearer token: send `Authorization: Bearer <token>` (`?token=` is accepted only on the WebSocket upgrades /ws and /api/admin/events)")]
    Unauthorized,

    /// The caller is authenticated but lacks the role the route needs.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),

    /// The user is over a rate limit.
    #[error("rate limited: retry in {retry_after_ms} ms")]
    RateLimited {
        /// When the next attempt can succeed, in milliseconds from now.
        retry_after_ms: u64,
    },

    /// A request body (or frame) over its size limit.
    #[error("too large: the limit is {limit_bytes} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit_bytes: usize,
    },

    /// Too many requests are waiting for a password hash (or a connection
    /// slot): 503 with `Retry-After`.
    #[error("server busy: retry shortly")]
    Overloaded,

    /// A conversation actor refused a send made over HTTP: the code and
    /// message of the `error` frame it answered (already fit for clients).
    #[error("{message}")]
    Refused {
        /// The error class the actor gave.
        code: ErrorCode,
        /// Its message.
        message: String,
    },

    /// A bug: a blocking task panicked or was cancelled, a response failed
    /// to encode.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("blocking task failed: {e}"))
    }
}

impl Error {
    /// The error's class, as HTTP bodies and WebSocket frames name it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Storage(e) => ErrorCode::from(e),
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::Overloaded => ErrorCode::Unavailable,
            Error::Refused { code, .. } => *code,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// What the client is told. Internal and transient failures are not
    /// explained (their details stay in the server's log); everything the
    /// client can fix is.
    pub fn public_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => "internal error".to_owned(),
            ErrorCode::Unavailable => "temporarily unavailable, retry".to_owned(),
            ErrorCode::StorageFull => actors::frames::STORAGE_FULL.to_owned(),
            _ => self.to_string(),
        }
    }

    /// The WebSocket `error` frame for this error, answering request
    /// `reference`.
    pub fn frame(&self, reference: Option<String>) -> ServerFrame {
        ServerFrame::error(self.code(), self.public_message(), reference)
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.public_message(),
                retry_after_ms: match self {
                    Error::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                    _ => None,
                },
            },
        }
    }
}

/// The HTTP status of each error class.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable | ErrorCode::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable class: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `too_large`, `rate_limited`, `unavailable`,
    /// `storage_full` or `internal`.
    #[schema(value_type = String, example = "not_found")]
    pub code: ErrorCode,
    /// For humans.
    #[schema(example = "conversation not found")]
    pub message: String,
    /// Only for `rate_limited`: when to try again, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        match code {
            // Shedding load is expected under a burst: not an error, and
            // not worth a log line per refused request.
            _ if matches!(self, Error::Overloaded) => {
                tracing::debug!("request shed: hashing queue full");
            }
            ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::StorageFull => {
                tracing::error!(error = %self, "request failed");
            }
            _ => tracing::debug!(error = %self, "request refused"),
        }
        let mut response = (status(code), axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match (&self, code) {
            (Error::RateLimited { retry_after_ms }, _) => {
                // Retry-After counts whole seconds: round up so a client that
                // obeys it never comes back too early.
                let secs = retry_after_ms.div_ceil(1000).max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            (_, ErrorCode::Unavailable | ErrorCode::StorageFull) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            (_, ErrorCode::Unauthorized) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn render(e: Error) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (
            status,
            headers,
            serde_json::from_slice(&bytes).expect("json"),
        )
    }

    #[test]
    fn every_code_has_its_status() {
        let table = [
            (ErrorCode::BadRequest, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::Conflict, 409),
            (ErrorCode::TooLarge, 413),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::StorageFull, 503),
            (ErrorCode::Internal, 500),
        ];
        for (code, expected) in table {
            assert_eq!(status(code).as_u16(), expected, "{code:?}");
        }
    }

    #[test]
    fn storage_errors_are_classified() {
        let cases: Vec<(storage::Error, u16)> = vec![
            (storage::Error::invalid("name", "too short"), 400),
            (storage::Error::InvalidToken, 401),
            (storage::Error::BadCredentials, 401),
            (
                storage::Error::NotMember {
                    conv_id: 1,
                    user_id: 2,
                },
                403,
            ),
            (storage::Error::Forbidden("admins only"), 403),
            (storage::Error::NotFound { what: "user" }, 404),
            (storage::Error::AlreadyExists { what: "user name" }, 409),
            (
                storage::Error::StaleEpoch {
                    conv_id: 1,
                    presented: 1,
                    current: 2,
                },
                503,
            ),
            (storage::Error::PasswordHash("boom".into()), 500),
        ];
        for (e, expected) in cases {
            let e = Error::from(e);
            assert_eq!(status(e.code()).as_u16(), expected, "{e}");
        }
        assert_eq!(status(Error::Unauthorized.code()).as_u16(), 401);
        assert_eq!(status(Error::BadRequest("x".into()).code()).as_u16(), 400);
        assert_eq!(
            status(Error::TooLarge { limit_bytes: 1 }.code()).as_u16(),
            413
        );
        assert_eq!(status(Error::Internal("x".into()).code()).as_u16(), 500);
    }

    #[tokio::test]
    async fn body_has_the_documented_shape() {
        let (status, _, body) = render(
            storage::Error::NotFound {
                what: "conversation",
            }
            .into(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "not_found", "message": "conversation not found"}})
        );
    }

    #[tokio::test]
    async fn rate_limited_says_when_to_retry() {
        let (status, headers, body) = render(Error::RateLimited {
            retry_after_ms: 1200,
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "2");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(body["error"]["retry_after_ms"], 1200);
    }

    #[tokio::test]
    async fn internal_details_stay_in_the_log() {
        let (status, _, body) =
            render(storage::Error::PasswordHash("secret detail".into()).into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["message"], "internal error");
    }

    #[tokio::test]
    async fn unauthorized_asks_for_a_bearer_token() {
        let (status, headers, body) = render(Error::Unauthorized).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}
