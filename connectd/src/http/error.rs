//! API errors in Connect's shape: `{"code": N, "error": "text", "payload": …}`.
//!
//! Codes and texts from Connect's API reference are reproduced exactly
//! (23, 50, 61, 112). Errors that table does not cover use code 0 with a
//! text of our own that says what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    pub payload: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            payload: Value::Null,
        }
    }

    pub fn with_payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            0,
            "You are not signed in. Sign in at /__login__ or send an API key \
             (Authorization: Key <key>).",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, 0, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 0, format!("No such {what}."))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 0, message)
    }

    /// Logs the detail for administrators; viewers see only that it failed.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("request failed: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "Internal error; the server log says more.",
        )
    }

    /// Connect's code 50.
    pub fn locked() -> Self {
        Self::new(StatusCode::FORBIDDEN, 50, "This user is locked.")
    }

    /// Connect's code 23.
    pub fn cannot_give_role() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            23,
            "You don't have permission to give the user this role.",
        )
    }

    /// Connect's code 61.
    pub fn last_administrator() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            61,
            "You cannot change the role of the only remaining administrator.",
        )
    }

    /// Connect's code 112.
    pub fn unknown_role() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            112,
            "The provided user role is not recognized.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({
                "code": self.code,
                "error": self.message,
                "payload": self.payload,
            })),
        )
            .into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Locked => ApiError::locked(),
            crate::store::StoreError::UsernameTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, 0, e.to_string())
            }
            crate::store::StoreError::Backend(_) => ApiError::internal(e),
        }
    }
}
