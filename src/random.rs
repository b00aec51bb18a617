//! The randomness port: every draw that decides behaviour (retry jitter, the simulated
//! network's failures and refusals, session and grant ids) comes from one seedable source, so
//! a run can be reproduced from its seed. Secrets (sealing nonces and keys, signing keys) never
//! come from here: they use the operating system's generator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug)]
pub struct Random {
    rng: Mutex<StdRng>,
    /// The id the next created session takes (a replay names it as the history did).
    next_session: Mutex<Option<uuid::Uuid>>,
}

tokio::task_local! {
    /// The draws of one job: seeded from the job itself, so that what a job draws does not
    /// depend on which other jobs drew before it (they run side by side) nor on the server.
    static STREAM: std::cell::RefCell<StdRng>;
}

pub type SharedRandom = Arc<Random>;

impl Random {
    /// Reproducible draws from `seed`.
    pub fn seeded(seed: u64) -> SharedRandom {
        Arc::new(Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            next_session: Mutex::new(None),
        })
    }

    /// Draws seeded from the operating system (a production server).
    pub fn from_entropy() -> SharedRandom {
        Self::seeded(rand::rng().random())
    }

    fn with<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut f = Some(f);
        if let Ok(out) = STREAM.try_with(|s| (f.take().expect("called once"))(&mut s.borrow_mut()))
        {
            return out;
        }
        (f.take().expect("called once"))(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `work` with draws of its own, seeded from `key` alone (a job and its attempt): the
    /// same job draws the same on every server, so that a replay of a production history
    /// retries when production did (the spread between jobs is what jitter is for, and the
    /// key gives it).
    pub async fn stream<F: Future>(&self, key: &[u8], work: F) -> F::Output {
        // FNV-1a: stable across builds and platforms, unlike std's hashers.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        STREAM
            .scope(std::cell::RefCell::new(StdRng::seed_from_u64(h)), work)
            .await
    }

    /// The id of a new session: the one named by `name_next_session`, else a random one.
    pub fn session_id(&self) -> uuid::Uuid {
        let named = self
            .next_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        named.unwrap_or_else(|| self.uuid())
    }

    /// Names the id the next created session takes (once).
    pub fn name_next_session(&self, id: Option<uuid::Uuid>) {
        *self.next_session.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    /// True with probability `p` (0 never draws).
    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.with(|r| r.random_bool(p.min(1.0)))
    }

    /// A random (version 4) UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Builder::from_random_bytes(self.with(|r| r.random())).into_uuid()
    }

    /// `delay` stretched by a random share of itself, up to twice as long: spreads retries.
    pub fn jitter(&self, delay: Duration) -> Duration {
        delay.mul_f64(1.0 + self.with(|r| r.random::<f64>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_values() {
        let (a, b) = (Random::seeded(7), Random::seeded(7));
        let draw = |r: &Random| (r.uuid(), r.chance(0.5), r.jitter(Duration::from_secs(1)));
        for _ in 0..10 {
            assert_eq!(draw(&a), draw(&b));
        }
        assert_ne!(Random::seeded(8).uuid(), Random::seeded(7).uuid());
    }

    #[tokio::test]
    async fn a_stream_draws_by_its_key_whatever_was_drawn_before_and_whatever_the_seed() {
        let a = Random::seeded(3);
        let first = a.stream(b"job-1", async { a.uuid() }).await;
        let b = Random::seeded(3);
        let _ = b.uuid();
        let _ = b.stream(b"job-2", async { b.uuid() }).await;
        assert_eq!(b.stream(b"job-1", async { b.uuid() }).await, first);
        let other = Random::seeded(4);
        assert_eq!(other.stream(b"job-1", async { other.uuid() }).await, first);
        assert_ne!(other.stream(b"job-2", async { other.uuid() }).await, first);
    }

    #[test]
    fn a_named_session_id_is_taken_once() {
        let r = Random::seeded(1);
        let named = uuid::Uuid::from_u128(42);
        r.name_next_session(Some(named));
        assert_eq!(r.session_id(), named);
        assert_ne!(r.session_id(), named);
    }

    #[test]
    fn jitter_stays_between_once_and_twice_the_delay() {
        let r = Random::seeded(1);
        for _ in 0..1000 {
            let d = r.jitter(Duration::from_millis(100));
            assert!((Duration::from_millis(100)..Duration::from_millis(200)).contains(&d));
        }
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
    }
}
