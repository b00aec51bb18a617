//! The seed's error model for every v0 answer: `{"code": <integer>, "message", "description"}`,
//! with the seed's numeric codes and message texts. v1's parsers and the service report errors
//! their own way; this is where they become v0 answers.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::error::ApiError;
use crate::api::json::BodyError;
use crate::service::ServiceError;

/// The seed's 400 codes, by what was wrong.
pub mod bad {
    pub const URL_PARAMETER: u16 = 20;
    pub const MISSING_BODY: u16 = 21;
    pub const INVALID_BODY: u16 = 22;
    pub const MISSING_BODY_FIELD: u16 = 23;
    pub const INVALID_BODY_FIELD: u16 = 24;
    pub const MISSING_HEADER: u16 = 25;
    pub const INVALID_HEADER: u16 = 26;
    pub const MISSING_QUERY_PARAMETER: u16 = 27;
    pub const INVALID_QUERY_PARAMETER: u16 = 28;
}

#[derive(Debug)]
pub struct V0Error {
    pub status: StatusCode,
    pub code: u16,
    pub message: &'static str,
    pub description: String,
    /// For 405: the methods the resource supports.
    pub allow: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: u16,
    message: &'a str,
    description: &'a str,
}

/// The seed's message for a code, and its default description.
pub fn seed_text(code: u16) -> (&'static str, &'static str) {
    match code {
        1 => (
            "Internal error",
            "Generic failure message, used if no more precise code can be provided.",
        ),
        3 => (
            "Bad gateway",
            "A runtime execution error occurs (RaiseFault).",
        ),
        5 => (
            "The service is temporarily unavailable",
            "The service is temporarily unavailable.",
        ),
        6 => (
            "Gateway timeout",
            "No response was received in time from a backend server acting as gateway or proxy.",
        ),
        20 => (
            "Invalid URL parameter value",
            "One or more URL parameters contain invalid values.",
        ),
        21 => ("Missing body", "The request body is missing."),
        22 => ("Invalid body", "The request body is not valid JSON."),
        23 => (
            "Missing body field",
            "One or more mandatory fields are missing from the request body.",
        ),
        24 => (
            "Invalid body field",
            "One or more fields of the request body contain invalid values.",
        ),
        25 => (
            "Missing header",
            "One or more mandatory headers are missing.",
        ),
        26 => (
            "Invalid header value",
            "One or more headers contain invalid values.",
        ),
        27 => (
            "Missing query-string parameter",
            "One or more mandatory query-string parameters are missing.",
        ),
        28 => (
            "Invalid query-string parameter value",
            "One or more query-string parameters contain invalid values.",
        ),
        40 => (
            "Missing credentials",
            "The requested service needs credentials, but none were provided.",
        ),
        41 => (
            "Invalid credentials",
            "The requested service needs credentials, but the ones provided were invalid.",
        ),
        42 => (
            "Expired credentials",
            "The requested service needs credentials, and the ones provided were out-of-date.",
        ),
        50 => (
            "Access denied",
            "The application that makes the request is not authorized to access this endpoint.",
        ),
        51 => (
            "Forbidden requester",
            "The requester is not authorized to perform this operation.",
        ),
        52 => (
            "Forbidden user",
            "The end user is not authorized to perform this operation.",
        ),
        53 => (
            "Too many requests",
            "The application has made too many calls and has exceeded the rate limit for this service.",
        ),
        60 => (
            "Resource not found",
            "The requested URI or the requested resource does not exist.",
        ),
        61 => (
            "Method not allowed",
            "The URI does not support the requested method. The available methods should be set in the response header 'Allow'",
        ),
        62 => (
            "Not acceptable",
            "The Accept incoming header does not match any available content-type.",
        ),
        63 => (
            "Request time-out",
            "The server timed out waiting for the incoming request.",
        ),
        64 => (
            "Length required",
            "The request did not specify a Content-Length header, which is required by the requested resource.",
        ),
        65 => (
            "Precondition failed",
            "One of the precondition request headers (aka. 'If-None-Match', 'If-Match', 'If-Modified-Since', and 'If-Unmodified-Since') failed to match.",
        ),
        66 => (
            "Request entity too large",
            "The body of the request/response (PATCH, POST and PUT methods) is larger than the server is willing or able to process.",
        ),
        67 => (
            "Request-URI too long",
            "The URI provided was too long for the server to process.",
        ),
        68 => (
            "Unsupported Media Type",
            "The format of the posted body is not supported by the endpoint.",
        ),
        69 => (
            "Conflict",
            "The request could not be completed due to a conflict with the current state of the resource.",
        ),
        _ => (
            "Internal error",
            "Generic failure message, used if no more precise code can be provided.",
        ),
    }
}

