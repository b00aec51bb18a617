//! Who is calling: bearer tokens (JWTs) checked against the configured keys, the scopes they
//! grant, the client that owns what they create and, for three-legged tokens, the one device
//! they speak for. The facades turn refusals into their own error formats.

pub mod caller;
pub mod keys;
pub mod mint;
pub mod rate;
pub mod verifier;

pub use caller::{Caller, scopes};
pub use verifier::{Refusal, Verifier};

/// How requests are authenticated.
pub enum Authenticator {
    /// Every request is served as one anonymous client with every scope (`--auth none`).
    Disabled,
    Tokens(Box<Verifier>),
}

impl Authenticator {
    /// The caller behind an `Authorization` header value (or its absence).
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Refusal> {
        match self {
            Self::Disabled => Ok(Caller::anonymous()),
            Self::Tokens(verifier) => {
                let token = bearer_token(authorization.ok_or(Refusal::Missing)?)?;
                verifier.verify(token).await
            }
        }
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 6750 §2.1).
fn bearer_token(header: &[u8]) -> Result<&str, Refusal> {
    let text = std::str::from_utf8(header).map_err(|_| Refusal::Invalid("malformed header"))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or(Refusal::Invalid("not a bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Invalid("not a bearer token"));
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Invalid("malformed token"));
    }
    Ok(token)
}

/// Longest token looked at; real access tokens are far shorter.
const MAX_TOKEN_BYTES: usize = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_tokens_of_sane_length_are_looked_at() {
        assert_eq!(bearer_token(b"Bearer abc").unwrap(), "abc");
        assert_eq!(bearer_token(b"bearer  abc ").unwrap(), "abc");
        assert!(bearer_token(b"Basic abc").is_err());
        assert!(bearer_token(b"Bearer").is_err());
        assert!(bearer_token(b"Bearer ").is_err());
        assert!(bearer_token(&[b'B', 0xff, b' ', b'a']).is_err());
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(bearer_token(long.as_bytes()).is_err());
    }
}
