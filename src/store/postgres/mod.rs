//! The PostgreSQL store, for several `qod serve` nodes on one database. Every write is a
//! transaction on a pooled connection; what SQLite gets from its single writer comes from row
//! and advisory locks here:
//! - a change of a session locks its row (`FOR UPDATE`) and checks the revision it read;
//! - a create takes an advisory lock per owner (with a quota) or per owner and device key, so
//!   that the overlap and quota checks are atomic across nodes (`creates`);
//! - writes that pick which event of a session gets the delivery job (a new event, the
//!   settlement of the one before) hold the session's row lock;
//! - a job's writes check its claim's epoch (`fence`), and so do its settlements; a claim
//!   takes jobs whose lease lapsed, so a dead node's jobs move on by themselves.
//!
//! Creates, session changes, plain commits and delivery settlements go through `batch`: many
//! per transaction, one statement per table. Commits that enqueue jobs are announced to the other
//! nodes (`announcer`, a wake-up hint; each node also polls).

mod announcer;
mod batch;
mod creates;
mod history;
mod inputs;
mod jobs;
mod ledger;
mod listener;
mod notifications;
mod sessions;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::fence::{self, Fence, Fenced, Unavailable};
use super::notifications::{ForDelivery, Notification};
use super::port::{
    Census, Claim, Claimed, Created, Decide, GrantLedger, HistoryFilter, HistorySink, JobWake,
    NotificationFilter, Provisioned, RoundTime, Settled, Settlement, Store, WriteCounts,
};
use super::{Columns, Purged};
use crate::domain::{ClientId, Session, SessionId};
use crate::lifecycle::{Effects, ScheduledJob};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel on which commits announce new jobs (`queue:due_ms`).
const JOBS_CHANNEL: &str = "qod_jobs";

pub struct PgStore {
    pool: PgPool,
    lease_ms: i64,
    counters: Arc<Counters>,
    batcher: batch::Batcher,
    announcer: Arc<announcer::Announcer>,
}

/// What this process's store did so far (monotonic).
#[derive(Debug, Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    fenced: AtomicU64,
}

/// Connects (a database that cannot be reached is an error at once) and brings the schema up
/// to date; several nodes starting together migrate once (sqlx holds an advisory lock).
pub async fn open(
    url: &str,
    max_connections: u32,
    lease: Duration,
) -> anyhow::Result<Arc<PgStore>> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .with_context(|| format!("invalid PostgreSQL URL {}", redacted(url)))?
        .options([(
            "idle_in_transaction_session_timeout",
            stall_limit(lease).as_millis(),
        )]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        // A request waits this long for a connection before it is answered 503.
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot reach the database at {}", redacted(url)))?;
    MIGRATIONS
        .run(&pool)
        .await
        .context("applying the PostgreSQL migrations")?;
    let counters = Arc::new(Counters::default());
    let announcer = announcer::Announcer::start(pool.clone(), JOBS_CHANNEL);
    Ok(Arc::new(PgStore {
        batcher: batch::Batcher::start(pool.clone(), counters.clone(), announcer.clone()),
        announcer,
        pool,
        lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
        counters,
    }))
}

/// How long the database lets a transaction of ours sit idle before it ends it (and the
/// connection). A node that stalls mid-transaction (stopped, swapped out, starved) would
/// otherwise hold its row locks while the others take its jobs over once its lease lapses,
/// and they would wait for it. Half the lease: the locks are free before the lease lapses.
/// Our transactions never wait on anything but the database.
fn stall_limit(lease: Duration) -> Duration {
    (lease / 2).max(Duration::from_millis(500))
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A connection-level failure (the database down, restarting, unreachable or out of
/// connections) becomes `Unavailable`; anything else stays as it is.
fn classify(e: anyhow::Error) -> anyhow::Error {
    let Some(sqlx_error) = e.downcast_ref::<sqlx::Error>() else {
        return e;
    };
    let unavailable = match sqlx_error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-57P03: shutting down or starting up; 53300:
            // too many connections; 25P03: our transaction sat idle too long (see
            // `stall_limit`) and the database closed the connection.
            code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "25P03"
        }),
        _ => false,
    };
    if unavailable {
        anyhow::Error::new(Unavailable(sqlx_error.to_string()))
    } else {
        e
    }
}