/// The seed's code for an HTTP status when nothing more precise is known.
pub fn code_for_status(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => bad::INVALID_BODY_FIELD,
        401 => 41,
        403 => 50,
        404 => 60,
        405 => 61,
        406 => 62,
        408 => 63,
        409 => 69,
        411 => 64,
        412 => 65,
        413 => 66,
        414 => 67,
        415 => 68,
        429 => 53,
        502 => 3,
        503 => 5,
        504 => 6,
        _ => 1,
    }
}

impl V0Error {
    /// An answer with the seed's message for `code` and a description of this case.
    pub fn new(status: StatusCode, code: u16, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: seed_text(code).0,
            description: description.into(),
            allow: None,
        }
    }

    /// An answer with the seed's message and description for `code`.
    pub fn standard(status: StatusCode, code: u16) -> Self {
        Self::new(status, code, seed_text(code).1)
    }

    pub fn bad_request(code: u16, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }

    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, 60, description)
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::standard(StatusCode::METHOD_NOT_ALLOWED, 61)
        }
    }
}

impl IntoResponse for V0Error {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.code,
            message: self.message,
            description: &self.description,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// What the shared v1 parsers reject is an invalid field of the body.
impl From<ApiError> for V0Error {
    fn from(e: ApiError) -> Self {
        let code = match e.status.as_u16() {
            400 | 422 => bad::INVALID_BODY_FIELD,
            _ => code_for_status(e.status),
        };
        let status = if e.status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            e.status
        };
        Self::new(status, code, e.message)
    }
}

impl From<crate::domain::Invalid> for V0Error {
    fn from(e: crate::domain::Invalid) -> Self {
        ApiError::from(e).into()
    }
}

impl From<BodyError> for V0Error {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::UnsupportedMediaType => {
                Self::standard(StatusCode::UNSUPPORTED_MEDIA_TYPE, 68)
            }
            BodyError::TooLarge => Self::standard(StatusCode::PAYLOAD_TOO_LARGE, 66),
            BodyError::TimedOut => Self::standard(StatusCode::REQUEST_TIMEOUT, 63),
            BodyError::Empty => Self::standard(StatusCode::BAD_REQUEST, bad::MISSING_BODY),
            BodyError::Malformed(e) => Self::bad_request(bad::INVALID_BODY, e),
            BodyError::InvalidField(e) => Self::bad_request(bad::INVALID_BODY_FIELD, e),
        }
    }
}

impl From<ServiceError> for V0Error {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => Self::not_found("The session does not exist."),
            ServiceError::Forbidden => Self::new(
                StatusCode::FORBIDDEN,
                51,
                "The session belongs to another requester.",
            ),
            ServiceError::UnknownDevice => Self::not_found("The device is not known."),
            ServiceError::OtherDevice => Self::new(
                StatusCode::FORBIDDEN,
                52,
                "The access token was issued for another device.",
            ),
            ServiceError::QuotaExceeded(_) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                53,
                "The application holds its maximum number of active sessions.",
            ),
            ServiceError::Conflict => Self::new(
                StatusCode::CONFLICT,
                69,
                "Another session is created for the same device",
            ),
            ServiceError::ExtensionNotAllowed(_) => Self {
                // The spec's own text for this case.
                message: "The target session is inactive",
                ..Self::bad_request(
                    bad::INVALID_BODY_FIELD,
                    "Only an AVAILABLE session can be extended.",
                )
            },
            other => ApiError::from(other).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_of_the_seed_table_has_its_code_and_message() {
        let table = [
            (400, 24, "Invalid body field"),
            (401, 41, "Invalid credentials"),
            (403, 50, "Access denied"),
            (404, 60, "Resource not found"),
            (405, 61, "Method not allowed"),
            (406, 62, "Not acceptable"),
            (408, 63, "Request time-out"),
            (409, 69, "Conflict"),
            (411, 64, "Length required"),
            (412, 65, "Precondition failed"),
            (413, 66, "Request entity too large"),
            (414, 67, "Request-URI too long"),
            (415, 68, "Unsupported Media Type"),
            (429, 53, "Too many requests"),
            (500, 1, "Internal error"),
            (502, 3, "Bad gateway"),
            (503, 5, "The service is temporarily unavailable"),
            (504, 6, "Gateway timeout"),
        ];
        for (status, code, message) in table {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(code_for_status(status), code, "{status}");
            assert_eq!(seed_text(code).0, message, "{status}");
        }
        for (code, message) in [
            (20, "Invalid URL parameter value"),
            (21, "Missing body"),
            (22, "Invalid body"),
            (23, "Missing body field"),
            (25, "Missing header"),
            (26, "Invalid header value"),
            (27, "Missing query-string parameter"),
            (28, "Invalid query-string parameter value"),
            (40, "Missing credentials"),
            (42, "Expired credentials"),
            (51, "Forbidden requester"),
            (52, "Forbidden user"),
        ] {
            assert_eq!(seed_text(code).0, message, "{code}");
        }
    }
}
