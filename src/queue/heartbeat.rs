//! Keeping this node's claims alive on a shared store, and hearing of other nodes' jobs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::JobQueue;
use crate::store::{JobWake, SharedStore};

/// Renews the leases of the jobs this node holds every third of `lease` of wall-clock time,
/// until `stop`. A renewal that fails is tried again at the next beat; a lease that lapses
/// meanwhile passes the job to another node, whose epoch then fences this node's writes.
pub async fn run_heartbeat(
    queue: Arc<JobQueue>,
    store: SharedStore,
    lease: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let beat = lease / 3;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(beat) => {}
        }
        let wall_ms = chrono::Utc::now().timestamp_millis();
        if let Err(e) = store.renew_leases(&queue.owner, wall_ms).await {
            tracing::warn!(error = %format!("{e:#}"), "renewing this node's job leases failed");
        }
    }
}

/// Passes other nodes' announcements of new jobs to the lanes, until the store closes.
pub async fn listen(queue: Arc<JobQueue>, store: SharedStore) {
    let wake = |w: JobWake| match w {
        JobWake::Pushed {
            queue: name,
            due_at_ms,
        } => queue.pushed(name, due_at_ms),
        JobWake::Missed => queue.rescan(),
    };
    if let Err(e) = store.listen_for_jobs(&wake).await {
        tracing::warn!(error = %format!("{e:#}"), "no longer listening for other nodes' jobs");
    }
}

impl JobQueue {
    /// Announcements may have been missed: every lane looks at the table at its next round.
    pub fn rescan(&self) {
        for lane in self.lanes.values() {
            lane.next_due_ms.store(i64::MIN, Ordering::Release);
        }
        self.wake.notify_one();
    }
}
