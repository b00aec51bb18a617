//! The SQLite store: one writer thread runs every write transaction (batched, see `writer`);
//! plain reads run on read connections (`readers`). The sqlx pool migrates the schema and
//! serves tests that look at the file.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use uuid::Uuid;

use super::notifications::{self, ForDelivery, Notification};
use super::port::{
    Census, Claim, Claimed, Created, Decide, GrantLedger, HistoryFilter, HistorySink,
    NotificationFilter, Provisioned, RoundTime, Settled, Settlement, StaleRevision, Store, Write,
    WriteCounts,
};
use super::readers::Readers;
use super::writer::{Tx, Writer};
use super::{Purged, events, history, inputs, jobs, ledger, sessions};
use crate::domain::{ClientId, Session, SessionId};
use crate::lifecycle::{Effects, ScheduledJob};
use crate::recording;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: Writer,
    readers: Readers,
}

impl SqliteStore {
    pub fn new(pool: SqlitePool, writer: Writer, readers: Readers) -> Arc<Self> {
        Arc::new(Self {
            pool,
            writer,
            readers,
        })
    }

    /// The read pool, for tests that look at the file directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The writer, for tests that hold the write lock or write by hand.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Runs `f` in a write transaction with the effects it records written in the same
    /// transaction, and the inputs the calling task recorded.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx, &mut Effects) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<(T, Effects)> {
        let mut inputs = recording::take();
        self.writer
            .run(move |tx| {
                let mut fx = Effects::default();
                let value = f(tx, &mut fx)?;
                fx.inputs.append(&mut inputs);
                write_effects(tx, &mut fx)?;
                Ok((value, fx))
            })
            .await
    }
}

/// Writes the events, the notification outbox, the jobs and the inputs of `fx` into the
/// transaction.
fn write_effects(tx: &Tx, fx: &mut Effects) -> anyhow::Result<()> {
    inputs::append(tx, &fx.inputs)?;
    for (id, revision, t, at) in &fx.transitions {
        events::append(tx, *id, *revision, t, *at)?;
    }
    for (n, delivery) in std::mem::take(&mut fx.notifications) {
        notifications::insert(tx, &n)?;
        // Exactly one job per event: behind a pending event, the earlier one's settlement
        // starts it (both happen in write transactions, so they cannot cross).
        if !notifications::earlier_pending_than(tx, n.session_id, n.id)? {
            fx.jobs.push(delivery);
        }
    }
    for job in &fx.jobs {
        jobs::push(tx, job)?;
    }
    Ok(())
}

