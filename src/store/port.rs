//! The storage port, in domain terms. The domain decides and the store applies: a change of a
//! session is a decision over the session as the store read it for writing, and the store
//! commits it with the events, notifications and jobs it implies, in one transaction. A write
//! whose session is not the revision the store read is refused (`StaleRevision`), never
//! silently dropped. Implementations: SQLite (`super::sqlite`, one process) and PostgreSQL
//! (`super::postgres`, several nodes); every one must pass the conformance suite
//! (`tests/store_conformance.rs`).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::fence::Fence;
use super::{ClaimedRow, Depth, ForDelivery, Notification, Purged};
use crate::domain::{ClientId, GrantState, QosStatus, Session, SessionId};
use crate::lifecycle::{Effects, ScheduledJob};

/// What a decision does to the session it read.
#[derive(Debug)]
pub enum Write {
    Nothing,
    /// Store this new state; its revision must be past the one read.
    Update(Box<Session>),
    /// Remove the session (purged).
    Delete,
}

impl Write {
    pub fn update(session: Session) -> Self {
        Self::Update(Box::new(session))
    }

    /// Whether a decision over session `id`, read at revision `read` (None: no such session),
    /// may write this: its own session, a revision past the one read, and a session to write.
    /// Every store checks it before writing.
    pub fn check(&self, id: SessionId, read: Option<i64>) -> anyhow::Result<()> {
        match (self, read) {
            (Self::Nothing, _) => Ok(()),
            (Self::Update(s), Some(stored)) => {
                anyhow::ensure!(s.id == id, "a change of {id} wrote session {}", s.id);
                if s.revision <= stored {
                    return Err(StaleRevision {
                        id,
                        written: s.revision,
                        stored,
                    }
                    .into());
                }
                Ok(())
            }
            (Self::Delete, Some(_)) => Ok(()),
            (_, None) => anyhow::bail!("a change of {id} wrote a session that does not exist"),
        }
    }
}

/// A decision over the session as read inside the write (None: there is no such session). It
/// records what it implies in the effects and returns a value for its caller.
pub type Decide = Box<
    dyn FnOnce(Option<Session>, &mut Effects) -> anyhow::Result<(Write, Box<dyn Any + Send>)>
        + Send,
>;

/// The write of a decision was not based on the revision the store holds.
#[derive(Debug, thiserror::Error)]
#[error("session {id}: write based on revision {written} but the store holds {stored}")]
pub struct StaleRevision {
    pub id: SessionId,
    pub written: i64,
    pub stored: i64,
}

/// What became of a create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Stored,
    /// The flow overlaps a live session of the same device.
    Conflict,
    /// The owner holds its maximum of live sessions.
    QuotaExceeded,
}

/// What a worker reports about a job it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Each names the job as claimed: a settlement of a claim that another node took over since
/// is refused.
pub enum Settlement {
    /// Finished (succeeded, gave up or could not be decoded): delete the row.
    Done(Fence),
    /// Run it again as attempt `attempt` at `due_at_ms`.
    Retry {
        fence: Fence,
        attempt: u32,
        due_at_ms: i64,
    },
}

/// The two times a dispatcher round reads. Due times are on the clock port (virtual in tests
/// and replays); leases are on the wall clock, which every node shares: a lease guards against
/// a real process that stopped, which a jump of virtual time must not look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundTime {
    /// The clock port's now (ms): which jobs are due.
    pub now_ms: i64,
    /// The wall clock's now (ms): which leases lapsed, and where new ones end.
    pub wall_ms: i64,
}

impl RoundTime {
    /// One instant on both clocks (a store of one process, or a test that moves both).
    pub fn at(ms: i64) -> Self {
        Self {
            now_ms: ms,
            wall_ms: ms,
        }
    }
}

/// One queue's claim in a dispatcher round.
#[derive(Debug, Clone)]
pub struct Claim {
    pub queue: &'static str,
    pub limit: usize,
}

/// What a round claimed for one queue, and the earliest due time of its jobs still waiting
/// (`now` when the claim was full; on a shared store also the moment a claim of a due job
/// lapses, when another node's jobs pass to this one).
#[derive(Debug)]
pub struct Claimed {
    pub queue: &'static str,
    pub rows: Vec<ClaimedRow>,
    pub next_due_ms: Option<i64>,
    /// Of the rows, those taken over from a claim whose lease lapsed (a node died or stalled).
    pub taken_over: usize,
}

