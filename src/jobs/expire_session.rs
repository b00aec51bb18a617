//! expire_session: end an AVAILABLE session at expiresAt, or a REQUESTED one the network never
//! confirmed within the provisioning timeout. Decided by time, not by revision: an extended
//! session's earlier expiry job finds it not yet due and does nothing.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JobContext;
use super::JobKind;
use crate::domain::{QosStatus, Session, SessionId, StatusInfo};
use crate::lifecycle;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpireSession {
    pub session_id: SessionId,
}

#[async_trait]
impl JobKind for ExpireSession {
    const QUEUE: &'static str = "expire_session";

    fn timer_of(&self) -> Option<SessionId> {
        Some(self.session_id)
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let now = ctx.clock.now();
        let deadline =
            chrono::Duration::from_std(ctx.timings.provision_timeout).unwrap_or_default();
        // Most expiry jobs end their session: decided where it is read for writing, with no
        // read before it.
        let expired_at = Arc::new(OnceLock::new());
        let noted = expired_at.clone();
        lifecycle::end_session_if(ctx, ctx.timings.retention, self.session_id, now, move |s| {
            let why = ending(s, now, deadline);
            if let (Some(StatusInfo::DurationExpired), Some(at)) = (why, s.expires_at) {
                let _ = noted.set(at);
            }
            why
        })
        .await?;
        // How late the session ended, once that is committed (the SLO's measure).
        if let Some(at) = expired_at.get() {
            let late = (ctx.clock.now() - *at).num_milliseconds().max(0) as f64 / 1000.0;
            ctx.metrics.expiry_lateness.observe(late);
        }
        Ok(())
    }
}

/// Why the session ends now, if it does: its time is up, or the network never confirmed it.
fn ending(
    s: &Session,
    now: DateTime<Utc>,
    provision_timeout: chrono::Duration,
) -> Option<StatusInfo> {
    match s.status {
        QosStatus::Available if s.expires_at.is_some_and(|e| e <= now) => {
            Some(StatusInfo::DurationExpired)
        }
        QosStatus::Requested if s.created_at + provision_timeout <= now => {
            Some(StatusInfo::NetworkTerminated)
        }
        _ => None,
    }
}
