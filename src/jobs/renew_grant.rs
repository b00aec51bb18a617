//! renew_grant: extend the network's grant of an AVAILABLE session before its lease ends, as far
//! as the session's end or the configured grant lifetime allows. A lease that lapses, or a
//! renewal the network refuses, ends the session UNAVAILABLE / NETWORK_TERMINATED.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JobContext;
use super::JobKind;
use crate::domain::{QosStatus, SessionId, StatusInfo};
use crate::lifecycle;
use crate::network::{GrantRef, NetworkError};
use crate::store::{Write, from_millis};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewGrant {
    pub session_id: SessionId,
    /// The lease this job was scheduled to renew: retries never go past it.
    pub lease_until_ms: i64,
}

#[async_trait]
impl JobKind for RenewGrant {
    const QUEUE: &'static str = "renew_grant";

    fn timer_of(&self) -> Option<SessionId> {
        Some(self.session_id)
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let now = ctx.clock.now();
        let Some(s) = ctx.store.session(self.session_id).await? else {
            return Ok(());
        };
        let (Some(lease), Some(expires)) = (s.lease_until, s.expires_at) else {
            return Ok(());
        };
        if s.status != QosStatus::Available || s.deleted || lease >= expires {
            return Ok(());
        }
        if now >= lease {
            tracing::warn!(session = %s.id, "grant lease lapsed before it was renewed");
            return self.end(ctx, lease).await;
        }
        let until = expires
            .min(now + chrono::Duration::from_std(ctx.timings.grant_lifetime).unwrap_or_default());
        let grant = GrantRef {
            session: s.id,
            grant_id: s.grant_id.clone(),
            device: Some(s.device.clone()),
            search: false,
        };
        let renewed = match ctx.network.renew(&grant, until).await {
            Ok(g) => g.lease_until.unwrap_or(until).min(until),
            Err(NetworkError::Refused(reason)) => {
                tracing::info!(session = %s.id, %reason, "network refused to renew the grant");
                return self.end(ctx, lease).await;
            }
            Err(e) => return Err(e.into()),
        };
        let (id, grant_id, lifetime) = (s.id, s.grant_id, ctx.timings.grant_lifetime);
        lifecycle::change(ctx, id, move |current, fx| {
            let Some(mut s) =
                current.filter(|s| s.status == QosStatus::Available && s.grant_id == grant_id)
            else {
                return Ok((Write::Nothing, ()));
            };
            let t = s.renewed(renewed);
            fx.record(&s, t, now);
            lifecycle::schedule_renewal(&s, lifetime, fx);
            Ok((Write::update(s), ()))
        })
        .await
    }

    fn retry_by(&self) -> Option<DateTime<Utc>> {
        Some(from_millis(self.lease_until_ms))
    }

    async fn give_up(&self, ctx: &JobContext, _last_error: &str) -> anyhow::Result<()> {
        self.end(ctx, from_millis(self.lease_until_ms)).await
    }
}

impl RenewGrant {
    /// Ends the session if it still lives on the lease this job was about.
    async fn end(&self, ctx: &JobContext, lease: DateTime<Utc>) -> anyhow::Result<()> {
        lifecycle::end_session_if(
            ctx,
            ctx.timings.retention,
            self.session_id,
            ctx.clock.now(),
            move |s| {
                (s.status == QosStatus::Available && s.lease_until.is_some_and(|l| l <= lease))
                    .then_some(StatusInfo::NetworkTerminated)
            },
        )
        .await
    }
}
