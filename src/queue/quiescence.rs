//! Telling when this process's queue has nothing left to do at a given time: what a replay in
//! virtual time waits for before it moves the clock on. Jobs count from the moment they are
//! handed to a worker until the round that wrote their settlement committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Cleared while a replay applies the inputs of an instant: a wait ending then ends after
    /// them (at one millisecond, inputs come first).
    open: AtomicBool,
    /// Wakes the waits held meanwhile, in the order they began to wait (a `watch` channel
    /// woke them in an order drawn at random, and what ran at one instant differed from run to
    /// run).
    opened: Notify,
}

impl Default for TimedWaits {
    fn default() -> Self {
        Self {
            due: Default::default(),
            changed: Notify::new(),
            open: AtomicBool::new(true),
            opened: Notify::new(),
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
        let counted = Counted::new(self, at);
        sleep.await;
        // Counted until it ends, or until the work waiting is dropped (a timeout around it):
        // a count left behind would pass a running job off as a waiting one.
        drop(counted);
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.open.load(Ordering::Acquire) {
                return;
            }
            opened.await;
        }
    }

    /// Holds the waits that end from now on until `hold(false)`.
    pub fn hold(&self, held: bool) {
        self.open.store(!held, Ordering::Release);
        if !held {
            self.opened.notify_waiters();
        }
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

/// One wait counted at its instant while it lasts.
struct Counted<'a> {
    waits: &'a TimedWaits,
    at: i64,
}

impl<'a> Counted<'a> {
    fn new(waits: &'a TimedWaits, at: i64) -> Self {
        *super::lock(&waits.due).entry(at).or_default() += 1;
        waits.changed.notify_waiters();
        Self { waits, at }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut due = super::lock(&self.waits.due);
        if let Some(n) = due.get_mut(&self.at) {
            *n -= 1;
            if *n == 0 {
                due.remove(&self.at);
            }
        }
    }
}

impl JobQueue {
    /// No lane has a job due by `now_ms`, no round runs, and every handed-out job is settled
    /// or in a timed wait.
    ///
    /// Read in the reverse order of the dispatcher's writes (it marks a round active, then
    /// blanks the lanes it claims for, hands the claimed jobs out, and only then marks the
    /// round over): a lane seen blanked means the round is seen active, or its jobs seen in
    /// flight. Read the other way round, a claim begun between the two reads looked like an
    /// idle queue and a replay moved its clock past the job.
    ///
    /// Acknowledgements held back for the next claim (`Acks::WithNextClaim`) count as
    /// settled: their jobs are done.
    pub fn idle_at(&self, now_ms: i64, waits: &TimedWaits) -> bool {
        let nothing_due = self
            .lanes
            .values()
            .all(|l| l.next_due_ms.load(Ordering::Acquire) > now_ms);
        if !nothing_due || self.round_active.load(Ordering::Acquire) {
            return false;
        }
        let in_flight = self.in_flight.load(Ordering::Acquire);
        let (pending, deferred) = self.pending_and_deferred();
        pending == deferred && in_flight <= waits.sleeping_at(now_ms) + deferred
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
                biased;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
    }

    #[test]
    fn a_finished_job_waits_for_the_next_claim_only_when_acks_are_deferred() {
        use crate::queue::{Acks, Settlement};
        use crate::store::fence::Fence;
        let waits = TimedWaits::default();
        let now = t0().timestamp_millis();
        let pools = crate::pools::Pools::builtin();
        const Q: &str = "renew_grant";
        for acks in [Acks::Promptly, Acks::WithNextClaim] {
            let queue = JobQueue::new("test", &[Q], &pools, acks);
            queue.lanes[Q]
                .next_due_ms
                .store(i64::MAX, Ordering::Release);
            assert!(queue.idle_at(now, &waits), "{acks:?}: nothing to do");
            queue.in_flight.store(2, Ordering::Release);
            queue.settle(Settlement::Done(Fence { job: 1, epoch: 0 }));
            assert!(!queue.idle_at(now, &waits), "{acks:?}: one job still runs");
            queue.settle(Settlement::Done(Fence { job: 2, epoch: 0 }));
            assert_eq!(
                queue.idle_at(now, &waits),
                acks == Acks::WithNextClaim,
                "{acks:?}: both done, acknowledgements unwritten"
            );
            assert_eq!(queue.defers_settlements(), acks == Acks::WithNextClaim);
            // A retry is written at once: its due time is not known before.
            queue.in_flight.store(3, Ordering::Release);
            queue.settle_retry(Q, Fence { job: 3, epoch: 0 }, 1, now + 1_000);
            assert!(!queue.idle_at(now, &waits), "{acks:?}: a retry unwritten");
            assert!(!queue.defers_settlements(), "{acks:?}: a retry deferred");
        }
    }

    #[tokio::test]
    async fn a_timed_wait_counts_while_it_sleeps_and_not_once_dropped() {
        let clock = ManualClock::new(t0());
        let waits = TimedWaits::default();
        let due = t0() + chrono::Duration::seconds(10);
        let now = t0().timestamp_millis();
        // Polled once (it registers and sleeps), then dropped as a timeout around it would.
        let cut = tokio::time::timeout(
            std::time::Duration::ZERO,
            waits.sleep_until(clock.as_ref(), due),
        );
        let mut cut = Box::pin(cut);
        assert!(futures::poll!(cut.as_mut()).is_pending());
        assert_eq!(waits.sleeping_at(now), 1, "a sleeping wait counts");
        drop(cut);
        assert_eq!(waits.sleeping_at(now), 0, "a dropped wait still counted");
    }

    #[tokio::test]
    async fn a_timed_wait_stops_counting_at_its_instant() {
        let clock = ManualClock::new(t0());
        let waits = std::sync::Arc::new(TimedWaits::default());
        let due = t0() + chrono::Duration::seconds(10);
        let task = {
            let (clock, waits) = (clock.clone(), waits.clone());
            tokio::spawn(async move { waits.sleep_until(clock.as_ref(), due).await })
        };
        while waits.sleeping_at(t0().timestamp_millis()) == 0 {
            tokio::task::yield_now().await;
        }
        clock.set(due);
        task.await.unwrap();
        assert_eq!(waits.sleeping_at(t0().timestamp_millis()), 0);
    }
}
