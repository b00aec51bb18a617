//! provision_session: ask the network for the QoS, then make the session AVAILABLE. The job
//! also keeps the provisioning deadline: past it the session ends NETWORK_TERMINATED, even
//! while the network is still answering (a grant that arrives late is given back).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JobContext;
use super::{ExpireSession, JobKind, ReleaseGrant};
use crate::domain::{GrantState, QosStatus, SessionId, StatusInfo};
use crate::lifecycle::{self, ScheduledJob};
use crate::network::{Grant, NetworkError, ProvisionRequest};
use crate::store::{Write, fence, from_millis};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionSession {
    pub session_id: SessionId,
    /// When the network must have confirmed (ms). Jobs queued before it existed have none;
    /// their sessions are ended by an expire_session job instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
}

#[async_trait]
impl JobKind for ProvisionSession {
    const QUEUE: &'static str = "provision_session";

    fn session_of(&self) -> Option<SessionId> {
        Some(self.session_id)
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let deadline = self.deadline_ms.map(from_millis);
        if deadline.is_some_and(|d| ctx.clock.now() >= d) {
            return self.refused(ctx).await;
        }
        let Some(request) = self.mark_intent(ctx).await? else {
            return Ok(());
        };
        let call = ctx.network.provision(&request);
        let answer = match deadline {
            None => call.await,
            Some(deadline) => {
                tokio::pin!(call);
                tokio::select! {
                    biased;
                    answer = &mut call => answer,
                    () = ctx.clock.sleep_until(deadline) => {
                        tracing::info!(session = %self.session_id, "the network did not confirm in time");
                        self.refused(ctx).await?;
                        // Still take the answer: a grant made late is released by `granted`.
                        call.await
                    }
                }
            }
        };
        match answer {
            Ok(grant) => match self.granted(ctx, grant.clone(), &request).await {
                Err(e) if fence::Fenced::caused(&e) => {
                    // Another node took the job over while the network answered; the grant this
                    // claim obtained exists all the same, and nobody else knows of it. `granted`
                    // decides over the session as it is now (it keeps the grant if the session
                    // runs on it, gives it back otherwise), so it is safe whoever holds the job.
                    tracing::warn!(session = %self.session_id, "job lost to another node while the network answered; recording its grant anyway");
                    fence::unfenced(self.granted(ctx, grant, &request)).await
                }
                other => other,
            },
            Err(NetworkError::Refused(reason)) => {
                tracing::info!(session = %self.session_id, %reason, "network refused the session");
                self.refused(ctx).await
            }
            Err(e) => Err(e.into()),
        }
    }

    fn retry_by(&self) -> Option<DateTime<Utc>> {
        self.deadline_ms.map(from_millis)
    }

    async fn give_up(&self, ctx: &JobContext, last_error: &str) -> anyhow::Result<()> {
        tracing::warn!(session = %self.session_id, last_error, "provisioning gave up");
        self.refused(ctx).await
    }
}

impl ProvisionSession {
    /// Commits "provisioning" before calling the network, so a crash mid-call leaves a trace
    /// that the release path follows. Returns None when there is nothing to provision.
    async fn mark_intent(&self, ctx: &JobContext) -> anyhow::Result<Option<ProvisionRequest>> {
        let session = lifecycle::change(ctx, self.session_id, move |current, _| {
            let Some(mut s) = current.filter(|s| s.status == QosStatus::Requested && !s.deleted)
            else {
                return Ok((Write::Nothing, None));
            };
            let uncertain = s.grant_state != GrantState::None;
            let write = match (uncertain, s.stray_grant_possible) {
                (false, _) => {
                    s.mark_provisioning();
                    Write::update(s.clone())
                }
                // This attempt may create a second grant beside a lost one.
                (true, false) => {
                    s.note_repeated_attempt();
                    Write::update(s.clone())
                }
                (true, true) => Write::Nothing,
            };
            Ok((write, Some((s, uncertain))))
        })
        .await?;
        Ok(session.map(|(s, uncertain)| ProvisionRequest {
            uncertain,
            session: s.id,
            until: grant_ask(s.duration_secs, ctx.timings.grant_lifetime, ctx.clock.now()),
            device: s.device,
            flow: s.flow,
            qos_profile: s.qos_profile,
        }))
    }

