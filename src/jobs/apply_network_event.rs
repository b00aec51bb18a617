//! apply_network_event: what the network told us about a session (its AsSessionWithQoS
//! notifications), applied after the callback has answered. Allocation confirms REQUESTED ->
//! AVAILABLE (also when it arrives before the POST's answer); a failed allocation, a
//! termination or a released bearer end the session as NETWORK_TERMINATED at once; QoS
//! (not) guaranteed is recorded in the session's events. Repeated events change nothing twice.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JobContext;
use super::JobKind;
use super::provision_session::{grant_ask, grant_session};
use crate::domain::{QosStatus, SessionId, StatusInfo};
use crate::lifecycle;
use crate::store::Write;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyNetworkEvent {
    pub session_id: SessionId,
    pub events: Vec<String>,
    /// The subscription the events are about (its id), when the notification said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

/// The events this server acts on or records; the name doubles as a bounded metric label.
/// The events of TS 29.122's `QosMonitoringReport`/`UserPlaneEvent` this server knows.
pub const KNOWN_EVENTS: &[&str] = &[
    "SUCCESSFUL_RESOURCES_ALLOCATION",
    "FAILED_RESOURCES_ALLOCATION",
    "SESSION_TERMINATION",
    "RELEASE_OF_BEARER",
    "LOSS_OF_BEARER",
    "RECOVERY_OF_BEARER",
    "QOS_GUARANTEED",
    "QOS_NOT_GUARANTEED",
    "USAGE_REPORT",
];

pub fn known_event(event: &str) -> Option<&'static str> {
    KNOWN_EVENTS.iter().copied().find(|known| *known == event)
}

#[async_trait]
impl JobKind for ApplyNetworkEvent {
    const QUEUE: &'static str = "apply_network_event";

    fn session_of(&self) -> Option<SessionId> {
        Some(self.session_id)
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let (id, events, subscription) = (
            self.session_id,
            self.events.clone(),
            self.subscription.clone(),
        );
        let (now, retention, lifetime) = (
            ctx.clock.now(),
            ctx.timings.retention,
            ctx.timings.grant_lifetime,
        );
        lifecycle::change(ctx, id, move |current, fx| {
            let Some(mut s) = current else {
                return Ok((Write::Nothing, ()));
            };
            let read = s.revision;
            for event in events.iter().filter_map(|e| known_event(e)) {
                match event {
                    "SUCCESSFUL_RESOURCES_ALLOCATION" => {
                        if s.status == QosStatus::Requested
                            && !s.deleted
                            && let Some(grant) = subscription.clone().or(s.grant_id.clone())
                        {
                            // A lease the NEF's 201 cut short was kept on the session.
                            let asked = grant_ask(s.duration_secs, lifetime, now);
                            let cut_short = s.lease_until;
                            grant_session(&mut s, grant, cut_short, asked, lifetime, now, fx);
                        }
                    }
                    "FAILED_RESOURCES_ALLOCATION" | "SESSION_TERMINATION" | "RELEASE_OF_BEARER"
                        if s.status != QosStatus::Unavailable =>
                    {
                        lifecycle::terminate(
                            retention,
                            &mut s,
                            StatusInfo::NetworkTerminated,
                            now,
                            fx,
                        );
                    }
                    "QOS_GUARANTEED" | "QOS_NOT_GUARANTEED" if s.status == QosStatus::Available => {
                        let t = s.note_available(event);
                        fx.record(&s, t, now);
                    }
                    _ => {}
                }
            }
            let write = if s.revision == read {
                Write::Nothing
            } else {
                Write::update(s)
            };
            Ok((write, ()))
        })
        .await
    }
}
