//! release_grant: give the network grant back. Retried until the network confirms; "released"
//! is recorded only after that confirmation.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JobContext;
use super::JobKind;
use super::PurgeSession;
use crate::domain::{QosStatus, SessionId};
use crate::lifecycle::{self, ScheduledJob};
use crate::network::GrantRef;
use crate::store::Write;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseGrant {
    pub session_id: SessionId,
    /// Unknown when provisioning's outcome was lost; the network is then asked by session.
    pub grant_id: Option<String>,
}

#[async_trait]
impl JobKind for ReleaseGrant {
    const QUEUE: &'static str = "release_grant";

    fn session_of(&self) -> Option<SessionId> {
        Some(self.session_id)
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let current = ctx.store.session(self.session_id).await?;
        // Never take QoS away from a session that still has it. A grant it does not run on (a
        // repeated attempt's, answered after another one's grant made it AVAILABLE) goes back
        // now, alone: no search, which would find the session's own grant too.
        if let Some(s) = current
            .as_ref()
            .filter(|s| s.status != QosStatus::Unavailable)
        {
            let stray = matches!((&self.grant_id, &s.grant_id), (Some(g), Some(own)) if g != own);
            if stray {
                let grant = GrantRef {
                    session: self.session_id,
                    grant_id: self.grant_id.clone(),
                    search: false,
                    device: Some(s.device.clone()),
                };
                ctx.network.release(&grant).await?;
            }
            return Ok(());
        }
        let grant = GrantRef {
            session: self.session_id,
            grant_id: self.grant_id.clone(),
            search: self.grant_id.is_none()
                || current.as_ref().is_none_or(|s| s.stray_grant_possible),
            device: current.map(|s| s.device),
        };
        ctx.network.release(&grant).await?;

        let grant_id = self.grant_id.clone();
        let now = ctx.clock.now();
        lifecycle::change(ctx, self.session_id, move |current, fx| {
            let write = match current {
                Some(mut s)
                    if s.needs_release() && (grant_id.is_none() || s.grant_id == grant_id) =>
                {
                    s.mark_released();
                    // A deleted session is kept only until its grant is given back.
                    if s.deleted {
                        fx.schedule(ScheduledJob::new(PurgeSession::new(s.id), now));
                    }
                    Write::update(s)
                }
                _ => Write::Nothing,
            };
            Ok((write, ()))
        })
        .await
    }
}
