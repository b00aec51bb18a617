//! The effects of a state change: the events it records and the jobs it implies. The store
//! writes them in the same transaction as the change; they are published (metrics, wake-ups)
//! after the commit.

use chrono::{DateTime, Utc};

use crate::core::Core;
use crate::domain::session::Transition;
use crate::domain::{QosStatus, Session, SessionId, StatusInfo};
use crate::jobs::{self, JobKind};
use crate::metrics::outcome;
use crate::notify;
use crate::store::NewNotification;
use crate::store::{Decide, Write};

#[derive(Debug)]
pub struct ScheduledJob {
    pub(crate) queue: &'static str,
    pub(crate) payload: String,
    pub(crate) attempt: u32,
    pub(crate) due: DateTime<Utc>,
    /// The enqueuing work's trace context, which the job continues as a link.
    pub(crate) trace: crate::trace::Carried,
}

impl ScheduledJob {
    pub fn new<J: JobKind>(job: J, due: DateTime<Utc>) -> Self {
        Self::retry(job, 0, due)
    }

    pub fn retry<J: JobKind>(job: J, attempt: u32, due: DateTime<Utc>) -> Self {
        Self {
            queue: J::QUEUE,
            payload: serde_json::to_string(&job).expect("job payloads serialise"),
            attempt,
            due,
            trace: crate::trace::Carried::here(),
        }
    }

    pub fn queue(&self) -> &'static str {
        self.queue
    }

    pub fn due(&self) -> DateTime<Utc> {
        self.due
    }
}

/// What a decision implies beside the session's new state: the transitions it records, the
/// notifications it owes the consumer and the jobs that follow. The store writes them in the
/// decision's transaction.
#[derive(Debug, Default)]
pub struct Effects {
    pub(crate) transitions: Vec<(SessionId, i64, Transition, DateTime<Utc>)>,
    /// Each event with its delivery job, which the store writes only when no earlier event of
    /// the session is still pending (that one's settlement starts it).
    pub(crate) notifications: Vec<(NewNotification, ScheduledJob)>,
    pub(crate) jobs: Vec<ScheduledJob>,
    /// The inputs that drove the change (`recording`), written beside it.
    pub(crate) inputs: Vec<crate::recording::Recorded>,
}

impl Effects {
    /// Records a transition and the notification it owes the consumer.
    pub fn record(&mut self, session: &Session, t: Transition, at: DateTime<Utc>) {
        if let Some(n) = notify::for_transition(session, &t, at) {
            let delivery = ScheduledJob::new(jobs::DeliverNotification::new(n.id), n.created_at);
            self.notifications.push((n, delivery));
        }
        self.transitions.push((session.id, session.revision, t, at));
    }

    pub fn schedule(&mut self, job: ScheduledJob) {
        self.jobs.push(job);
    }

    /// The transitions recorded so far.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.transitions.iter().map(|(_, _, t, _)| t)
    }

    /// The jobs scheduled so far (after the store wrote them: every job it committed).
    pub fn jobs(&self) -> &[ScheduledJob] {
        &self.jobs
    }

    /// After the commit: count what happened and tell the queue about the new jobs.
    pub fn publish(self, core: &Core) {
        for (_, _, t, _) in &self.transitions {
            let from = t.from.map(|s| s.as_str()).unwrap_or("");
            core.metrics
                .transitions
                .with_label_values(&[from, t.to, t.reason])
                .inc();
        }
        for job in &self.jobs {
            core.metrics.job(job.queue, outcome::ENQUEUED);
            core.queue.pushed(job.queue, job.due.timestamp_millis());
        }
    }
}

/// Decides a change of session `id` over the session as the store reads it for writing
/// (None: gone), commits it with the effects it records, and publishes them once committed:
/// the shape of every state change.
pub async fn change<T: Send + 'static>(
    core: &Core,
    id: SessionId,
    decide: impl FnOnce(Option<Session>, &mut Effects) -> anyhow::Result<(Write, T)> + Send + 'static,
) -> anyhow::Result<T> {
    // The store may decide elsewhere (its writer thread, its batcher task): the jobs and
    // events decided there carry this work's trace context.
    let here = crate::trace::current();
    let decide: Decide = Box::new(move |session, fx| {
        let (write, value) = crate::trace::sync_scope(here, || decide(session, fx))?;
        Ok((write, Box::new(value) as Box<dyn std::any::Any + Send>))
    });
    let (value, fx) = core.store.change_session(id, decide).await?;
    fx.publish(core);
    Ok(*value
        .downcast::<T>()
        .expect("a change returns the value its decision made"))
}

/// Commits one job on its own (a job put back for later) and tells the queue.
pub async fn enqueue(core: &Core, job: ScheduledJob) -> anyhow::Result<()> {
    let mut fx = Effects::default();
    fx.schedule(job);
    core.store.commit(fx).await?.publish(core);
    Ok(())
}

/// Moves a session to UNAVAILABLE and schedules what must follow: the grant's release and the
/// purge after the retention the reason calls for.
pub fn terminate(
    retention: std::time::Duration,
    session: &mut Session,
    info: StatusInfo,
    now: DateTime<Utc>,
    fx: &mut Effects,
) {
    let remaining = match (session.status, session.expires_at) {
        (QosStatus::Available, Some(end)) => end - now,
        _ => chrono::Duration::seconds(session.duration_secs),
    };
    let t = session.make_unavailable(now, info);
    fx.record(session, t, now);
    if session.needs_release() {
        fx.schedule(ScheduledJob::new(
            jobs::ReleaseGrant {
                session_id: session.id,
                grant_id: session.grant_id.clone(),
            },
            now,
        ));
    }
    let configured = chrono::Duration::from_std(retention).unwrap_or_default();
    let purge_at = now + session.retention(configured, remaining);
    fx.schedule(ScheduledJob::new(
        jobs::PurgeSession::new(session.id),
        purge_at,
    ));
}

/// Ends the session (UNAVAILABLE with the reason `decide` gives, read inside the write) and
/// publishes what follows; nothing happens when the session is gone or `decide` says no.
pub async fn end_session_if(
    core: &Core,
    retention: std::time::Duration,
    id: SessionId,
    now: DateTime<Utc>,
    decide: impl FnOnce(&Session) -> Option<StatusInfo> + Send + 'static,
) -> anyhow::Result<()> {
    change(core, id, move |current, fx| {
        let Some(mut s) = current else {
            return Ok((Write::Nothing, ()));
        };
        let Some(info) = decide(&s) else {
            return Ok((Write::Nothing, ()));
        };
        terminate(retention, &mut s, info, now, fx);
        Ok((Write::update(s), ()))
    })
    .await
}

/// Schedules the renewal of an AVAILABLE session's grant when its lease ends before the
/// session does: at the lease end minus a margin (a quarter of the lifetime, at most 60 s).
pub fn schedule_renewal(session: &Session, lifetime: std::time::Duration, fx: &mut Effects) {
    let (Some(lease), Some(expires)) = (session.lease_until, session.expires_at) else {
        return;
    };
    if session.status != QosStatus::Available || lease >= expires {
        return;
    }
    let margin = chrono::Duration::from_std(lifetime / 4)
        .unwrap_or_default()
        .min(chrono::Duration::seconds(60));
    fx.schedule(ScheduledJob::new(
        jobs::RenewGrant {
            session_id: session.id,
            lease_until_ms: lease.timestamp_millis(),
        },
        lease - margin,
    ));
}
