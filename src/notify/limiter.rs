//! At most N deliveries in flight per sink (host and port), so one slow sink cannot take every
//! delivery slot and delay the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct SinkLimiter {
    max: usize,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// Frees its slot when dropped.
#[derive(Debug)]
pub struct SinkPermit {
    key: String,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl SinkLimiter {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            in_flight: Arc::default(),
        }
    }

    pub fn try_acquire(&self, key: &str) -> Option<SinkPermit> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SinkPermit {
            key: key.to_owned(),
            in_flight: self.in_flight.clone(),
        })
    }
}

impl Drop for SinkPermit {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_limited_per_sink_and_returned_on_drop() {
        let l = SinkLimiter::new(2);
        let a = l.try_acquire("a:443").unwrap();
        let _b = l.try_acquire("a:443").unwrap();
        assert!(l.try_acquire("a:443").is_none());
        assert!(l.try_acquire("b:443").is_some());
        drop(a);
        assert!(l.try_acquire("a:443").is_some());
    }
}
