//! The Network port: where QoS is actually granted. A simulated network ships in-process; real
//! adapters implement the same trait.

pub mod metered;
pub mod nef;
pub mod simulated;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Device, Flow, SessionId};

/// What the network needs to prioritise one flow.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    pub session: SessionId,
    pub device: Device,
    pub flow: Flow,
    pub qos_profile: String,
    pub until: DateTime<Utc>,
    /// An earlier attempt may have reached the network (it timed out or the process died):
    /// the network must be asked what it holds before anything is created again.
    pub uncertain: bool,
}

/// A grant the network made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub lease_until: Option<DateTime<Utc>>,
    /// The QoS is in place. False when the network only accepted the request and confirms
    /// the allocation later by an event (some NEFs).
    pub confirmed: bool,
}

/// Which grant to act on. The id may be unknown when a provisioning attempt's outcome was lost
/// (crash or timeout); the network is then asked by session.
#[derive(Debug, Clone)]
pub struct GrantRef {
    pub session: SessionId,
    pub grant_id: Option<String>,
    /// The session's device, when it is still stored (lets a network narrow its searches).
    pub device: Option<Device>,
    /// The network may hold grants for the session besides `grant_id` (an attempt's outcome
    /// was lost): a release must search for them too.
    pub search: bool,
}

/// An error with every cause under it (`error sending request: connection refused`): reqwest's
/// own message leaves the cause out.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Worth trying again later (timeouts, 429/503, connection errors).
    #[error("network unavailable: {0}")]
    Retryable(String),
    /// The network refused for good.
    #[error("network refused: {0}")]
    Refused(String),
    /// The network asked us to come back later (429/503 with `Retry-After`).
    #[error("network busy: {reason} (retry after {retry_after:?})")]
    Busy {
        reason: String,
        retry_after: std::time::Duration,
    },
}

impl NetworkError {
    /// The least delay before the next attempt the network asked for, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[async_trait]
pub trait Network: Send + Sync + 'static {
    /// Idempotent per session: asking again for a session that holds a grant returns it.
    async fn provision(&self, req: &ProvisionRequest) -> Result<Grant, NetworkError>;
    async fn renew(&self, grant: &GrantRef, until: DateTime<Utc>) -> Result<Grant, NetworkError>;
    /// Releasing something the network does not know counts as released.
    async fn release(&self, grant: &GrantRef) -> Result<(), NetworkError>;
    /// Whether the network answers and accepts this server's credentials, asked without
    /// changing anything (`/health/network`, the check at start).
    async fn check(&self) -> Result<(), NetworkError> {
        Ok(())
    }
}
