//! Authentication and rate limiting in front of the API facades: a middleware per facade that
//! verifies the bearer token, admits the request through the client's rate limit and hands the
//! handlers a `Caller`; refusals are answered in the facade's error format. Handlers check the
//! scope their operation needs.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use anyhow::Context;

use super::AppState;
use super::error::ApiError;
use super::v0::error::V0Error;
use crate::auth::keys::KeySet;
use crate::auth::mint::{TokenRequest, mint_hs256};
use crate::auth::rate::RequestLimiter;
use crate::auth::{Authenticator, Caller, Refusal, Verifier, scopes};
use crate::clock::SharedClock;
use crate::config::{AuthKeys, Settings};
use crate::store;

/// What stands in front of the facades.
pub struct Guard {
    pub authenticator: Authenticator,
    pub limiter: Option<RequestLimiter>,
    /// Bearer token `/metrics` requires, if any.
    pub metrics_token: Option<String>,
}

/// The development token printed at start: one client with every scope, valid a day.
pub const DEV_CLIENT: &str = "dev-client";
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Guard {
    /// Builds the guard the settings describe; in development mode also mints a token to print.
    pub async fn from_settings(
        settings: &Settings,
        clock: SharedClock,
    ) -> anyhow::Result<(Self, Option<String>)> {
        let auth = &settings.auth;
        let mut dev_token = None;
        let authenticator = match &auth.keys {
            AuthKeys::Disabled => {
                tracing::warn!(
                    "AUTHENTICATION IS OFF (--auth none): anyone who reaches this port can read, \
                     create and delete every session"
                );
                Authenticator::Disabled
            }
            AuthKeys::Development => {
                let file = store::dev_signing_key_path(settings)?;
                let secret = file.load("the development token-signing key")?;
                tracing::warn!(
                    key = %file.path().display(),
                    "DEVELOPMENT AUTHENTICATION: tokens are HS256-signed with a key in the data \
                     folder; configure --auth-jwks-url (or --auth-jwks-file) before exposing \
                     this server"
                );
                let request = TokenRequest {
                    client: DEV_CLIENT.to_owned(),
                    scopes: scopes::ALL.iter().map(|s| (*s).to_owned()).collect(),
                    device_phone: None,
                    ttl: DEV_TOKEN_TTL,
                };
                dev_token = Some(mint_hs256(&secret, &auth.rules, &request, clock.now())?);
                Authenticator::Tokens(Box::new(Verifier::new(
                    KeySet::shared_secret(&secret),
                    auth.rules.clone(),
                    clock,
                )))
            }
            AuthKeys::SharedSecretFile(path) => Authenticator::Tokens(Box::new(Verifier::new(
                KeySet::shared_secret(&read_shared_secret(path)?),
                auth.rules.clone(),
                clock,
            ))),
            AuthKeys::Jwks { file, url } => {
                let document = file
                    .as_ref()
                    .map(|p| {
                        std::fs::read_to_string(p)
                            .with_context(|| format!("reading {}", p.display()))
                    })
                    .transpose()?;
                Authenticator::Tokens(Box::new(Verifier::new(
                    KeySet::jwks(document.as_deref(), url.clone(), clock.clone()).await?,
                    auth.rules.clone(),
                    clock,
                )))
            }
        };
        Ok((
            Self {
                authenticator,
                limiter: RequestLimiter::new(auth.rate_per_second, auth.burst),
                metrics_token: auth.metrics_token.as_ref().map(|t| t.0.clone()),
            },
            dev_token,
        ))
    }
}

/// An HS256 secret file's bytes (surrounding whitespace ignored); short secrets are refused.
pub fn read_shared_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let secret = text.trim_ascii().to_vec();
    anyhow::ensure!(
        secret.len() >= 32,
        "the HS256 secret in {} must be at least 32 bytes",
        path.display()
    );
    Ok(secret)
}

#[derive(Clone, Copy)]
enum Denial {
    Unauthenticated(Refusal),
    TooManyRequests(Duration),
}

