//! Runs each job kind as an apalis worker, with the guardrails apalis 1.0 needs:
//! - retries go back through our own re-enqueue with the queue's backoff policy (apalis's
//!   database retries have no delay);
//! - workers are woken in-process and poll at a short interval (an idle apalis worker otherwise
//!   waits for its heartbeat, and scheduled jobs are never announced);
//! - a worker that stops on an error is restarted by the monitor, under a new name (apalis
//!   refuses a name it still remembers);
//! - a job is never started before its due time to the millisecond (apalis keeps seconds);
//! - a panicking handler is a failed attempt, not a dead worker.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_sqlite::{Config, SqliteStorage};
use futures::FutureExt;

use super::{
    DeliverNotification, Envelope, ExpireSession, JobKind, ProvisionSession, PurgeSession,
    ReleaseGrant,
};
use crate::clock;
use crate::core::Core;
use crate::lifecycle::{self, ScheduledJob};
use crate::metrics::outcome;
use crate::store::from_millis;

/// apalis records heartbeats at this interval; two missed beats mark a worker's jobs orphaned.
/// Short because the heartbeat is also what wakes a worker whose poll timer went quiet: under
/// CPU pressure a worker was seen waiting for its heartbeat, with jobs already due.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A job fetched up to this much before its due time waits for it inside the handler.
const MAX_EARLY_WAIT: Duration = Duration::from_secs(2);

/// Registers one worker per job kind. `instance` makes worker names unique per process.
pub fn register_all(monitor: Monitor, core: &Arc<Core>, instance: &str) -> Monitor {
    let monitor = register::<ProvisionSession>(monitor, core, instance);
    let monitor = register::<ExpireSession>(monitor, core, instance);
    let monitor = register::<ReleaseGrant>(monitor, core, instance);
    let monitor = register::<PurgeSession>(monitor, core, instance);
    register::<DeliverNotification>(monitor, core, instance)
}

fn register<J: JobKind>(monitor: Monitor, core: &Arc<Core>, instance: &str) -> Monitor {
    let core = core.clone();
    let instance = instance.to_owned();
    monitor.register(move |restarts| {
        let spec = core.pools.get(J::QUEUE).clone();
        let config = Config::default()
            .queue(J::QUEUE)
            .batch_size(spec.batch_size)
            .heartbeat_interval(HEARTBEAT);
        let strategy = Strategy::new()
            .stream(core.wakers.subscribe(J::QUEUE))
            .interval(spec.poll_interval());
        let backend = SqliteStorage::<Envelope<J>>::new(&core.pool)
            .with_config(config)
            .poll_with_strategy(strategy);
        WorkerBuilder::new(format!("{}@{instance}#{restarts}", J::QUEUE))
            .backend(backend)
            .data(core.clone())
            .concurrency(spec.concurrency)
            .build(handle::<J>)
    })
}

async fn handle<J: JobKind>(
    envelope: Envelope<J>,
    core: Data<Arc<Core>>,
) -> Result<(), BoxDynError> {
    let core: &Core = &core;
    let due = from_millis(envelope.due_at_ms);
    let now = core.clock.now();
    let early = (due - now).to_std().unwrap_or_default();
    if early > MAX_EARLY_WAIT {
        // Far too early to wait here (the queue's seconds cannot explain it): put it back.
        let job = ScheduledJob::retry(envelope.job, envelope.attempt, due);
        return Ok(lifecycle::enqueue(core, job).await?);
    }
    if !early.is_zero() {
        clock::sleep_until(core.clock.as_ref(), due).await;
    }
    let lateness = (core.clock.now() - due).num_milliseconds().max(0) as f64 / 1000.0;
    core.metrics
        .job_lateness
        .with_label_values(&[J::QUEUE])
        .observe(lateness);

    let started = Instant::now();
    let result = AssertUnwindSafe(envelope.job.run(core))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(anyhow::anyhow!(
                "handler panicked: {}",
                panic_message(&panic)
            ))
        });
    core.metrics
        .job_duration
        .with_label_values(&[J::QUEUE])
        .observe(started.elapsed().as_secs_f64());

    let error = match result {
        Ok(()) => {
            core.metrics.job(J::QUEUE, outcome::SUCCEEDED);
            return Ok(());
        }
        Err(e) => e,
    };
    core.metrics.job(J::QUEUE, outcome::FAILED);
    let attempt = envelope.attempt + 1;
    let policy = &core.pools.get(J::QUEUE).retry;
    let message = format!("{error:#}");
    let settled = if policy.exhausted(attempt) {
        tracing::warn!(queue = J::QUEUE, attempt, error = %message, "job ran out of attempts");
        core.metrics.job(J::QUEUE, outcome::DEAD);
        envelope.job.give_up(core, &message).await
    } else {
        let delay = policy.delay(attempt);
        tracing::info!(queue = J::QUEUE, attempt, delay_ms = delay.as_millis() as u64, error = %message, "job failed; retrying");
        core.metrics.job(J::QUEUE, outcome::RETRIED);
        let due = core.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
        lifecycle::enqueue(core, ScheduledJob::retry(envelope.job, attempt, due)).await
    };
    if let Err(e) = settled {
        // The database itself failed: let apalis run the job again, after a pause so that an
        // outage does not turn into a hot loop.
        tracing::error!(queue = J::QUEUE, error = %format!("{e:#}"), "could not settle a failed job");
        tokio::time::sleep(Duration::from_secs(1)).await;
        return Err(e.into());
    }
    Ok(())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}
