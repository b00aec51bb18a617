//! Telling when this process's queue has nothing left to do at a given time: what a replay in
//! virtual time waits for before it moves the clock on. Jobs count from the moment they are
//! handed to a worker until the round that wrote their settlement committed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::JobQueue;
use crate::clock::Clock;

/// Jobs waiting for virtual time to pass inside their run (a replay's peer answering when the
/// recording's did): they hold no work that time could not move on.
#[derive(Debug)]
pub struct TimedWaits {
    /// How many waits end at each instant (ms).
    due: std::sync::Mutex<BTreeMap<i64, usize>>,
    changed: Notify,
    /// Closed while a replay applies the inputs of an instant: a wait ending then ends after
    /// them (at one millisecond, inputs come first).
    open: tokio::sync::watch::Sender<bool>,
}

impl Default for TimedWaits {
    fn default() -> Self {
        Self {
            due: Default::default(),
            changed: Notify::new(),
            open: tokio::sync::watch::Sender::new(true),
        }
    }
}

impl TimedWaits {
    /// Sleeps until `due` on `clock`, counted as a timed wait meanwhile.
    pub async fn sleep_until(&self, clock: &dyn Clock, due: DateTime<Utc>) {
        if clock.now() >= due {
            return;
        }
        let at = due.timestamp_millis();
        // The sleeper is on the clock before the wait counts: a replay that sees the wait
        // sees when it ends.
        let sleep = clock.sleep_until(due);
        *super::lock(&self.due).entry(at).or_default() += 1;
        self.changed.notify_waiters();
        sleep.await;
        {
            let mut waits = super::lock(&self.due);
            if let Some(n) = waits.get_mut(&at) {
                *n -= 1;
                if *n == 0 {
                    waits.remove(&at);
                }
            }
        }
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
    }

    /// Holds the waits that end from now on until `hold(false)`.
    pub fn hold(&self, held: bool) {
        self.open.send_replace(!held);
    }

    /// Waits that still sleep at `now_ms` (those due by then are as good as running).
    fn sleeping_at(&self, now_ms: i64) -> usize {
        use std::ops::Bound::{Excluded, Unbounded};
        super::lock(&self.due)
            .range((Excluded(now_ms), Unbounded))
            .map(|(_, n)| n)
            .sum()
    }
}

impl JobQueue {
    /// No round runs, every handed-out job is settled or in a timed wait, and no lane has a job
    /// due by `now_ms`.
    pub fn idle_at(&self, now_ms: i64, waits: &TimedWaits) -> bool {
        !self.round_active.load(Ordering::Acquire)
            && self.in_flight.load(Ordering::Acquire) <= waits.sleeping_at(now_ms)
            && super::lock(&self.settlements).is_empty()
            && self
                .lanes
                .values()
                .all(|l| l.next_due_ms.load(Ordering::Acquire) > now_ms)
    }

    /// Waits until `idle_at(now_ms)`, looking again each time the dispatcher goes to sleep or
    /// a job starts a timed wait.
    pub async fn wait_idle(&self, now_ms: i64, waits: &TimedWaits) {
        loop {
            let parked = self.parked.notified();
            let waiting = waits.changed.notified();
            tokio::pin!(parked, waiting);
            parked.as_mut().enable();
            waiting.as_mut().enable();
            if self.idle_at(now_ms, waits) {
                return;
            }
            tokio::select! {
                () = parked => {}
                () = waiting => {}
            }
        }
    }

    /// The earliest due time of a waiting job, as this process knows it.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.lanes
            .values()
            .map(|l| l.next_due_ms.load(Ordering::Acquire))
            .filter(|due| *due != i64::MAX)
            .min()
    }

    /// Holds claims back (a replay applying the inputs of one instant before its jobs run);
    /// settlements are still written.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::Release);
        if !held {
            self.wake.notify_one();
        }
    }

    /// A job that ends without a settlement (its claim was lost to another node).
    pub fn abandoned(&self) {
        self.finished(1);
    }

    /// `n` handed-out jobs are done with (their settlements written).
    pub(super) fn finished(&self, n: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }
}