async fn admit(state: &AppState, req: &mut Request) -> Result<(), Denial> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let metrics = &state.service.core().metrics;
    let caller = match state.guard.authenticator.authenticate(header).await {
        Ok(caller) => caller,
        Err(refusal) => {
            if let Refusal::Invalid(reason) = refusal {
                tracing::debug!(reason, "token refused");
            }
            metrics
                .auth_refusals
                .with_label_values(&[refusal.label()])
                .inc();
            return Err(Denial::Unauthenticated(refusal));
        }
    };
    if let Some(limiter) = &state.guard.limiter {
        let now_ms = state.service.core().clock.now().timestamp_millis();
        if let Err(wait) = limiter.admit(&caller.client, now_ms) {
            metrics.client_limited.with_label_values(&["rate"]).inc();
            return Err(Denial::TooManyRequests(wait));
        }
    }
    req.extensions_mut().insert(caller);
    Ok(())
}

/// `WWW-Authenticate` per RFC 6750 §3: no error code when no token was sent.
fn challenge(refusal: Refusal) -> HeaderValue {
    HeaderValue::from_static(match refusal {
        Refusal::Missing => "Bearer realm=\"qod\"",
        Refusal::Invalid(_) => "Bearer realm=\"qod\", error=\"invalid_token\"",
        Refusal::Expired => {
            "Bearer realm=\"qod\", error=\"invalid_token\", error_description=\"The access token expired\""
        }
    })
}

/// Whole seconds to wait, at least one (`Retry-After` has no fractions).
fn retry_after(wait: Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(wait.as_millis().div_ceil(1000).max(1)).unwrap_or(u64::MAX))
}

impl Denial {
    /// The header that tells the client what to do: the challenge, or how long to wait.
    fn header(self) -> (header::HeaderName, HeaderValue) {
        match self {
            Self::Unauthenticated(refusal) => (header::WWW_AUTHENTICATE, challenge(refusal)),
            Self::TooManyRequests(wait) => (header::RETRY_AFTER, retry_after(wait)),
        }
    }

    /// `body` (the facade's error) with the denial's header.
    fn answer(self, mut body: Response) -> Response {
        let (name, value) = self.header();
        body.headers_mut().insert(name, value);
        body
    }
}

pub async fn v1(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let denial = match admit(&state, &mut req).await {
        Ok(()) => return next.run(req).await,
        Err(denial) => denial,
    };
    let body = match denial {
        Denial::Unauthenticated(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request not authenticated due to missing, invalid, or expired credentials.",
        ),
        Denial::TooManyRequests(_) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "Rate limit reached.",
        ),
    };
    denial.answer(body.into_response())
}

pub async fn v0(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let denial = match admit(&state, &mut req).await {
        Ok(()) => return next.run(req).await,
        Err(denial) => denial,
    };
    let body = match denial {
        Denial::Unauthenticated(refusal) => V0Error::standard(
            StatusCode::UNAUTHORIZED,
            match refusal {
                Refusal::Missing => 40,
                Refusal::Invalid(_) => 41,
                Refusal::Expired => 42,
            },
        ),
        Denial::TooManyRequests(_) => V0Error::standard(StatusCode::TOO_MANY_REQUESTS, 53),
    };
    denial.answer(body.into_response())
}

/// The v1 answer when the token lacks the operation's scope.
pub fn require_v1(caller: &Caller, scope: &str) -> Result<(), ApiError> {
    if caller.has_scope(scope) {
        Ok(())
    } else {
        Err(ApiError::permission_denied())
    }
}

/// The v0 answer when the token lacks the operation's scope.
pub fn require_v0(caller: &Caller, scope: &str) -> Result<(), V0Error> {
    if caller.has_scope(scope) {
        Ok(())
    } else {
        Err(V0Error::standard(StatusCode::FORBIDDEN, 50))
    }
}

/// Whether a `/metrics` request carries the configured token (compared in constant time).
pub fn metrics_allowed(guard: &Guard, authorization: Option<&HeaderValue>) -> bool {
    let Some(expected) = &guard.metrics_token else {
        return true;
    };
    let given = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().as_bytes())
        .unwrap_or_default();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(Duration::from_millis(100)), "1");
        assert_eq!(retry_after(Duration::from_millis(1000)), "1");
        assert_eq!(retry_after(Duration::from_millis(1001)), "2");
        assert_eq!(retry_after(Duration::ZERO), "1");
    }
}
