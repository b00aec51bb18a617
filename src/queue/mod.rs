//! This process's side of the job queue. A single dispatcher task claims due jobs in batches
//! and acknowledges finished ones in batches, in one write transaction per round; each queue
//! ("lane") hands its claimed jobs to its apalis worker through a bounded channel. Commits that
//! enqueue jobs tell the dispatcher at once, so nothing waits for a poll.

mod backend;
mod dispatcher;
mod heartbeat;
mod quiescence;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::locks::lock;
use crate::pools::Pools;
use crate::store::ClaimedRow;

pub use backend::LaneBackend;
pub use dispatcher::run_dispatcher;
pub use heartbeat::{listen, run_heartbeat};
pub use quiescence::TimedWaits;

pub use crate::store::Settlement;

struct Lane {
    sender: mpsc::Sender<ClaimedRow>,
    receiver: Arc<Mutex<mpsc::Receiver<ClaimedRow>>>,
    batch: usize,
    poll: Duration,
    /// Earliest due time (ms) of this lane's waiting jobs as far as this process knows;
    /// `i64::MAX` when none. Lowered by every enqueue, refreshed from the table by claims.
    next_due_ms: AtomicI64,
    /// Jobs of this lane claimed from another node's lapsed lease, so far.
    reclaimed: AtomicU64,
}

/// Settlements reported by workers and not written yet.
#[derive(Default)]
struct Pending {
    settlements: Vec<Settlement>,
    /// The queue and due time of each retry among them.
    retried: Vec<(&'static str, i64)>,
}

impl Pending {
    /// Only finished jobs (no retry), few enough to wait for a round that claims.
    fn only_done(&self) -> bool {
        self.retried.is_empty() && self.settlements.len() < MAX_DEFERRED
    }
}

/// When a round writes the acknowledgements of finished jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// In the next round, one of their own if nothing is to be claimed.
    Promptly,
    /// With the next round that claims, or at stop (a throwaway store, which nothing else
    /// reads): a finished job's row stays claimed meanwhile, so nobody takes it again. A
    /// replay's instant then costs one round instead of two. Retries still go at once: the
    /// lane's next due time waits for them.
    WithNextClaim,
}

/// Acknowledgements held back at most (see `Acks::WithNextClaim`).
const MAX_DEFERRED: usize = 4096;

pub struct JobQueue {
    owner: String,
    /// By name: a round claims its lanes in that order, so that what runs at one instant
    /// runs in the same order in every process (a replay and a generation depend on it).
    lanes: BTreeMap<&'static str, Lane>,
    settlements: Mutex<Pending>,
    wake: Notify,
    /// Jobs handed to workers whose settlement is not written yet (see `quiescence`).
    in_flight: AtomicUsize,
    round_active: AtomicBool,
    /// Claims held back (see `quiescence`).
    held: AtomicBool,
    /// Told each time the dispatcher goes to sleep.
    parked: Notify,
    acks: Acks,
}

impl JobQueue {
    /// One lane per queue. A lane's channel holds up to its worker's concurrency, so that no
    /// more jobs are claimed than can start soon.
    pub fn new(owner: &str, queues: &[&'static str], pools: &Pools, acks: Acks) -> Arc<Self> {
        let lanes = queues
            .iter()
            .map(|&name| {
                let spec = pools.get(name);
                let (sender, receiver) = mpsc::channel(spec.concurrency.max(1));
                let lane = Lane {
                    sender,
                    receiver: Arc::new(Mutex::new(receiver)),
                    batch: spec.batch_size.max(1),
                    poll: spec.poll_interval(),
                    // Unknown until the first round reads the table.
                    next_due_ms: AtomicI64::new(i64::MIN),
                    reclaimed: AtomicU64::new(0),
                };
                (name, lane)
            })
            .collect();
        Arc::new(Self {
            owner: owner.to_owned(),
            lanes,
            settlements: Mutex::default(),
            wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            round_active: AtomicBool::new(false),
            held: AtomicBool::new(false),
            parked: Notify::new(),
            acks,
        })
    }

    /// Jobs claimed from other nodes' lapsed leases so far, by queue.
    pub fn reclaimed(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.lanes
            .iter()
            .map(|(name, lane)| (*name, lane.reclaimed.load(Ordering::Relaxed)))
    }

    /// A job due at `due_at_ms` was committed to `queue`.
    pub fn pushed(&self, queue: &str, due_at_ms: i64) {
        if let Some(lane) = self.lanes.get(queue) {
            let before = lane.next_due_ms.fetch_min(due_at_ms, Ordering::AcqRel);
            if due_at_ms < before {
                self.wake.notify_one();
            }
        }
    }

    /// Records what became of a job; the dispatcher writes it with its next round.
    pub fn settle(&self, settlement: Settlement) {
        lock(&self.settlements).settlements.push(settlement);
        self.wake.notify_one();
    }

    /// Records that a job of `queue` runs again at `due_at_ms`. The dispatcher lowers the
    /// lane's next due time once the round that wrote the retry committed, before the job
    /// stops counting as in flight: lowered any sooner, a round already reading the table could
    /// overwrite it; any later, a replay could see an idle queue and move its clock past the
    /// retry.
    pub fn settle_retry(
        &self,
        queue: &'static str,
        fence: crate::store::fence::Fence,
        attempt: u32,
        due_at_ms: i64,
    ) {
        let mut pending = lock(&self.settlements);
        pending.settlements.push(Settlement::Retry {
            fence,
            attempt,
            due_at_ms,
        });
        pending.retried.push((queue, due_at_ms));
        drop(pending);
        self.wake.notify_one();
    }

    pub(crate) fn receiver(&self, queue: &str) -> Arc<Mutex<mpsc::Receiver<ClaimedRow>>> {
        self.lanes
            .get(queue)
            .map(|l| l.receiver.clone())
            .unwrap_or_else(|| panic!("no lane for queue {queue}"))
    }

    /// A worker took a job from its lane: there is room to claim another.
    fn room_freed(&self) {
        self.wake.notify_one();
    }

    fn take_settlements(&self) -> Pending {
        std::mem::take(&mut *lock(&self.settlements))
    }

    /// Whether the pending settlements wait for a round that claims (see `Acks`).
    fn defers_settlements(&self) -> bool {
        self.acks == Acks::WithNextClaim && lock(&self.settlements).only_done()
    }

    /// Settlements not written yet, and how many of them are finished jobs whose
    /// acknowledgement is held back (see `Acks`): done, though in flight until it is written.
    fn pending_and_deferred(&self) -> (usize, usize) {
        let pending = lock(&self.settlements);
        let deferred = match self.acks {
            Acks::WithNextClaim if pending.only_done() => pending.settlements.len(),
            _ => 0,
        };
        (pending.settlements.len(), deferred)
    }

    fn restore_settlements(&self, mut earlier: Pending) {
        let mut current = lock(&self.settlements);
        earlier.settlements.append(&mut current.settlements);
        earlier.retried.append(&mut current.retried);
        *current = earlier;
    }

    /// The retries of a round that committed are due in their lanes.
    fn retries_written(&self, retried: &[(&'static str, i64)]) {
        for (queue, due_at_ms) in retried {
            if let Some(lane) = self.lanes.get(queue) {
                lane.next_due_ms.fetch_min(*due_at_ms, Ordering::AcqRel);
            }
        }
    }
}