/// What another node's commit announced (or that announcements may have been missed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobWake<'a> {
    Pushed { queue: &'a str, due_at_ms: i64 },
    Missed,
}

/// A delivery attempt's end: the event's final state.
#[derive(Debug, Clone)]
pub struct Settled {
    pub id: Uuid,
    pub final_state: &'static str,
    pub attempts: u32,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// Which notifications an operator lists.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub state: Option<&'static str>,
    pub session: Option<SessionId>,
    pub limit: i64,
}

/// Which part of the recorded history to read: `[since_ms, until_ms)`, one session or all.
#[derive(Debug, Clone, Copy)]
pub struct HistoryFilter {
    pub since_ms: i64,
    pub until_ms: i64,
    pub session: Option<SessionId>,
}

/// One row of the recorded history: an input (its JSON as stored) or a transition.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub at_ms: i64,
    pub session: Option<String>,
    pub entry: HistoryEntry,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HistoryEntry {
    Input(String),
    Transition {
        revision: i64,
        from: Option<String>,
        to: String,
        reason: String,
    },
}

/// What reading the history hands each row to.
pub type HistorySink = Box<dyn FnMut(HistoryRow) -> anyhow::Result<()> + Send>;

/// Commits and writes of this process's store so far (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    pub commits: u64,
    pub writes: u64,
    /// Writes and settlements refused because another node holds the job now.
    pub fenced: u64,
}

/// Stored state counted for the gauges of `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Census {
    pub sessions: Vec<SessionCount>,
    pub dead_notifications: i64,
    /// The transition time of the oldest dead notification.
    pub oldest_dead_ms: Option<i64>,
    pub queues: Vec<Depth>,
}