impl Columns for PgRow {
    fn text(&self, col: &str) -> anyhow::Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> anyhow::Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    /// Integers, and the booleans SQLite stores as integers.
    fn int(&self, col: &str) -> anyhow::Result<i64> {
        match self.try_get::<i64, _>(col) {
            Ok(v) => Ok(v),
            Err(_) => Ok(i64::from(self.try_get::<bool, _>(col)?)),
        }
    }
    fn opt_int(&self, col: &str) -> anyhow::Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
}

impl PgStore {
    /// Begins a write; inside a job, only while the job's claim still holds (see `fence`).
    async fn begin(&self) -> anyhow::Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        if let Some(f) = fence::current()
            && !jobs::holds(&mut tx, f).await?
        {
            self.counters.fenced.fetch_add(1, Ordering::Relaxed);
            return Err(Fenced(f).into());
        }
        Ok(tx)
    }

    /// Writes the effects into the transaction and commits it.
    async fn finish(
        &self,
        mut tx: Transaction<'static, Postgres>,
        fx: &Effects,
    ) -> anyhow::Result<()> {
        write_effects(&mut tx, fx).await?;
        tx.commit().await?;
        self.announcer.note(&fx.jobs);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn read<T>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut c = self
            .pool
            .acquire()
            .await
            .map_err(anyhow::Error::from)
            .map_err(classify)?;
        f(&mut c).await.map_err(classify)
    }
}

/// Writes the jobs and the inputs of `fx` (events and their outbox go through the batches,
/// which hold their sessions' locks).
async fn write_effects(c: &mut PgConnection, fx: &Effects) -> anyhow::Result<()> {
    anyhow::ensure!(
        fx.transitions.is_empty() && fx.notifications.is_empty(),
        "transitions and notifications are written by the batches"
    );
    inputs::insert_many(c, &fx.inputs.iter().collect::<Vec<_>>()).await?;
    jobs::push(c, &fx.jobs).await
}

impl PgStore {
    /// Hands an operation to the batches, with the fence of the job that asks and the inputs
    /// it recorded.
    async fn batched(&self, op: batch::Op) -> anyhow::Result<()> {
        self.batcher
            .send(batch::Request {
                op: op.recording(crate::recording::take()),
                fence: fence::current(),
            })
            .await
    }

    async fn round(
        &self,
        owner: &str,
        done: &[Settlement],
        claims: Vec<Claim>,
        at: RoundTime,
    ) -> anyhow::Result<Vec<Claimed>> {
        let mut tx = self.pool.begin().await?;
        let finished: Vec<Fence> = done
            .iter()
            .filter_map(|s| match s {
                Settlement::Done(f) => Some(*f),
                Settlement::Retry { .. } => None,
            })
            .collect();
        let retries: Vec<(Fence, u32, i64)> = done
            .iter()
            .filter_map(|s| match *s {
                Settlement::Retry {
                    fence,
                    attempt,
                    due_at_ms,
                } => Some((fence, attempt, due_at_ms)),
                Settlement::Done(_) => None,
            })
            .collect();
        let settled =
            jobs::finish(&mut tx, &finished).await? + jobs::reschedule(&mut tx, &retries).await?;
        let refused = done.len().saturating_sub(settled);
        let mut claimed = Vec::with_capacity(claims.len());
        for Claim { queue, limit } in claims {
            let (rows, over) = jobs::claim(&mut tx, queue, owner, at, self.lease_ms, limit).await?;
            let next_due_ms = if rows.len() == limit {
                Some(at.now_ms)
            } else {
                jobs::next_due(&mut tx, queue, at).await?
            };
            claimed.push(Claimed {
                queue,
                rows,
                next_due_ms,
                taken_over: over,
            });
        }
        tx.commit().await?;
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters
            .writes
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        if refused > 0 {
            self.counters
                .fenced
                .fetch_add(refused as u64, Ordering::Relaxed);
            tracing::warn!(
                refused,
                "settlements of jobs another node claimed since were refused"
            );
        }
        Ok(claimed)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> anyhow::Result<()> {
        self.read(async |c| {
            sqlx::query("SELECT 1").execute(c).await?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id: SessionId) -> anyhow::Result<Option<Session>> {
        self.read(async |c| sessions::find(c, id).await).await
    }

    async fn visible_sessions(
        &self,
        owner: &ClientId,
        device_key: &str,
    ) -> anyhow::Result<Vec<Session>> {
        self.read(async |c| sessions::visible_for_device(c, owner, device_key).await)
            .await
    }

    async fn create_session(
        &self,
        session: Session,
        device_keys: Vec<String>,
        quota: u64,
        planned: Effects,
    ) -> anyhow::Result<(Created, Effects)> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let create = Box::new(creates::Create::new(session, device_keys, quota));
        self.batched(batch::Op::Create {
            create,
            fx: planned,
            reply,
        })
        .await?;
        answer.await?
    }

    async fn change_session(
        &self,
        id: SessionId,
        decide: Decide,
    ) -> anyhow::Result<(Box<dyn Any + Send>, Effects)> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batched(batch::Op::Change { id, decide, reply })
            .await?;
        answer.await?
    }

    async fn commit(&self, planned: Effects) -> anyhow::Result<Effects> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batched(batch::Op::Commit { fx: planned, reply })
            .await?;
        answer.await?
    }

