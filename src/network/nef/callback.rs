//! The URL each subscription gives the NEF for its notifications: one per session, carrying a
//! per-session secret (an HMAC of the session id under the server's secret key), so that no one
//! who does not hold the URL can post events for a session, and nothing needs storing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::SessionId;

/// Path of the network callbacks, followed by `/{sessionId}/{secret}`.
pub const PATH: &str = "/network/v1/callbacks";

#[derive(Clone)]
pub struct CallbackUrls {
    base: std::sync::Arc<str>,
    key: std::sync::Arc<[u8]>,
}

impl CallbackUrls {
    /// `base` is this server's public URL as the NEF reaches it.
    pub fn new(base: &str, key: Vec<u8>) -> Self {
        Self {
            base: base.trim_end_matches('/').into(),
            key: key.into(),
        }
    }

    pub fn url(&self, session: SessionId) -> String {
        format!("{}{}", self.base, self.path(session))
    }

    /// `url` without the public base: the route on this server's own router.
    pub fn path(&self, session: SessionId) -> String {
        format!("{PATH}/{session}/{}", self.secret(session))
    }

    /// Whether `secret` is the one of `session` (compared in constant time).
    pub fn verify(&self, session: SessionId, secret: &str) -> bool {
        let Some(given) = crate::secrets::decode_hex(secret).filter(|g| g.len() == 16) else {
            return false;
        };
        let mac = self.mac(session);
        mac.verify_truncated_left(&given).is_ok()
    }

    fn mac(&self, session: SessionId) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"qod network callback ");
        mac.update(session.to_string().as_bytes());
        mac
    }

    fn secret(&self, session: SessionId) -> String {
        let tag = self.mac(session).finalize().into_bytes();
        crate::secrets::encode_hex(&tag[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_own_secret_verifies() {
        let urls = CallbackUrls::new("http://127.0.0.1:8080/", vec![9; 32]);
        let (a, b) = (
            SessionId(uuid::Uuid::new_v4()),
            SessionId(uuid::Uuid::new_v4()),
        );
        let url = urls.url(a);
        assert!(url.starts_with("http://127.0.0.1:8080/network/v1/callbacks/"));
        let secret = url.rsplit('/').next().unwrap();
        assert!(urls.verify(a, secret));
        assert!(!urls.verify(b, secret));
        assert!(!urls.verify(a, &secret[..30]));
        assert!(!urls.verify(a, "zz"));
        let other_key = CallbackUrls::new("http://x", vec![8; 32]);
        assert!(!other_key.verify(a, secret));
    }
}
