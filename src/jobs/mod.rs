//! Durable jobs: one small module per kind, one queue per kind. Every handler re-reads the
//! session and does nothing if the world moved on, so running a job twice is harmless (a job
//! whose acknowledgement was lost in a crash runs again).

pub mod apply_network_event;
mod context;
mod deliver_notification;
mod expire_session;
mod provision_session;
mod purge_session;
mod release_grant;
mod renew_grant;
pub mod runner;

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};

pub use apply_network_event::ApplyNetworkEvent;
pub use context::{Delivery, JobContext, TimerFirings};
pub use deliver_notification::DeliverNotification;
pub use expire_session::ExpireSession;
pub use provision_session::ProvisionSession;
pub use purge_session::PurgeSession;
pub use release_grant::ReleaseGrant;
pub use renew_grant::RenewGrant;

/// Every job kind, one line each: its queue joins `QUEUES` and its worker is registered.
macro_rules! job_kinds {
    ($($kind:ty),+ $(,)?) => {
        /// Queue names are stable data: renaming a Rust type must never orphan a queue.
        pub const QUEUES: &[&str] = &[$(<$kind as JobKind>::QUEUE),+];

        /// Registers one worker per job kind. `instance` makes worker names unique per process.
        pub fn register_all(
            monitor: apalis::prelude::Monitor,
            ctx: &std::sync::Arc<JobContext>,
            instance: &str,
        ) -> apalis::prelude::Monitor {
            $(let monitor = runner::register::<$kind>(monitor, ctx, instance);)+
            monitor
        }
    };
}

job_kinds!(
    ProvisionSession,
    ExpireSession,
    ReleaseGrant,
    RenewGrant,
    PurgeSession,
    DeliverNotification,
    ApplyNetworkEvent,
);

#[async_trait]
pub trait JobKind: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    const QUEUE: &'static str;

    /// Does the work. An error is retried with the queue's backoff policy.
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()>;

    /// No retry is scheduled later than this (a deadline the job keeps).
    fn retry_by(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }

    /// The session of a job that is a timer (an expiry, a renewal, a purge): its firing is a
    /// recorded input.
    fn timer_of(&self) -> Option<crate::domain::SessionId> {
        None
    }

    /// The session the job works on, for its span (a delivery finds its session when it runs).
    fn session_of(&self) -> Option<crate::domain::SessionId> {
        self.timer_of()
    }

    /// Called once the retry policy is exhausted.
    async fn give_up(&self, _ctx: &JobContext, _last_error: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A job as its worker receives it: the queue row, the job, which attempt this is and when it
/// was due.
#[derive(Debug, Clone)]
pub struct Claimed<J> {
    /// The row and the claim's epoch: every write of the job carries it.
    pub fence: crate::store::fence::Fence,
    pub job: J,
    /// The job as stored (what its draws are keyed by).
    pub payload: String,
    pub attempt: u32,
    pub due_at_ms: i64,
    /// The trace context of the work that enqueued it.
    pub trace: crate::trace::Carried,
}

/// For counters in job payloads that are left out while zero (payloads written before the
/// counter existed read back as zero).
fn is_zero(n: &u32) -> bool {
    *n == 0
}
