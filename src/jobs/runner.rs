//! Runs each job kind as an apalis worker over its lane of our own queue (`crate::queue`):
//! - a failed attempt goes back to the queue with the queue's backoff policy, as a settlement
//!   written with the dispatcher's next round;
//! - a worker that stops is restarted by the monitor, under a new name;
//! - a panicking handler is a failed attempt, not a dead worker.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use futures::FutureExt;

use super::{
    ApplyNetworkEvent, Claimed, DeliverNotification, ExpireSession, JobKind, ProvisionSession,
    PurgeSession, ReleaseGrant, RenewGrant,
};
use crate::core::Core;
use crate::metrics::outcome;
use crate::queue::{LaneBackend, Settlement};
use crate::store::from_millis;

/// When giving up itself failed (the database is down), the job is tried again this much later.
const AFTER_FAILED_GIVE_UP: Duration = Duration::from_secs(1);

/// Registers one worker per job kind. `instance` makes worker names unique per process.
pub fn register_all(monitor: Monitor, core: &Arc<Core>, instance: &str) -> Monitor {
    let monitor = register::<ProvisionSession>(monitor, core, instance);
    let monitor = register::<ExpireSession>(monitor, core, instance);
    let monitor = register::<ReleaseGrant>(monitor, core, instance);
    let monitor = register::<RenewGrant>(monitor, core, instance);
    let monitor = register::<PurgeSession>(monitor, core, instance);
    let monitor = register::<DeliverNotification>(monitor, core, instance);
    register::<ApplyNetworkEvent>(monitor, core, instance)
}

fn register<J: JobKind>(monitor: Monitor, core: &Arc<Core>, instance: &str) -> Monitor {
    let core = core.clone();
    let instance = instance.to_owned();
    monitor.register(move |restarts| {
        let concurrency = core.pools.get(J::QUEUE).concurrency;
        WorkerBuilder::new(format!("{}@{instance}#{restarts}", J::QUEUE))
            .backend(LaneBackend::<J>::new(core.queue.clone()))
            .data(core.clone())
            .concurrency(concurrency)
            .build(handle::<J>)
    })
}

/// apalis polls every worker's handlers inside one task; the job itself runs as a task of
/// its own so that jobs spread over every core of the runtime.
async fn handle<J: JobKind>(claimed: Claimed<J>, core: Data<Arc<Core>>) -> Result<(), BoxDynError> {
    let core: Arc<Core> = (*core).clone();
    let task = tokio::spawn(run_claimed(claimed, core));
    // A handler the monitor drops (shutdown timeout) takes its job down with it, as before.
    let _abort = AbortOnDrop(task.abort_handle());
    task.await?;
    Ok(())
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_claimed<J: JobKind>(claimed: Claimed<J>, core: Arc<Core>) {
    let core: &Core = &core;
    let due = from_millis(claimed.due_at_ms);
    // Claims compare due times to the millisecond; this only covers a clock read a moment
    // apart from the dispatcher's.
    core.clock.sleep_until(due).await;
    let lateness = (core.clock.now() - due).num_milliseconds().max(0) as f64 / 1000.0;
    core.metrics
        .job_lateness
        .with_label_values(&[J::QUEUE])
        .observe(lateness);

    let started = Instant::now();
    let result = AssertUnwindSafe(claimed.job.run(core))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(anyhow::anyhow!(
                "handler panicked: {}",
                crate::panics::message(&*panic)
            ))
        });
    core.metrics
        .job_duration
        .with_label_values(&[J::QUEUE])
        .observe(started.elapsed().as_secs_f64());

    let error = match result {
        Ok(()) => {
            core.metrics.job(J::QUEUE, outcome::SUCCEEDED);
            core.queue.settle(Settlement::Done(claimed.id));
            return;
        }
        Err(e) => e,
    };
    core.metrics.job(J::QUEUE, outcome::FAILED);
    let attempt = claimed.attempt + 1;
    let policy = &core.pools.get(J::QUEUE).retry;
    let message = format!("{error:#}");
    let (delay, settled_outcome) = if policy.exhausted(attempt) {
        tracing::warn!(queue = J::QUEUE, attempt, error = %message, "job ran out of attempts");
        match claimed.job.give_up(core, &message).await {
            Ok(()) => {
                core.metrics.job(J::QUEUE, outcome::DEAD);
                core.queue.settle(Settlement::Done(claimed.id));
                return;
            }
            Err(e) => {
                tracing::error!(queue = J::QUEUE, error = %format!("{e:#}"), "could not give up on a job; trying again");
                (AFTER_FAILED_GIVE_UP, outcome::RETRIED)
            }
        }
    } else {
        // A network that said when to come back is not asked sooner.
        let asked = error
            .downcast_ref::<crate::network::NetworkError>()
            .and_then(crate::network::NetworkError::retry_after);
        let delay = policy
            .delay(attempt, &core.random)
            .max(asked.unwrap_or_default());
        tracing::info!(queue = J::QUEUE, attempt, delay_ms = delay.as_millis() as u64, error = %message, "job failed; retrying");
        (delay, outcome::RETRIED)
    };
    core.metrics.job(J::QUEUE, settled_outcome);
    let due = core.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
    let due = claimed.job.retry_by().map_or(due, |by| due.min(by));
    core.queue.settle(Settlement::Retry {
        id: claimed.id,
        attempt,
        due_at_ms: due.timestamp_millis(),
    });
    core.queue.pushed(J::QUEUE, due.timestamp_millis());
}
