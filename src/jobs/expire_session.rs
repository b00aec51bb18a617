//! expire_session: end an AVAILABLE session at expiresAt, or a REQUESTED one the network never
//! confirmed within the provisioning timeout. Decided by time, not by revision: an extended
//! session's earlier expiry job finds it not yet due and does nothing.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JobKind;
use crate::core::Core;
use crate::domain::{QosStatus, SessionId, StatusInfo};
use crate::lifecycle::{self, Effects};
use crate::store::sessions;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpireSession {
    pub session_id: SessionId,
}

#[async_trait]
impl JobKind for ExpireSession {
    const QUEUE: &'static str = "expire_session";

    async fn run(&self, core: &Core) -> anyhow::Result<()> {
        let now = core.clock.now();
        let mut tx = core.begin_write().await?;
        let Some(mut s) = sessions::find(&mut tx, self.session_id).await? else {
            return Ok(());
        };
        let provision_deadline =
            s.created_at + chrono::Duration::from_std(core.provision_timeout).unwrap_or_default();
        let info = match s.status {
            QosStatus::Available if s.expires_at.is_some_and(|e| e <= now) => {
                StatusInfo::DurationExpired
            }
            QosStatus::Requested if provision_deadline <= now => StatusInfo::NetworkTerminated,
            _ => return Ok(()),
        };
        let expected = s.revision;
        let mut fx = Effects::default();
        lifecycle::terminate(core, &mut s, info, now, &mut fx);
        sessions::update(&mut tx, &s, expected).await?;
        fx.write(&mut tx).await?;
        tx.commit().await?;
        fx.publish(core);
        Ok(())
    }
}
