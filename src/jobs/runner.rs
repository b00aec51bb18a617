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
use tracing::Instrument;

use super::{Claimed, JobContext, JobKind};
use crate::lifecycle::Effects;
use crate::metrics::outcome;
use crate::queue::{LaneBackend, Settlement};
use crate::recording::{self, Input};
use crate::store::{fence, from_millis};
use crate::trace;

/// When giving up itself failed (the database is down), the job is tried again this much later.
const AFTER_FAILED_GIVE_UP: Duration = Duration::from_secs(1);

/// Registers the worker of job kind `J`. `instance` makes worker names unique per process.
pub(super) fn register<J: JobKind>(
    monitor: Monitor,
    ctx: &Arc<JobContext>,
    instance: &str,
) -> Monitor {
    let ctx = ctx.clone();
    let instance = instance.to_owned();
    monitor.register(move |restarts| {
        let concurrency = ctx.pools.get(J::QUEUE).concurrency;
        WorkerBuilder::new(format!("{}@{instance}#{restarts}", J::QUEUE))
            .backend(LaneBackend::<J>::new(ctx.queue.clone()))
            .data(ctx.clone())
            .concurrency(concurrency)
            .build(handle::<J>)
    })
}

/// apalis polls every worker's handlers inside one task; the job itself runs as a task of
/// its own so that jobs spread over every core of the runtime.
async fn handle<J: JobKind>(
    claimed: Claimed<J>,
    ctx: Data<Arc<JobContext>>,
) -> Result<(), BoxDynError> {
    let ctx: Arc<JobContext> = (*ctx).clone();
    let task = tokio::spawn(run_keyed(claimed, ctx));
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

/// Runs the job on draws of its own (seeded from the job as stored and its attempt: what it
/// draws does not depend on the jobs running beside it, so a replay draws the same), in a
/// span and a trace of its own linked to the work that enqueued it.
async fn run_keyed<J: JobKind>(claimed: Claimed<J>, ctx: Arc<JobContext>) {
    let mut key = claimed.payload.as_bytes().to_vec();
    key.extend_from_slice(J::QUEUE.as_bytes());
    key.extend_from_slice(&claimed.attempt.to_le_bytes());
    let (current, link) = claimed.trace.continued();
    let span = job_span(&claimed, &current, link);
    let random = ctx.random.clone();
    trace::scope(current, random.stream(&key, run_claimed(claimed, ctx)))
        .instrument(span)
        .await;
}

/// The job's span: its queue, attempt and session, its own trace, the span it links to and the
/// caller's correlator.
fn job_span<J: JobKind>(
    claimed: &Claimed<J>,
    current: &trace::Current,
    link: Option<trace::TraceParent>,
) -> tracing::Span {
    let own = current.span.unwrap_or_else(trace::TraceParent::root);
    let span = tracing::info_span!(
        "job",
        queue = J::QUEUE,
        attempt = claimed.attempt,
        trace_id = %own.trace_hex(),
        span_id = %own.span_hex(),
        session_id = tracing::field::Empty,
        link = tracing::field::Empty,
        x_correlator = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    if let Some(session) = claimed.job.session_of() {
        span.record("session_id", tracing::field::display(session));
    }
    if let Some(link) = link {
        span.record("link", tracing::field::display(link));
    }
    if let Some(correlator) = &current.correlator {
        span.record("x_correlator", correlator.as_str());
    }
    span
}

/// The job's run with a recording buffer of its own: what the job met goes with its writes;
/// what none took is written right after it, under its fence, before the job is settled. A
/// timer's firing is recorded on its first attempt, also when it changed nothing: a replay
/// starts the timer at that instant, not at its due time (a late start may find a session
/// already deleted, where one on time would renew it).
async fn run_recorded<J: JobKind>(
    ctx: &JobContext,
    claimed: &Claimed<J>,
) -> std::thread::Result<anyhow::Result<()>> {
    let fence = claimed.fence;
    let run = fence::scope(fence, AssertUnwindSafe(claimed.job.run(ctx)).catch_unwind());
    if !ctx.record_inputs {
        return run.await;
    }
    let timer = claimed.job.timer_of().filter(|_| claimed.attempt == 0);
    let due_ms = claimed.due_at_ms;
    let (result, left) = recording::scope(async move {
        if let Some(session) = timer {
            let at = ctx.clock.now().max(from_millis(due_ms));
            let job = J::QUEUE.to_owned();
            recording::push(at, Some(session), Input::Timer { job, due_ms });
        }
        run.await
    })
    .await;
    if !left.is_empty() {
        let fx = Effects {
            inputs: left,
            ..Effects::default()
        };
        if let Err(e) = fence::scope(fence, ctx.store.commit(fx)).await {
            tracing::warn!(queue = J::QUEUE, error = %format!("{e:#}"), "recording a job's inputs failed");
        }
    }
    result
}

async fn run_claimed<J: JobKind>(claimed: Claimed<J>, ctx: Arc<JobContext>) {
    let ctx: &JobContext = &ctx;
    let due = from_millis(claimed.due_at_ms);
    // Claims compare due times to the millisecond; this only covers a clock read a moment
    // apart from the dispatcher's. A replayed timer starts when it started in the history.
    ctx.clock.sleep_until(due).await;
    if let Some(session) = claimed.job.timer_of().filter(|_| claimed.attempt == 0) {
        ctx.firings
            .hold(&*ctx.clock, session, J::QUEUE, claimed.due_at_ms)
            .await;
    }
    let lateness = (ctx.clock.now() - due).num_milliseconds().max(0) as f64 / 1000.0;
    ctx.metrics
        .schedule_to_start
        .with_label_values(&[J::QUEUE])
        .observe(lateness);

    let started = Instant::now();
    let _busy = Busy::new(ctx, J::QUEUE);
    let fence = claimed.fence;
    let result = run_recorded(ctx, &claimed).await.unwrap_or_else(|panic| {
        Err(anyhow::anyhow!(
            "handler panicked: {}",
            crate::panics::message(&*panic)
        ))
    });
    ctx.metrics
        .job_run
        .with_label_values(&[J::QUEUE])
        .observe(started.elapsed().as_secs_f64());

    let error = match result {
        Ok(()) => {
            settled::<J>(ctx, outcome::SUCCEEDED);
            ctx.queue.settle(Settlement::Done(fence));
            return;
        }
        Err(e) if fence::Fenced::caused(&e) => {
            // Another node claimed the job again (this one stalled past its lease): the job
            // is that node's now, and this claim's settlement would be refused too.
            tracing::warn!(queue = J::QUEUE, job = fence.job, error = %format!("{e:#}"), "job lost to another node; its writes were refused");
            settled::<J>(ctx, outcome::FENCED);
            ctx.queue.abandoned();
            return;
        }
        Err(e) => e,
    };
    ctx.metrics.job(J::QUEUE, outcome::FAILED);
    let attempt = claimed.attempt + 1;
    let policy = &ctx.pools.get(J::QUEUE).retry;
    let message = format!("{error:#}");
    let (delay, settled_outcome) = if policy.exhausted(attempt) {
        tracing::warn!(queue = J::QUEUE, attempt, error = %message, "job ran out of attempts");
        match fence::scope(fence, claimed.job.give_up(ctx, &message)).await {
            Ok(()) => {
                settled::<J>(ctx, outcome::DEAD);
                ctx.queue.settle(Settlement::Done(fence));
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
            .delay(attempt, &ctx.random)
            .max(asked.unwrap_or_default());
        tracing::warn!(queue = J::QUEUE, attempt, delay_ms = delay.as_millis() as u64, error = %message, "job failed; retrying");
        (delay, outcome::RETRIED)
    };
    settled::<J>(ctx, settled_outcome);
    let due = ctx.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
    let due = claimed.job.retry_by().map_or(due, |by| due.min(by));
    ctx.queue
        .settle_retry(J::QUEUE, fence, attempt, due.timestamp_millis());
}

/// How the run ended: counted, and in the job's span (its logs' and traces' `outcome`).
fn settled<J: JobKind>(ctx: &JobContext, outcome: &'static str) {
    ctx.metrics.job(J::QUEUE, outcome);
    tracing::Span::current().record("outcome", outcome);
}

/// A worker slot of `queue` taken while a job runs (given back however the run ends).
struct Busy {
    busy: prometheus::IntGauge,
    idle: prometheus::IntGauge,
}

impl Busy {
    fn new(ctx: &JobContext, queue: &str) -> Self {
        let slots = &ctx.metrics.queue_workers;
        let this = Self {
            busy: slots.with_label_values(&[queue, "busy"]),
            idle: slots.with_label_values(&[queue, "idle"]),
        };
        this.busy.inc();
        this.idle.dec();
        this
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.busy.dec();
        self.idle.inc();
    }
}
