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
}

pub type SharedRandom = Arc<Random>;

impl Random {
    /// Reproducible draws from `seed`.
    pub fn seeded(seed: u64) -> SharedRandom {
        Arc::new(Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        })
    }

    /// Draws seeded from the operating system (a production server).
    pub fn from_entropy() -> SharedRandom {
        Self::seeded(rand::rng().random())
    }

    fn with<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner()))
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
