//! Per-client request rate limit: a token bucket per client id (refilled at `rate` per second up
//! to `burst`), in this process's memory. Time comes from the injected clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::domain::ClientId;

pub struct RequestLimiter {
    per_ms: f64,
    burst: f64,
    buckets: Mutex<HashMap<ClientId, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Buckets kept before full (idle) ones are forgotten; a forgotten bucket is a full one.
const TRACKED_CLIENTS: usize = 10_000;

impl RequestLimiter {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_ms: f64::from(per_second) / 1000.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token from the client's bucket, or says how long until one is there.
    pub fn admit(&self, client: &ClientId, now_ms: i64) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= TRACKED_CLIENTS && !buckets.contains_key(client) {
            let (per_ms, burst) = (self.per_ms, self.burst);
            buckets.retain(|_, b| refilled(*b, per_ms, burst, now_ms) < burst);
        }
        let bucket = buckets.entry(client.clone()).or_insert(Bucket {
            tokens: self.burst,
            at_ms: now_ms,
        });
        let tokens = refilled(*bucket, self.per_ms, self.burst, now_ms);
        *bucket = Bucket {
            tokens,
            at_ms: now_ms.max(bucket.at_ms),
        };
        if tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - tokens) / self.per_ms).ceil();
            Err(Duration::from_millis(wait_ms as u64))
        }
    }
}

fn refilled(b: Bucket, per_ms: f64, burst: f64, now_ms: i64) -> f64 {
    let elapsed = (now_ms - b.at_ms).max(0) as f64;
    (b.tokens + elapsed * per_ms).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_wait_for_the_refill() {
        let limiter = RequestLimiter::new(10, 3).unwrap();
        let a = ClientId("a".into());
        for _ in 0..3 {
            assert!(limiter.admit(&a, 0).is_ok());
        }
        let wait = limiter.admit(&a, 0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(limiter.admit(&a, 50).is_err());
        assert!(limiter.admit(&a, 100).is_ok());
        // Another client has its own bucket.
        assert!(limiter.admit(&ClientId("b".into()), 100).is_ok());
    }

    #[test]
    fn zero_means_no_limit_and_idle_clients_are_forgotten() {
        assert!(RequestLimiter::new(0, 10).is_none());
        let limiter = RequestLimiter::new(1000, 1).unwrap();
        for i in 0..TRACKED_CLIENTS + 5 {
            limiter
                .admit(&ClientId(i.to_string()), i64::try_from(i).unwrap() * 10)
                .unwrap();
        }
        assert!(limiter.buckets.lock().unwrap().len() <= TRACKED_CLIENTS);
    }
}
