//! The one API error type: every failure answers `{"error": code, "detail": ...}` with a fitting
//! status. Internal errors are logged with their chain and never shown to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What every error answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_parameter`, `invalid_token`, `overloaded`.
    pub error: &'static str,
    /// What was wrong, naming the field.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Unauthorized { code: &'static str, detail: String },
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type `{0}`")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("{0}")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
    #[error("the request was not complete within {} s", .0.as_secs_f64())]
    RequestTimeout(std::time::Duration),
    #[error("too many live sockets are open; retry shortly")]
    TooManyClients,
    #[error("too many requests are waiting to be stored; retry shortly")]
    Overloaded,
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            detail: detail.into(),
        }
    }
}

impl From<crate::store::GroupError> for ApiError {
    fn from(e: crate::store::GroupError) -> Self {
        match e {
            crate::store::GroupError::Busy => ApiError::Overloaded,
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized { code, .. } => (StatusCode::UNAUTHORIZED, *code),
            ApiError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, *code),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, *code),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, *code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::TooManyClients => (StatusCode::SERVICE_UNAVAILABLE, "too_many_clients"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        let detail = match &self {
            ApiError::Internal(_) => {
                "the server could not complete the request; retry later".into()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: code,
            detail,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