    async fn queue_round(
        &self,
        owner: &str,
        settlements: Arc<Vec<Settlement>>,
        claims: Vec<Claim>,
        at: RoundTime,
    ) -> anyhow::Result<Vec<Claimed>> {
        self.round(owner, &settlements, claims, at)
            .await
            .map_err(classify)
    }

    async fn release_claims(&self, owner: Option<&str>) -> anyhow::Result<usize> {
        self.read(async |c| match owner {
            Some(owner) => jobs::release_owned(c, owner).await,
            None => jobs::release_all(c).await,
        })
        .await
    }

    async fn adopt_legacy_jobs(&self) -> anyhow::Result<usize> {
        // No earlier version kept its queue in PostgreSQL.
        Ok(0)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn renew_leases(&self, owner: &str, wall_ms: i64) -> anyhow::Result<usize> {
        let until = wall_ms.saturating_add(self.lease_ms);
        self.read(async |c| jobs::renew(c, owner, until).await)
            .await
    }

    async fn lead(
        &self,
        role: &str,
        holder: &str,
        wall_ms: i64,
        ttl: Duration,
    ) -> anyhow::Result<bool> {
        let until = wall_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self.read(async |c| {
            let held: Option<String> = sqlx::query_scalar(
                "INSERT INTO leaders (role, holder, until_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (role) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms \
                 WHERE leaders.holder = EXCLUDED.holder OR leaders.until_ms < $4 \
                 RETURNING holder",
            )
            .bind(role)
            .bind(holder)
            .bind(until)
            .bind(wall_ms)
            .fetch_optional(c)
            .await?;
            Ok(held.is_some())
        })
        .await
    }

    async fn listen_for_jobs(&self, wake: &(dyn Fn(JobWake) + Send + Sync)) -> anyhow::Result<()> {
        listener::run(&self.pool, JOBS_CHANNEL, wake).await
    }

    async fn notification_for_delivery(&self, id: Uuid) -> anyhow::Result<Option<ForDelivery>> {
        self.read(async |c| notifications::find_for_delivery(c, id).await)
            .await
    }

    async fn retry_notification(
        &self,
        id: Uuid,
        attempts: u32,
        error: String,
        next: DateTime<Utc>,
        job: ScheduledJob,
    ) -> anyhow::Result<Effects> {
        async {
            let mut tx = self.begin().await?;
            notifications::record_retry(&mut tx, id, attempts, &error, next).await?;
            let mut fx = Effects::default();
            fx.schedule(job);
            self.finish(tx, &fx).await?;
            Ok(fx)
        }
        .await
        .map_err(classify)
    }

    async fn settle_notification(
        &self,
        settled: Settled,
        next: fn(Uuid, DateTime<Utc>) -> ScheduledJob,
    ) -> anyhow::Result<Effects> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batched(batch::Op::Settle {
            settled,
            next,
            reply,
            inputs: Vec::new(),
        })
        .await?;
        answer.await?
    }

