//! The v1 error body `{status, code, message}` (CAMARA ErrorInfo), and the one place where
//! service errors become HTTP answers for the v1 facades.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::{Invalid, InvalidKind};
use crate::service::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The specified resource is not found.",
        )
    }

    pub fn missing_identifier() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "MISSING_IDENTIFIER",
            "The device cannot be identified.",
        )
    }

    pub fn unnecessary_identifier() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNNECESSARY_IDENTIFIER",
            "The device is already identified by the access token.",
        )
    }

    pub fn unsupported_identifier() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNSUPPORTED_IDENTIFIER",
            "The identifier provided is not supported.",
        )
    }

    pub fn permission_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Client does not have sufficient permissions to perform this action.",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Server error.",
        )
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        match e.kind {
            InvalidKind::Argument => Self::invalid_argument(e.message),
            InvalidKind::OutOfRange => {
                Self::new(StatusCode::BAD_REQUEST, "OUT_OF_RANGE", e.message)
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => Self::not_found(),
            ServiceError::Forbidden | ServiceError::OtherDevice => Self::permission_denied(),
            ServiceError::UnknownDevice => Self::new(
                StatusCode::NOT_FOUND,
                "IDENTIFIER_NOT_FOUND",
                "Device identifier not found.",
            ),
            ServiceError::ServiceNotApplicable => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "SERVICE_NOT_APPLICABLE",
                "The service is not available for the provided identifier.",
            ),
            ServiceError::DirectoryUnavailable(why) => {
                tracing::warn!(error = %why, "device directory unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "Service Unavailable.",
                )
            }
            ServiceError::QuotaExceeded(_) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "QUOTA_EXCEEDED",
                "Out of resource quota: the client holds its maximum number of active sessions.",
            ),
            ServiceError::UnknownProfile(name) => {
                Self::invalid_argument(format!("qosProfile {name} does not exist"))
            }
            ServiceError::ProfileNotApplicable(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE",
                "The requested QoS Profile is currently not available for session creation.",
            ),
            e @ ServiceError::DurationOutOfRange { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "QUALITY_ON_DEMAND.DURATION_OUT_OF_RANGE",
                format!(
                    "The requested duration is out of the allowed range for the specific QoS profile: {e}"
                ),
            ),
            ServiceError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                "Conflict with an existing session for the same device.",
            ),
            ServiceError::ExtensionNotAllowed(status) => Self::new(
                StatusCode::CONFLICT,
                "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED",
                format!(
                    "Extending the session duration is not allowed in the current state ({}). The session must be in the AVAILABLE state.",
                    status.as_str()
                ),
            ),
            ServiceError::Internal(e) if crate::store::fence::Unavailable::caused(&e) => {
                tracing::warn!(error = %format!("{e:#}"), "request refused: the database is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "Service Unavailable.",
                )
            }
            ServiceError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "request failed");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorInfo {
            status: self.status.as_u16(),
            code: self.code,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}