/// Stored sessions of one status, grant state and profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCount {
    pub status: QosStatus,
    pub grant: GrantState,
    pub profile: String,
    pub count: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store answers (readiness).
    async fn ping(&self) -> anyhow::Result<()>;

    /// A session as stored (also deleted ones, which the service hides).
    async fn session(&self, id: SessionId) -> anyhow::Result<Option<Session>>;

    /// An owner's visible sessions of a device, oldest first.
    async fn visible_sessions(
        &self,
        owner: &ClientId,
        device_key: &str,
    ) -> anyhow::Result<Vec<Session>>;

    /// Stores a new session with its effects unless its flow overlaps a live session of the
    /// same owner and device (named by any of `device_keys` or the kept identifier, now or by
    /// that session's request) or its owner holds `quota` live sessions (0: no cap),
    /// atomically with those checks. Other owners' sessions never conflict: tenants learn
    /// nothing of each other and cannot block a device for one another.
    async fn create_session(
        &self,
        session: Session,
        device_keys: Vec<String>,
        quota: u64,
        fx: Effects,
    ) -> anyhow::Result<(Created, Effects)>;

    /// Reads the session for writing, lets `decide` decide, and commits the write with the
    /// effects. Returns the decision's value and the effects as written.
    async fn change_session(
        &self,
        id: SessionId,
        decide: Decide,
    ) -> anyhow::Result<(Box<dyn Any + Send>, Effects)>;

    /// Commits effects that change no session (a job put back for later).
    async fn commit(&self, fx: Effects) -> anyhow::Result<Effects>;

    /// One dispatcher round in one transaction: writes the settlements, then claims up to
    /// each limit of due jobs for `owner`, earliest first. A job is handed to one claim only.
    async fn queue_round(
        &self,
        owner: &str,
        settlements: Arc<Vec<Settlement>>,
        claims: Vec<Claim>,
        at: RoundTime,
    ) -> anyhow::Result<Vec<Claimed>>;

    /// Hands claimed jobs back to the queue: `owner`'s (a node stopping), or all of them
    /// (None: only when no live worker of any process holds one).
    async fn release_claims(&self, owner: Option<&str>) -> anyhow::Result<usize>;

    /// Several processes may work on this store at once (leases, wake-ups and leadership
    /// matter); false for a store that belongs to one process.
    fn shared(&self) -> bool {
        false
    }

    /// Extends the leases of the jobs `owner` holds (the heartbeat of a shared store), from
    /// `wall_ms` on the wall clock.
    async fn renew_leases(&self, _owner: &str, _wall_ms: i64) -> anyhow::Result<usize> {
        Ok(0)
    }

    /// Takes or keeps `role` for `holder` until `wall_ms + ttl` (wall clock, like leases);
    /// false while another holder's term runs. A store of one process has one holder.
    async fn lead(
        &self,
        _role: &str,
        _holder: &str,
        _wall_ms: i64,
        _ttl: Duration,
    ) -> anyhow::Result<bool> {
        Ok(true)
    }

    /// Tells `wake` of jobs other processes commit, until the store closes. A store of one
    /// process has none to tell of and returns at once.
    async fn listen_for_jobs(&self, _wake: &(dyn Fn(JobWake) + Send + Sync)) -> anyhow::Result<()> {
        Ok(())
    }

    /// Moves jobs an earlier version's queue left behind into the queue.
    async fn adopt_legacy_jobs(&self) -> anyhow::Result<usize>;

    /// An event about to be sent, with what decides whether it may go now.
    async fn notification_for_delivery(&self, id: Uuid) -> anyhow::Result<Option<ForDelivery>>;

    /// Records a failed delivery attempt and commits its retry job.
    async fn retry_notification(
        &self,
        id: Uuid,
        attempts: u32,
        error: String,
        next: DateTime<Utc>,
        job: ScheduledJob,
    ) -> anyhow::Result<Effects>;

    /// Ends an event's delivery and, if it was still pending, schedules `next` for the
    /// session's next waiting event.
    async fn settle_notification(
        &self,
        settled: Settled,
        next: fn(Uuid, DateTime<Utc>) -> ScheduledJob,
    ) -> anyhow::Result<Effects>;

    /// Remembers that a sink answered 410 Gone.
    async fn mark_sink_gone(&self, sink: String, at: DateTime<Utc>) -> anyhow::Result<()>;

    /// Puts a dead letter back to pending (its sink vouched for again) with `job`; false when
    /// it is no dead letter.
    async fn revive_notification(&self, id: Uuid, job: ScheduledJob) -> anyhow::Result<bool>;

    /// Notifications for an operator, oldest first.
    async fn notifications(&self, filter: NotificationFilter) -> anyhow::Result<Vec<Notification>>;

    /// What the gauges show.
    async fn census(&self, now_ms: i64) -> anyhow::Result<Census>;

    /// Streams the recorded inputs and transitions `filter` selects to `each`, in time order
    /// (at one millisecond, inputs before transitions, each in the order written); returns
    /// how many rows it read.
    async fn read_history(&self, filter: HistoryFilter, each: HistorySink) -> anyhow::Result<u64>;

    /// Streams every recorded transition to `each`, each session's together in time order (in
    /// the order written within a millisecond: as `read_history` gives them), the sessions in
    /// the order of their ids; returns how many it read. Comparing per session (a replay)
    /// needs no sort of the whole history by time.
    async fn read_transitions(&self, each: HistorySink) -> anyhow::Result<u64>;

    /// Deletes at most `batch` rows per table of history older than `before_ms`: settled
    /// notifications, the events of purged sessions, the released simulated grants of purged
    /// sessions, the recorded inputs of purged sessions. One short write; call again while a table gave a full batch.
    async fn purge_history(&self, before_ms: i64, batch: usize) -> anyhow::Result<Purged>;

    /// Write transactions committed by this process so far, and the writes they carried.
    fn write_counts(&self) -> WriteCounts;

    /// Lets go of connections (end of the process).
    async fn close(&self);
}

pub type SharedStore = Arc<dyn Store>;

/// The simulated network's memory of its grants: the network's state, not ours, kept in the
/// same database only so that tests can count what it holds.
#[async_trait]
pub trait GrantLedger: Send + Sync + 'static {
    /// The session's grant: the existing one, or `fresh_id` recorded now (unless `refuse`).
    async fn provision(
        &self,
        session: SessionId,
        fresh_id: String,
        refuse: bool,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Provisioned>;

    /// Extends an active grant (found by id, or by session); its id, or None if none is active.
    async fn extend(
        &self,
        session: SessionId,
        grant_id: Option<String>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Option<String>>;

    /// Releases the grant (found by id, or by session); unknown grants count as released.
    async fn release(
        &self,
        session: SessionId,
        grant_id: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// Grants held now.
    async fn active(&self) -> anyhow::Result<i64>;
}

/// What the ledger said to a provisioning call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    Granted(String),
    AlreadyReleased,
    Refused,
}