    async fn mark_sink_gone(&self, sink: String, at: DateTime<Utc>) -> anyhow::Result<()> {
        async {
            let mut tx = self.begin().await?;
            notifications::mark_gone(&mut tx, &sink, at).await?;
            self.finish(tx, &Effects::default()).await
        }
        .await
        .map_err(classify)
    }

    async fn revive_notification(&self, id: Uuid, job: ScheduledJob) -> anyhow::Result<bool> {
        async {
            let mut tx = self.begin().await?;
            let Some(sink) = notifications::revive(&mut tx, id).await? else {
                return Ok(false);
            };
            notifications::forget_gone(&mut tx, &sink).await?;
            let mut fx = Effects::default();
            fx.schedule(job);
            self.finish(tx, &fx).await?;
            Ok(true)
        }
        .await
        .map_err(classify)
    }

    async fn read_history(
        &self,
        filter: HistoryFilter,
        mut each: HistorySink,
    ) -> anyhow::Result<u64> {
        self.read(async |c| inputs::read_history(c, filter, &mut each).await)
            .await
    }

    async fn read_transitions(&self, mut each: HistorySink) -> anyhow::Result<u64> {
        self.read(async |c| inputs::read_transitions(c, &mut each).await)
            .await
    }

    async fn notifications(&self, filter: NotificationFilter) -> anyhow::Result<Vec<Notification>> {
        self.read(async |c| {
            notifications::list(c, filter.state, filter.session, filter.limit).await
        })
        .await
    }

    async fn census(&self, now_ms: i64) -> anyhow::Result<Census> {
        self.read(async |c| {
            let (dead_notifications, oldest_dead_ms) = notifications::dead(c).await?;
            Ok(Census {
                sessions: sessions::census(c).await?,
                dead_notifications,
                oldest_dead_ms,
                queues: jobs::depth(c, now_ms).await?,
            })
        })
        .await
    }

    async fn purge_history(&self, before_ms: i64, batch: usize) -> anyhow::Result<Purged> {
        async {
            let mut tx = self.pool.begin().await?;
            let purged = history::purge(&mut tx, before_ms, batch).await?;
            tx.commit().await?;
            Ok(purged)
        }
        .await
        .map_err(classify)
    }

    fn write_counts(&self) -> WriteCounts {
        let c = &self.counters;
        WriteCounts {
            commits: c.commits.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            fenced: c.fenced.load(Ordering::Relaxed),
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl GrantLedger for PgStore {
    async fn provision(
        &self,
        session: SessionId,
        fresh_id: String,
        refuse: bool,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Provisioned> {
        // A concurrent provisioning of the same session may win the insert between this
        // statement's look and its insert: the second try then finds that grant.
        for _ in 0..2 {
            let now_held = self
                .read(async |c| ledger::provision(c, &fresh_id, session, refuse, now, until).await)
                .await?;
            match now_held {
                Some(g) if g.released => return Ok(Provisioned::AlreadyReleased),
                Some(g) => return Ok(Provisioned::Granted(g.grant_id)),
                None if refuse => return Ok(Provisioned::Refused),
                None => continue,
            }
        }
        anyhow::bail!("the grant of session {session} was neither found nor recorded")
    }

    async fn extend(
        &self,
        session: SessionId,
        grant_id: Option<String>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Option<String>> {
        self.read(async |c| ledger::extend(c, session, grant_id.as_deref(), until).await)
            .await
    }

    async fn release(
        &self,
        session: SessionId,
        grant_id: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.read(async |c| ledger::release(c, session, grant_id.as_deref(), now).await)
            .await
    }

    async fn active(&self) -> anyhow::Result<i64> {
        self.read(async |c| ledger::active_count(c).await).await
    }
}
