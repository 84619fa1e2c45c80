//! The one error type of the API: each variant maps to a status and a stable `code`;
//! internal details are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowrun_core::spec::input::InputError;
use serde::Serialize;

use crate::store::StoreError;

/// Every error answer: `{"error": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_input`, `unauthorized`, `not_found`, …
    pub code: &'static str,
    pub message: String,
    /// The offending field, header or parameter, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Field-level problems of `invalid_input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
}

/// One field-level problem.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Why a request failed.
#[derive(Debug)]
pub enum AppError {
    /// The request is wrong; `field` names the offending part when there is one.
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// The run input does not match the flow's declared inputs.
    InvalidInput(Vec<InputError>),
    Unauthorized,
    Forbidden(String),
    NotFound(String),
    Conflict {
        code: &'static str,
        message: String,
    },
    PayloadTooLarge,
    /// Something broke on our side; the text goes to the log only.
    Internal(String),
    Unavailable,
}

impl AppError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_field(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message, field, details) = match self {
            AppError::BadRequest {
                code,
                message,
                field,
            } => (StatusCode::BAD_REQUEST, code, message, field, None),
            AppError::InvalidInput(errors) => {
                let message = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let field = errors.first().map(|e| e.field.clone());
                let details: Vec<_> = errors
                    .iter()
                    .map(|e| FieldError {
                        field: e.field.clone(),
                        message: e.message.clone(),
                    })
                    .collect();
                (
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    message,
                    field,
                    Some(details),
                )
            }
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required: `Authorization: Bearer <key>`".into(),
                None,
                None,
            ),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m, None, None),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m, None, None),
            AppError::Conflict { code, message } => {
                (StatusCode::CONFLICT, code, message, None, None)
            }
            AppError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large".into(),
                None,
                None,
            ),
            AppError::Internal(detail) => {
                tracing::error!(error = detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error".into(),
                    None,
                    None,
                )
            }
            AppError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is not reachable".into(),
                None,
                None,
            ),
        };
        let error = ErrorDetail {
            code,
            message,
            field,
            details,
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}
