//! Reading JSON request bodies: one reader, whose failures (wrong media type, too large, empty,
//! malformed) each facade answers in its own error format.

use axum::body::to_bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest accepted request body; QoD bodies are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct ApiJson<T>(pub T);

/// Deepest nesting of arrays and objects accepted, anywhere in the body: serde skips unknown
/// fields without its own recursion limit, so the bound is checked here for the whole text.
pub const MAX_DEPTH: usize = 128;

/// How deep arrays and objects nest in `json` (strings are skipped, escapes included).
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Why a request body could not be read; each facade answers in its own error format.
#[derive(Debug)]
pub enum BodyError {
    UnsupportedMediaType,
    TooLarge,
    Empty,
    /// Not JSON at all.
    Malformed(String),
    /// JSON, but a field has the wrong type or shape.
    InvalidField(String),
    /// The body did not arrive whole before the request's deadline.
    TimedOut,
}

/// When a request's body must have arrived: set per request by the router from
/// `--http-body-timeout-secs`, so that a client announcing a body and trickling it cannot
/// hold a connection and a task.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub tokio::time::Instant);

/// The request's body, at most `limit` bytes, by the request's `BodyDeadline` when it has one.
pub async fn read_body(req: Request, limit: usize) -> Result<axum::body::Bytes, BodyError> {
    let deadline = req.extensions().get::<BodyDeadline>().copied();
    let read = to_bytes(req.into_body(), limit);
    match deadline {
        Some(BodyDeadline(at)) => tokio::time::timeout_at(at, read)
            .await
            .map_err(|_| BodyError::TimedOut)?,
        None => read.await,
    }
    .map_err(|_| BodyError::TooLarge)
}

/// Reads a JSON body of at most `MAX_BODY_BYTES`.
pub async fn read_json<T: DeserializeOwned>(req: Request) -> Result<T, BodyError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json(content_type) {
        return Err(BodyError::UnsupportedMediaType);
    }
    let bytes = read_body(req, MAX_BODY_BYTES).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    if nesting_depth(&bytes) > MAX_DEPTH {
        return Err(BodyError::Malformed(format!(
            "JSON nested deeper than {MAX_DEPTH} levels"
        )));
    }
    crate::recording::note_body(&bytes);
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => BodyError::InvalidField(e.to_string()),
        _ => BodyError::Malformed(e.to_string()),
    })
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::UnsupportedMediaType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Request body must be application/json.",
            ),
            BodyError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("Request body exceeds {MAX_BODY_BYTES} bytes."),
            ),
            BodyError::Empty => ApiError::invalid_argument("Request body is required."),
            BodyError::TimedOut => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "The request body did not arrive in time.",
            ),
            BodyError::Malformed(e) | BodyError::InvalidField(e) => {
                ApiError::invalid_argument(format!("Request body is not valid: {e}"))
            }
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiJson(read_json(req).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::{is_json, nesting_depth};

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert_eq!(nesting_depth(br#"{"a": [1, {"b": 2}]}"#), 3);
        assert_eq!(nesting_depth(br#"{"a": "[[[{{{\"]]]"}"#), 1);
        let deep = format!("{{\"x\": {}{}}}", "[".repeat(30_000), "]".repeat(30_000));
        assert_eq!(nesting_depth(deep.as_bytes()), 30_001);
    }

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
