//! `x-correlator`: validated against the spec's pattern and echoed on every response.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

pub const HEADER: &str = "x-correlator";

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
    let mut response = next.run(req).await;
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
