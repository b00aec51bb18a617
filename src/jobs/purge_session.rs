//! purge_session: remove an UNAVAILABLE session after its retention, once its grant is released.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JobContext;
use super::JobKind;
use crate::domain::session::{PURGED, Transition};
use crate::domain::{QosStatus, SessionId};
use crate::lifecycle;
use crate::store::Write;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeSession {
    pub session_id: SessionId,
}

#[async_trait]
impl JobKind for PurgeSession {
    const QUEUE: &'static str = "purge_session";

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let now = ctx.clock.now();
        lifecycle::change(ctx, self.session_id, move |current, fx| {
            let Some(s) = current.filter(|s| s.status == QosStatus::Unavailable) else {
                return Ok((Write::Nothing, ()));
            };
            // Forgetting the session before its grant is released would lose track of it.
            anyhow::ensure!(
                !s.needs_release(),
                "grant of session {} not yet released",
                s.id
            );
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
