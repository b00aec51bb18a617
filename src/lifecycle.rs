//! The effects of a state change: the events it records and the jobs it implies. They are
//! written in the same transaction as the change, then published (metrics, wake-ups) after
//! the commit.

use chrono::{DateTime, Utc};

use crate::core::Core;
use crate::domain::session::Transition;
use crate::domain::{QosStatus, Session, SessionId, StatusInfo};
use crate::jobs::{self, JobKind};
use crate::metrics::outcome;
use crate::notify;
use crate::store::notifications::{self, NewNotification};
use crate::store::writer::Tx;
use crate::store::{events, jobs as job_rows, sessions};

pub struct ScheduledJob {
    queue: &'static str,
    payload: String,
    attempt: u32,
    due: DateTime<Utc>,
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
        }
    }
}

#[derive(Default)]
pub struct Effects {
    transitions: Vec<(SessionId, i64, Transition, DateTime<Utc>)>,
    notifications: Vec<NewNotification>,
    jobs: Vec<ScheduledJob>,
}

impl Effects {
    /// Records a transition and the notification it owes the consumer.
    pub fn record(&mut self, session: &Session, t: Transition, at: DateTime<Utc>) {
        if let Some(n) = notify::for_transition(session, &t, at) {
            self.notifications.push(n);
        }
        self.transitions.push((session.id, session.revision, t, at));
    }

    pub fn schedule(&mut self, job: ScheduledJob) {
        self.jobs.push(job);
    }

    /// Writes events and jobs into the caller's transaction.
    pub fn write(&mut self, tx: &Tx) -> anyhow::Result<()> {
        for (id, revision, t, at) in &self.transitions {
            events::append(tx, *id, *revision, t, *at)?;
        }
        for n in &self.notifications {
            notifications::insert(tx, n)?;
            // Exactly one job per event: behind a pending event, the earlier one's settlement
            // starts it (both happen in write transactions, so they cannot cross).
            if !notifications::earlier_pending_than(tx, n.session_id, n.id)? {
                self.jobs.push(ScheduledJob::new(
                    jobs::DeliverNotification {
                        notification_id: n.id,
                    },
                    n.created_at,
                ));
            }
        }
        for job in &self.jobs {
            job_rows::push(
                tx,
                job.queue,
                &job.payload,
                job.attempt,
                job.due.timestamp_millis(),
            )?;
        }
        Ok(())
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

/// Runs `f` in a write transaction with the effects it records written in the same
/// transaction, and published once it committed: the shape of every state change.
pub async fn commit<T: Send + 'static>(
    core: &Core,
    f: impl FnOnce(&Tx, &mut Effects) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (value, fx) = core
        .writer
        .run(move |tx| {
            let mut fx = Effects::default();
            let value = f(tx, &mut fx)?;
            fx.write(tx)?;
            Ok((value, fx))
        })
        .await?;
    fx.publish(core);
    Ok(value)
}

/// Commits one job on its own (a job put back for later) and tells the queue.
pub async fn enqueue(core: &Core, job: ScheduledJob) -> anyhow::Result<()> {
    commit(core, move |_, fx| {
        fx.schedule(job);
        Ok(())
    })
    .await
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
        jobs::PurgeSession {
            session_id: session.id,
        },
        purge_at,
    ));
}

/// Ends the session (UNAVAILABLE with the reason `decide` gives, read inside the write) and
/// publishes what follows; nothing happens when the session is gone or `decide` says no.
pub async fn end_session_if(
    core: &Core,
    id: crate::domain::SessionId,
    now: DateTime<Utc>,
    decide: impl FnOnce(&Session) -> Option<StatusInfo> + Send + 'static,
) -> anyhow::Result<()> {
    let retention = core.retention;
    commit(core, move |tx, fx| {
        let Some(mut s) = sessions::find(tx, id)? else {
            return Ok(());
        };
        let Some(info) = decide(&s) else {
            return Ok(());
        };
        let expected = s.revision;
        terminate(retention, &mut s, info, now, fx);
        sessions::update(tx, &s, expected)?;
        Ok(())
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