    async fn granted(
        &self,
        ctx: &JobContext,
        grant: Grant,
        asked: &ProvisionRequest,
    ) -> anyhow::Result<()> {
        let now = ctx.clock.now();
        let id = self.session_id;
        let lifetime = ctx.timings.grant_lifetime;
        let provision_timeout =
            chrono::Duration::from_std(ctx.timings.provision_timeout).unwrap_or_default();
        // A grant for all that was asked covers the session if the whole session was asked for
        // (its end is counted from now, a moment after the request); a shorter one is renewed.
        let asked_until = asked.until;
        let cut_short = grant.lease_until.filter(|l| *l < asked_until);
        lifecycle::change(ctx, id, move |current, fx| {
            let write = match current {
                Some(mut s) if s.status == QosStatus::Requested && !s.deleted => {
                    if grant.confirmed {
                        grant_session(&mut s, grant.id, cut_short, asked_until, lifetime, now, fx);
                    } else {
                        // Accepted only: the allocation event makes it AVAILABLE; an expiry
                        // job at the provisioning deadline ends it (and releases the grant)
                        // if that never comes.
                        s.accept_grant(grant.id, cut_short);
                        fx.schedule(ScheduledJob::new(
                            ExpireSession { session_id: id },
                            s.created_at + provision_timeout,
                        ));
                    }
                    Write::update(s)
                }
                // The network's own confirmation (an early callback) already made it AVAILABLE
                // with this very grant.
                Some(s) if s.grant_id.as_deref() == Some(grant.id.as_str()) && !s.deleted => {
                    Write::Nothing
                }
                other => {
                    fx.schedule(ScheduledJob::new(
                        ReleaseGrant {
                            session_id: id,
                            grant_id: Some(grant.id.clone()),
                        },
                        now,
                    ));
                    // An AVAILABLE session keeps the grant it runs on; the stray one is swept
                    // when the session ends.
                    match other.filter(|s| s.status != QosStatus::Available) {
                        Some(mut s) => {
                            s.give_back_grant(grant.id);
                            Write::update(s)
                        }
                        None => Write::Nothing,
                    }
                }
            };
            Ok((write, ()))
        })
        .await
    }

    async fn refused(&self, ctx: &JobContext) -> anyhow::Result<()> {
        lifecycle::end_session_if(
            ctx,
            ctx.timings.retention,
            self.session_id,
            ctx.clock.now(),
            |s| (s.status == QosStatus::Requested).then_some(StatusInfo::NetworkTerminated),
        )
        .await
    }
}

/// Until when the network is asked to grant: the whole session, or one grant lifetime if
/// shorter.
pub(crate) fn grant_ask(
    duration_secs: i64,
    lifetime: std::time::Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    now + chrono::Duration::seconds(duration_secs)
        .min(chrono::Duration::from_std(lifetime).unwrap_or_default())
}

/// REQUESTED -> AVAILABLE with `grant_id`: records it, sets the grant's lease (the network's
/// shorter one, or the whole session when it fits one grant lifetime, or what was asked) and
/// schedules the expiry and the grant's renewal.
pub(crate) fn grant_session(
    s: &mut crate::domain::Session,
    grant_id: String,
    cut_short: Option<DateTime<Utc>>,
    asked_until: DateTime<Utc>,
    lifetime: std::time::Duration,
    now: DateTime<Utc>,
    fx: &mut lifecycle::Effects,
) {
    let t = s.make_available(now, grant_id);
    fx.record(s, t, now);
    let expires = s.expires_at.unwrap_or(now);
    let whole = chrono::Duration::seconds(s.duration_secs)
        <= chrono::Duration::from_std(lifetime).unwrap_or_default();
    s.lease_until = Some(match cut_short {
        Some(lease) => lease,
        None if whole => expires,
        None => asked_until,
    });
    lifecycle::schedule_renewal(s, lifetime, fx);
    fx.schedule(ScheduledJob::new(
        ExpireSession { session_id: s.id },
        expires,
    ));
}
