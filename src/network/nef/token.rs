//! OAuth2 client-credentials access token for the NEF, fetched once and reused until shortly
//! before it expires (never one per call).

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::clock::SharedClock;

use chrono::{DateTime, Utc};

use crate::config::Redacted;
use crate::network::NetworkError;

/// Renew this long before the token's announced expiry.
const MARGIN: Duration = Duration::from_secs(60);

pub struct TokenSource {
    http: reqwest::Client,
    url: String,
    client_id: String,
    secret: Redacted,
    scope: Option<String>,
    cached: Mutex<Option<(String, DateTime<Utc>)>>,
    clock: SharedClock,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    pub fn new(
        http: reqwest::Client,
        url: String,
        client_id: String,
        secret: Redacted,
        scope: Option<String>,
        clock: SharedClock,
    ) -> Self {
        Self {
            http,
            url,
            client_id,
            secret,
            scope,
            cached: Mutex::new(None),
            clock,
        }
    }

    /// The current token, fetched when there is none or it is about to expire.
    pub async fn bearer(&self) -> Result<String, NetworkError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, good_until)) = cached.as_ref()
            && self.clock.now() < *good_until
        {
            return Ok(token.clone());
        }
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let response = self
            .http
            .post(&self.url)
            .basic_auth(&self.client_id, Some(&self.secret.0))
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                NetworkError::Retryable(format!(
                    "token endpoint: {}",
                    crate::network::with_causes(&e)
                ))
            })?;
        if !response.status().is_success() {
            return Err(NetworkError::Retryable(format!(
                "token endpoint answered {}",
                response.status()
            )));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| NetworkError::Retryable(format!("token endpoint answer: {e}")))?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(300));
        let good_until = self.clock.now()
            + crate::clock::to_chrono(lifetime.saturating_sub(MARGIN).max(lifetime / 2));
        *cached = Some((answer.access_token.clone(), good_until));
        Ok(answer.access_token)
    }

    /// Forgets the token (the NEF said 401: it was revoked or the NEF restarted).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}
