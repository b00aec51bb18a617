//! purge_session: remove an UNAVAILABLE session after its retention, once its grant is released.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JobKind;
use crate::core::Core;
use crate::domain::session::{PURGED, Transition};
use crate::domain::{QosStatus, SessionId};
use crate::lifecycle;
use crate::store::sessions;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeSession {
    pub session_id: SessionId,
}

#[async_trait]
impl JobKind for PurgeSession {
    const QUEUE: &'static str = "purge_session";

    async fn run(&self, core: &Core) -> anyhow::Result<()> {
        let now = core.clock.now();
        let id = self.session_id;
        lifecycle::commit(core, move |tx, fx| {
            let Some(s) = sessions::find(tx, id)? else {
                return Ok(());
            };
            if s.status != QosStatus::Unavailable {
                return Ok(());
            }
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
            sessions::delete(tx, s.id, s.revision)?;
            Ok(())
        })
        .await
    }
}
