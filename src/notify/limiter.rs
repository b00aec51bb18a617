//! Bounds what one sink can take of the delivery workers: at most `max_in_flight` requests to a
//! sink (host and port) at a time, and at most `max_waiting` more deliveries waiting, in order,
//! for one of those slots. A healthy sink drains a burst at full speed through the waiters; a
//! slow one holds at most `max_in_flight + max_waiting` worker slots, and its other events are
//! rescheduled (with a growing wait), so deliveries to other sinks keep flowing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::SharedClock;

#[derive(Debug)]
struct Entry {
    slots: Arc<Semaphore>,
    waiting: usize,
}

type Entries = Arc<Mutex<HashMap<String, Entry>>>;

pub struct SinkLimiter {
    max_in_flight: usize,
    max_waiting: usize,
    entries: Entries,
    clock: SharedClock,
}

/// A request slot for one sink, returned when dropped.
#[derive(Debug)]
pub struct SinkPermit {
    key: String,
    permit: Option<OwnedSemaphorePermit>,
    max_in_flight: usize,
    entries: Entries,
}

impl SinkLimiter {
    pub fn new(max_in_flight: usize, max_waiting: usize, clock: SharedClock) -> Self {
        Self {
            max_in_flight: max_in_flight.max(1),
            max_waiting,
            entries: Arc::default(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn permit(&self, key: &str, permit: OwnedSemaphorePermit) -> SinkPermit {
        SinkPermit {
            key: key.to_owned(),
            permit: Some(permit),
            max_in_flight: self.max_in_flight,
            entries: self.entries.clone(),
        }
    }

    /// A slot at once, or after waiting at most `patience` in line; None when the line is full
    /// or the wait ran out (the caller reschedules).
    pub async fn acquire(&self, key: &str, patience: Duration) -> Option<SinkPermit> {
        let slots = {
            let mut map = self.lock();
            let entry = map.entry(key.to_owned()).or_insert_with(|| Entry {
                slots: Arc::new(Semaphore::new(self.max_in_flight)),
                waiting: 0,
            });
            if let Ok(p) = entry.slots.clone().try_acquire_owned() {
                return Some(self.permit(key, p));
            }
            if entry.waiting >= self.max_waiting {
                return None;
            }
            entry.waiting += 1;
            entry.slots.clone()
        };
        let waited = self.clock.timeout(patience, slots.acquire_owned()).await;
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(key) {
            entry.waiting -= 1;
        }
        drop(map);
        match waited {
            Some(Ok(p)) => Some(self.permit(key, p)),
            _ => None,
        }
    }
}

impl Drop for SinkPermit {
    fn drop(&mut self) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.permit.take());
        // Forget idle sinks so the table does not grow with every sink ever seen.
        let idle = map
            .get(&self.key)
            .is_some_and(|e| e.waiting == 0 && e.slots.available_permits() == self.max_in_flight);
        if idle {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn limiter(in_flight: usize, waiting: usize) -> SinkLimiter {
        SinkLimiter::new(in_flight, waiting, Arc::new(SystemClock))
    }

    const NOW: Duration = Duration::ZERO;

    #[tokio::test]
    async fn slots_are_limited_per_sink_and_returned_on_drop() {
        let l = limiter(2, 0);
        let a = l.acquire("a:443", NOW).await.unwrap();
        let _b = l.acquire("a:443", NOW).await.unwrap();
        assert!(l.acquire("a:443", NOW).await.is_none());
        assert!(l.acquire("b:443", NOW).await.is_some());
        drop(a);
        assert!(l.acquire("a:443", NOW).await.is_some());
    }

    #[tokio::test]
    async fn waiters_get_freed_slots_in_line_and_the_line_is_bounded() {
        let l = Arc::new(limiter(1, 1));
        let first = l.acquire("s", NOW).await.unwrap();
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire("s", Duration::from_secs(5)).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            l.acquire("s", Duration::from_secs(5)).await.is_none(),
            "line is full"
        );
        drop(first);
        assert!(waiter.await.unwrap(), "the waiter got the freed slot");
        assert!(l.lock().is_empty(), "idle sinks are forgotten");
    }

    #[tokio::test]
    async fn a_waiter_gives_up_after_its_patience() {
        let l = limiter(1, 4);
        let _held = l.acquire("s", NOW).await.unwrap();
        let started = std::time::Instant::now();
        assert!(l.acquire("s", Duration::from_millis(100)).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
