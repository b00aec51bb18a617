//! purge_session: remove an UNAVAILABLE session after its retention, once its grant is released.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JobContext;
use super::JobKind;
use crate::domain::session::{PURGED, Transition};
use crate::domain::{QosStatus, SessionId};
use crate::lifecycle::{self, ScheduledJob};
use crate::store::Write;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeSession {
    pub session_id: SessionId,
    /// How many times this purge found the grant not yet released and waited (a wait is not a
    /// failure: the release job retries on its own; this only spaces out the checks).
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub waited: u32,
}

impl PurgeSession {
    pub fn new(session_id: SessionId) -> Self {
        Self {
            session_id,
            waited: 0,
        }
    }
}

#[async_trait]
impl JobKind for PurgeSession {
    const QUEUE: &'static str = "purge_session";

    fn timer_of(&self) -> Option<SessionId> {
        Some(self.session_id)
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let now = ctx.clock.now();
        let waited = self.waited + 1;
        let wait = ctx.pools.get(Self::QUEUE).retry.delay(waited, &ctx.random);
        lifecycle::change(ctx, self.session_id, move |current, fx| {
            let Some(s) = current.filter(|s| s.status == QosStatus::Unavailable) else {
                return Ok((Write::Nothing, ()));
            };
            // Forgetting the session before its grant is released would lose track of it: look
            // again later (the release of a deleted session also asks for its purge at once).
            if s.needs_release() {
                tracing::debug!(session = %s.id, waited, "purge waits for the grant's release");
                let again = PurgeSession {
                    session_id: s.id,
                    waited,
                };
                fx.schedule(ScheduledJob::new(
                    again,
                    now + chrono::Duration::from_std(wait).unwrap_or_default(),
                ));
                return Ok((Write::Nothing, ()));
            }
            fx.record(
                &s,
                Transition {
                    from: Some(QosStatus::Unavailable),
                    to: PURGED,
                    reason: "RETENTION_ELAPSED",
                },
                now,
            );
            Ok((Write::Delete, ()))
        })
        .await
    }
}