/// Applies a decision's write to the session read at `read`.
fn apply(tx: &Tx, id: SessionId, read: Option<i64>, write: Write) -> anyhow::Result<()> {
    write.check(id, read)?;
    match (write, read) {
        (Write::Update(s), Some(stored)) => {
            if !sessions::update(tx, &s, stored)? {
                return Err(StaleRevision {
                    id,
                    written: s.revision,
                    stored,
                }
                .into());
            }
            Ok(())
        }
        (Write::Delete, Some(stored)) => {
            anyhow::ensure!(
                sessions::delete(tx, id, stored)?,
                "session {id} vanished under a write lock"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

fn settlements(tx: &Tx, settlements: &[Settlement]) -> anyhow::Result<()> {
    let done: Vec<i64> = settlements
        .iter()
        .filter_map(|s| match s {
            Settlement::Done(f) => Some(f.job),
            Settlement::Retry { .. } => None,
        })
        .collect();
    jobs::finish(tx, &done)?;
    for s in settlements {
        if let Settlement::Retry {
            fence,
            attempt,
            due_at_ms,
        } = *s
        {
            jobs::reschedule(tx, fence.job, attempt, due_at_ms)?;
        }
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> anyhow::Result<()> {
        self.readers
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
    }

    async fn session(&self, id: SessionId) -> anyhow::Result<Option<Session>> {
        self.readers.read(|conn| sessions::find(conn, id))
    }

    async fn visible_sessions(
        &self,
        owner: &ClientId,
        device_key: &str,
    ) -> anyhow::Result<Vec<Session>> {
        self.readers
            .read(|conn| sessions::visible_for_device(conn, owner, device_key))
    }

    async fn create_session(
        &self,
        session: Session,
        device_keys: Vec<String>,
        quota: u64,
        mut planned: Effects,
    ) -> anyhow::Result<(Created, Effects)> {
        let (created, written) = self
            .write(move |tx, fx| {
                if quota > 0 && sessions::live_count_for_owner(tx, &session.owner)? >= quota {
                    return Ok(Created::QuotaExceeded);
                }
                let keys = super::device_keys_of(&session, device_keys);
                let live = sessions::live_for_device(tx, &session.owner, &keys)?;
                if live.iter().any(|other| other.flow.overlaps(&session.flow)) {
                    return Ok(Created::Conflict);
                }
                sessions::insert(tx, &session)?;
                sessions::insert_aliases(tx, &session, &keys)?;
                std::mem::swap(fx, &mut planned);
                Ok(Created::Stored)
            })
            .await?;
        Ok((created, written))
    }

    async fn change_session(
        &self,
        id: SessionId,
        decide: Decide,
    ) -> anyhow::Result<(Box<dyn Any + Send>, Effects)> {
        self.write(move |tx, fx| {
            let current = sessions::find(tx, id)?;
            let read = current.as_ref().map(|s| s.revision);
            let (write, value) = decide(current, fx)?;
            apply(tx, id, read, write)?;
            Ok(value)
        })
        .await
    }

    async fn commit(&self, planned: Effects) -> anyhow::Result<Effects> {
        let ((), written) = self
            .write(move |_, fx| {
                *fx = planned;
                Ok(())
            })
            .await?;
        Ok(written)
    }

    async fn queue_round(
        &self,
        owner: &str,
        done: Arc<Vec<Settlement>>,
        claims: Vec<Claim>,
        at: RoundTime,
    ) -> anyhow::Result<Vec<Claimed>> {
        // One process: its claims are not leases, only due times matter.
        let now_ms = at.now_ms;
        let owner = owner.to_owned();
        self.writer
            .run(move |tx| {
                settlements(tx, &done)?;
                let mut claimed = Vec::with_capacity(claims.len());
                for Claim { queue, limit } in claims {
                    let rows = jobs::claim(tx, queue, &owner, now_ms, limit)?;
                    let next_due_ms = if rows.len() == limit {
                        Some(now_ms)
                    } else {
                        jobs::next_due(tx, queue)?
                    };
                    claimed.push(Claimed {
                        queue,
                        rows,
                        next_due_ms,
                        taken_over: 0,
                    });
                }
                Ok(claimed)
            })
            .await
    }

    async fn release_claims(&self, owner: Option<&str>) -> anyhow::Result<usize> {
        let owner = owner.map(str::to_owned);
        self.writer
            .run(move |tx| jobs::reclaim(tx, owner.as_deref()))
            .await
    }

    async fn adopt_legacy_jobs(&self) -> anyhow::Result<usize> {
        self.writer.run(jobs::adopt_apalis_jobs).await
    }

    async fn notification_for_delivery(&self, id: Uuid) -> anyhow::Result<Option<ForDelivery>> {
        self.readers
            .read(|conn| notifications::find_for_delivery(conn, id))
    }

    async fn retry_notification(
        &self,
        id: Uuid,
        attempts: u32,
        error: String,
        next: DateTime<Utc>,
        job: ScheduledJob,
    ) -> anyhow::Result<Effects> {
        let ((), fx) = self
            .write(move |tx, fx| {
                fx.schedule(job);
                notifications::record_retry(tx, id, attempts, &error, next)
            })
            .await?;
        Ok(fx)
    }

    async fn settle_notification(
        &self,
        s: Settled,
        next: fn(Uuid, DateTime<Utc>) -> ScheduledJob,
    ) -> anyhow::Result<Effects> {
        let ((), fx) = self
            .write(move |tx, fx| {
                let finished = notifications::finish(
                    tx,
                    s.id,
                    s.final_state,
                    s.attempts,
                    s.error.as_deref(),
                    s.at,
                )?;
                if finished && let Some(waiting) = notifications::next_pending_after(tx, s.id)? {
                    fx.schedule(next(waiting, s.at));
                }
                Ok(())
            })
            .await?;
        Ok(fx)
    }

    async fn mark_sink_gone(&self, sink: String, at: DateTime<Utc>) -> anyhow::Result<()> {
        self.writer
            .run(move |tx| notifications::mark_gone(tx, &sink, at))
            .await
    }

    async fn revive_notification(&self, id: Uuid, job: ScheduledJob) -> anyhow::Result<bool> {
        let (revived, _) = self
            .write(move |tx, fx| {
                let Some(sink) = notifications::revive(tx, id)? else {
                    return Ok(false);
                };
                notifications::forget_gone(tx, &sink)?;
                fx.schedule(job);
                Ok(true)
            })
            .await?;
        Ok(revived)
    }

    async fn notifications(&self, filter: NotificationFilter) -> anyhow::Result<Vec<Notification>> {
        self.readers
            .scan(move |conn| notifications::list(conn, filter.state, filter.session, filter.limit))
            .await
    }

    async fn census(&self, now_ms: i64) -> anyhow::Result<Census> {
        self.readers
            .scan(move |conn| {
                let (dead_notifications, oldest_dead_ms) = notifications::dead(conn)?;
                Ok(Census {
                    sessions: sessions::census(conn)?,
                    dead_notifications,
                    oldest_dead_ms,
                    queues: jobs::depth(conn, now_ms)?,
                })
            })
            .await
    }

    async fn read_history(
        &self,
        filter: HistoryFilter,
        mut each: HistorySink,
    ) -> anyhow::Result<u64> {
        self.readers
            .scan(move |conn| inputs::read_history(conn, filter, &mut each))
            .await
    }

    async fn read_transitions(&self, mut each: HistorySink) -> anyhow::Result<u64> {
        self.readers
            .scan(move |conn| inputs::read_transitions(conn, &mut each))
            .await
    }

    async fn purge_history(&self, before_ms: i64, batch: usize) -> anyhow::Result<Purged> {
        let (purged, _) = self
            .write(move |tx, _| history::purge(tx, before_ms, batch))
            .await?;
        Ok(purged)
    }

    fn write_counts(&self) -> WriteCounts {
        let (commits, writes) = self.writer.counts().get();
        WriteCounts {
            commits,
            writes,
            ..WriteCounts::default()
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl GrantLedger for SqliteStore {
    async fn provision(
        &self,
        session: SessionId,
        fresh_id: String,
        refuse: bool,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Provisioned> {
        self.writer
            .run(move |tx| {
                Ok(match ledger::find_by_session(tx, session)? {
                    Some(g) if !g.released => Provisioned::Granted(g.grant_id),
                    Some(_) => Provisioned::AlreadyReleased,
                    None if refuse => Provisioned::Refused,
                    None => {
                        ledger::insert(tx, &fresh_id, session, now, until)?;
                        Provisioned::Granted(fresh_id)
                    }
                })
            })
            .await
    }

    async fn extend(
        &self,
        session: SessionId,
        grant_id: Option<String>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Option<String>> {
        self.writer
            .run(move |tx| {
                let id = match grant_id {
                    Some(id) => id,
                    None => match ledger::find_by_session(tx, session)? {
                        Some(g) => g.grant_id,
                        None => return Ok(None),
                    },
                };
                Ok(ledger::extend_lease(tx, &id, until)?.then_some(id))
            })
            .await
    }

    async fn release(
        &self,
        session: SessionId,
        grant_id: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.writer
            .run(move |tx| {
                let id = match grant_id {
                    Some(id) => Some(id),
                    None => ledger::find_by_session(tx, session)?.map(|g| g.grant_id),
                };
                if let Some(id) = id {
                    ledger::release(tx, &id, now)?;
                }
                Ok(())
            })
            .await
    }

    async fn active(&self) -> anyhow::Result<i64> {
        self.readers.read(ledger::active_count)
    }
}
