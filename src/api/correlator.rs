//! `x-correlator`: validated against the spec's pattern and echoed on every response; with
//! the W3C `traceparent`, the request's trace context and span (`crate::trace`).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::ApiError;
use crate::trace::{self, TraceParent};

pub const HEADER: &str = "x-correlator";
pub const TRACEPARENT: &str = "traceparent";

/// `^[a-zA-Z0-9-_:;.\/<>{}]{0,256}$`
pub fn is_valid(value: &str) -> bool {
    value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:;./<>{}".contains(&b))
}

pub async fn layer(req: Request, next: Next) -> Response {
    let correlator = match req.headers().get(HEADER) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) if is_valid(s) => Some(v.clone()),
            _ => {
                let message =
                    "Header x-correlator does not match ^[a-zA-Z0-9-_:;.\\/<>{}]{0,256}$.";
                return if super::is_v0(req.uri().path()) {
                    super::v0::error::V0Error::bad_request(
                        super::v0::error::bad::INVALID_HEADER,
                        message,
                    )
                    .into_response()
                } else {
                    ApiError::invalid_argument(message).into_response()
                };
            }
        },
    };
    // An invalid traceparent is ignored, as W3C Trace Context says: the request starts a trace.
    let parent = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let own = parent.map_or_else(TraceParent::root, |p| p.child());
    let current = trace::Current {
        span: Some(own),
        correlator: correlator
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        route = tracing::field::Empty,
        trace_id = %own.trace_hex(),
        span_id = %own.span_hex(),
        parent_span_id = tracing::field::Empty,
        x_correlator = tracing::field::Empty,
        session_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        span.record("parent_span_id", parent.span_hex());
    }
    if let Some(c) = &current.correlator {
        span.record("x_correlator", c.as_str());
    }
    let mut response = trace::scope(current, next.run(req))
        .instrument(span.clone())
        .await;
    span.record("status", response.status().as_u16());
    if let Some(value) = correlator {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn correlator_pattern_matches_the_spec() {
        assert!(is_valid("b4333c46-49c0-4f62-80d7-f0ef930f1c46"));
        assert!(is_valid(""));
        assert!(is_valid("a:b;c.d/e<f>{g}_h"));
        assert!(!is_valid("has space"));
        assert!(!is_valid("quote\""));
        assert!(!is_valid(&"a".repeat(257)));
    }
}
