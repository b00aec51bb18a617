//! release_grant: give the network grant back. Retried until the network confirms; "released"
//! is recorded only after that confirmation.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JobKind;
use crate::core::Core;
use crate::domain::{GrantState, QosStatus, SessionId};
use crate::network::GrantRef;
use crate::store::sessions;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseGrant {
    pub session_id: SessionId,
    /// Unknown when provisioning's outcome was lost; the network is then asked by session.
    pub grant_id: Option<String>,
}

#[async_trait]
impl JobKind for ReleaseGrant {
    const QUEUE: &'static str = "release_grant";

    async fn run(&self, core: &Core) -> anyhow::Result<()> {
        {
            let mut conn = core.pool.acquire().await?;
            if let Some(s) = sessions::find(&mut conn, self.session_id).await? {
                // Never take QoS away from a session that still has it.
                if s.status != QosStatus::Unavailable {
                    return Ok(());
                }
            }
        }
        let grant = GrantRef {
            session: self.session_id,
            grant_id: self.grant_id.clone(),
        };
        core.network.release(&grant).await?;

        let mut tx = core.begin_write().await?;
        if let Some(mut s) = sessions::find(&mut tx, self.session_id).await? {
            let same_grant = self.grant_id.is_none() || s.grant_id == self.grant_id;
            if s.needs_release() && same_grant {
                let expected = s.revision;
                s.grant_state = GrantState::Released;
                s.revision += 1;
                sessions::update(&mut tx, &s, expected).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
