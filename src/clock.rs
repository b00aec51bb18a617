//! The Clock port: every due time, pacing loop, expiry and backoff reads and sleeps on it, so
//! tests and replays control time. `SystemClock` is the wall clock; `ManualClock` is a
//! virtual clock that moves only when told to, and knows when its sleepers are due (what a
//! discrete-event driver needs to jump to the next timer).
//!
//! Timeouts of real I/O (HTTP clients towards sinks, the NEF and the JWKS URL; SQLite's busy
//! timeout) stay on real time: they bound how long a peer may take, which a virtual clock
//! cannot speed up, and their expiry is reported to the logic as an ordinary failure. So do
//! the leases and terms of a shared store: they tell whether a real process still works, and
//! every node reads the same wall clock.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::locks::lock;
use chrono::{DateTime, Utc};

pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once `now() >= due`; at once if it already is.
    fn sleep_until(&self, due: DateTime<Utc>) -> Sleep;
}

pub type SharedClock = Arc<dyn Clock>;

impl dyn Clock {
    /// Resolves after `wait` on this clock; a wait past the end of time never resolves.
    pub fn sleep(&self, wait: Duration) -> Sleep {
        let due = self
            .now()
            .checked_add_signed(to_chrono(wait))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.sleep_until(due)
    }

    /// `work`'s output, or `None` when `limit` passed on this clock first.
    pub async fn timeout<F: Future>(&self, limit: Duration, work: F) -> Option<F::Output> {
        // Biased, as every select a replay runs: the same branch wins a tie in every run.
        tokio::select! {
            biased;
            out = work => Some(out),
            () = self.sleep(limit) => None,
        }
    }

    /// How long since `then` by this clock (zero if `then` is ahead).
    pub fn since(&self, then: DateTime<Utc>) -> Duration {
        (self.now() - then).to_std().unwrap_or_default()
    }
}

/// A std duration as chrono's, saturating instead of failing on absurd values.
pub fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, due: DateTime<Utc>) -> Sleep {
        Box::pin(async move {
            // tokio's timer is monotonic and the wall clock may be stepped: look again on waking.
            while let Ok(wait) = (due - Utc::now()).to_std() {
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// Virtual time: stands still until `advance` or `set` moves it (never backwards). A move
/// wakes the sleepers it made due, and only those, earliest first and, at one instant, in the
/// order they began to sleep: what runs at an instant runs in the same order in every run.
#[derive(Debug)]
pub struct ManualClock {
    state: Arc<Mutex<Virtual>>,
}

#[derive(Debug)]
struct Virtual {
    now: DateTime<Utc>,
    next_id: u64,
    /// Every sleeper by due time and arrival, with its task once it has been polled.
    due: BTreeMap<(DateTime<Utc>, u64), Option<Waker>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            state: Arc::new(Mutex::new(Virtual {
                now: start,
                next_id: 0,
                due: BTreeMap::new(),
            })),
        })
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let to = self.now() + to_chrono(by);
        self.set(to);
    }

    /// Moves time forward to `to`; an earlier instant is ignored.
    pub fn set(&self, to: DateTime<Utc>) {
        let woken: Vec<Waker> = {
            let mut state = lock(&self.state);
            if to <= state.now {
                return;
            }
            state.now = to;
            state
                .due
                .iter_mut()
                .take_while(|((at, _), _)| *at <= to)
                .filter_map(|(_, waker)| waker.take())
                .collect()
        };
        // Outside the lock: a woken task may run at once and read the clock.
        woken.into_iter().for_each(Waker::wake);
    }

    /// The earliest due time of anyone sleeping on this clock.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        lock(&self.state).due.keys().next().map(|(at, _)| *at)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        lock(&self.state).now
    }

    fn sleep_until(&self, due: DateTime<Utc>) -> Sleep {
        // Registered at once, not when first polled: whoever asks `next_wake` right after
        // this call (a replay about to move time) must see this sleeper.
        let key = {
            let mut state = lock(&self.state);
            if state.now >= due {
                return Box::pin(std::future::ready(()));
            }
            state.next_id += 1;
            let key = (due, state.next_id);
            state.due.insert(key, None);
            key
        };
        Box::pin(ManualSleep {
            state: self.state.clone(),
            key,
        })
    }
}

/// A sleeper on a `ManualClock`: forgotten when it wakes or is dropped.
struct ManualSleep {
    state: Arc<Mutex<Virtual>>,
    key: (DateTime<Utc>, u64),
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if state.now >= self.key.0 {
            state.due.remove(&self.key);
            return Poll::Ready(());
        }
        if let Some(waker) = state.due.get_mut(&self.key) {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        lock(&self.state).due.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[tokio::test]
    async fn a_wait_past_the_end_of_time_never_resolves_and_does_not_panic() {
        use futures::FutureExt;
        let clock: SharedClock = ManualClock::new(t0());
        let forever = clock.sleep(Duration::from_secs(u64::MAX / 4));
        let manual = ManualClock::new(t0());
        assert_eq!(
            (manual.clone() as SharedClock)
                .sleep(Duration::MAX)
                .now_or_never(),
            None
        );
        assert_eq!(manual.next_wake(), None, "a dropped sleeper is gone");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), forever)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_their_time_comes() {
        let clock = ManualClock::new(t0());
        let shared: SharedClock = clock.clone();
        let due = t0() + chrono::Duration::hours(1);
        let sleeper = tokio::spawn(shared.sleep_until(due));
        while clock.next_wake().is_none() {
            tokio::task::yield_now().await;
        }
        assert_eq!(clock.next_wake(), Some(due));
        clock.advance(Duration::from_secs(3599));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke a second early");
        clock.advance(Duration::from_secs(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), due);
        assert_eq!(clock.next_wake(), None, "a woken sleeper is forgotten");
    }

    #[tokio::test]
    async fn a_manual_clock_never_goes_back_and_times_out_on_its_own_time() {
        let clock = ManualClock::new(t0());
        clock.set(t0() - chrono::Duration::seconds(5));
        assert_eq!(clock.now(), t0());
        let shared: SharedClock = clock.clone();
        let waiting = tokio::spawn(async move {
            shared
                .timeout(Duration::from_secs(30), std::future::pending::<()>())
                .await
        });
        while clock.next_wake().is_none() {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_secs(30));
        assert_eq!(waiting.await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_system_clock_sleeps_until_the_instant() {
        let clock: SharedClock = Arc::new(SystemClock);
        let due = clock.now() + chrono::Duration::milliseconds(30);
        clock.sleep_until(due).await;
        assert!(clock.now() >= due);
    }
}
