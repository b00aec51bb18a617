//! Worker pool definitions (queue, concurrency, polling, retry policy): data from `workers/`.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;

use crate::random::Random;

const BUILTIN: &str = include_str!("../workers/default.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// 0 = retry forever.
    pub max_attempts: u32,
    pub base_ms: u64,
    pub factor: f32,
    pub cap_ms: u64,
    pub jitter: bool,
    /// Give up on work older than this, whatever the attempt count.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`, given that `attempt` attempts failed (1-based);
    /// jitter, when the policy wants it, is drawn from `random`.
    pub fn delay(&self, attempt: u32, random: &Random) -> Duration {
        let index = attempt.saturating_sub(1).min(64) as usize;
        let delay = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.base_ms))
            .with_factor(self.factor)
            .with_max_delay(Duration::from_millis(self.cap_ms))
            .without_max_times()
            .build()
            .nth(index)
            .unwrap_or(Duration::from_millis(self.cap_ms));
        if self.jitter {
            random.jitter(delay)
        } else {
            delay
        }
    }

    pub fn exhausted(&self, attempt: u32) -> bool {
        self.max_attempts != 0 && attempt >= self.max_attempts
    }

    pub fn too_old(&self, age: Duration) -> bool {
        self.max_age_secs
            .is_some_and(|max| age > Duration::from_secs(max))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub concurrency: usize,
    pub batch_size: usize,
    pub poll_interval_ms: u64,
    pub retry: RetryPolicy,
}

impl PoolSpec {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }
}

/// Pool overrides as an operator writes them: any subset of fields.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolOverride {
    pub concurrency: Option<usize>,
    pub batch_size: Option<usize>,
    pub poll_interval_ms: Option<u64>,
    pub retry: Option<RetryOverride>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    pub max_attempts: Option<u32>,
    pub base_ms: Option<u64>,
    pub factor: Option<f32>,
    pub cap_ms: Option<u64>,
    pub jitter: Option<bool>,
    pub max_age_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Pools {
    specs: BTreeMap<String, PoolSpec>,
}

impl Pools {
    pub fn builtin() -> Self {
        let specs: BTreeMap<String, PoolSpec> =
            toml::from_str(BUILTIN).expect("workers/default.toml is valid");
        Self { specs }
    }

    /// `queue.field=value` for every setting that differs from the built-in pools.
    pub fn changed(&self) -> Vec<String> {
        let builtin = Self::builtin();
        let mut changed = Vec::new();
        for (queue, spec) in &self.specs {
            let Some(base) = builtin.specs.get(queue) else {
                continue;
            };
            let fields = [
                (
                    "concurrency",
                    spec.concurrency.to_string(),
                    base.concurrency.to_string(),
                ),
                (
                    "batch_size",
                    spec.batch_size.to_string(),
                    base.batch_size.to_string(),
                ),
                (
                    "poll_interval_ms",
                    spec.poll_interval_ms.to_string(),
                    base.poll_interval_ms.to_string(),
                ),
                (
                    "retry",
                    format!("{:?}", spec.retry),
                    format!("{:?}", base.retry),
                ),
            ];
            for (field, now, was) in fields {
                if now != was {
                    changed.push(format!("{queue}.{field}={now}"));
                }
            }
        }
        changed
    }

    /// Applies overrides; unknown queue names are an error so typos do not pass silently.
    pub fn with_overrides(
        mut self,
        overrides: &BTreeMap<String, PoolOverride>,
    ) -> anyhow::Result<Self> {
        for (queue, o) in overrides {
            let spec = self
                .specs
                .get_mut(queue)
                .ok_or_else(|| anyhow::anyhow!("workers: unknown queue {queue:?}"))?;
            if let Some(v) = o.concurrency {
                spec.concurrency = v;
            }
            if let Some(v) = o.batch_size {
                spec.batch_size = v;
            }
            if let Some(v) = o.poll_interval_ms {
                spec.poll_interval_ms = v;
            }
            if let Some(r) = &o.retry {
                let p = &mut spec.retry;
                p.max_attempts = r.max_attempts.unwrap_or(p.max_attempts);
                p.base_ms = r.base_ms.unwrap_or(p.base_ms);
                p.factor = r.factor.unwrap_or(p.factor);
                p.cap_ms = r.cap_ms.unwrap_or(p.cap_ms);
                p.jitter = r.jitter.unwrap_or(p.jitter);
                p.max_age_secs = r.max_age_secs.or(p.max_age_secs);
            }
        }
        for (queue, spec) in &self.specs {
            anyhow::ensure!(
                spec.concurrency > 0,
                "workers.{queue}.concurrency must be > 0"
            );
            anyhow::ensure!(
                spec.batch_size > 0,
                "workers.{queue}.batch_size must be > 0"
            );
            anyhow::ensure!(
                spec.retry.factor >= 1.0,
                "workers.{queue}.retry.factor must be >= 1"
            );
        }
        Ok(self)
    }

    pub fn get(&self, queue: &str) -> &PoolSpec {
        self.specs
            .get(queue)
            .unwrap_or_else(|| panic!("no worker pool defined for queue {queue}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pools_define_every_queue() {
        let pools = Pools::builtin();
        for q in crate::jobs::QUEUES {
            assert!(pools.get(q).concurrency > 0);
        }
    }

    #[test]
    fn delays_grow_and_stop_at_the_cap() {
        let p = RetryPolicy {
            max_attempts: 0,
            base_ms: 100,
            factor: 2.0,
            cap_ms: 1000,
            jitter: false,
            max_age_secs: None,
        };
        let d: Vec<u64> = (1..=6)
            .map(|a| p.delay(a, &Random::seeded(0)).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        assert!(!p.exhausted(1_000_000));
        assert!(!p.too_old(Duration::from_secs(1_000_000)));
        let aged = RetryPolicy {
            max_age_secs: Some(60),
            ..p
        };
        assert!(aged.too_old(Duration::from_secs(61)));
        assert!(!aged.too_old(Duration::from_secs(59)));
    }

    #[test]
    fn overrides_change_only_what_they_name_and_reject_unknown_queues() {
        let o: BTreeMap<String, PoolOverride> =
            toml::from_str("[release_grant]\nconcurrency = 3\nretry = { cap_ms = 5 }").unwrap();
        let pools = Pools::builtin().with_overrides(&o).unwrap();
        assert_eq!(pools.get("release_grant").concurrency, 3);
        assert_eq!(pools.get("release_grant").retry.cap_ms, 5);
        assert_eq!(pools.get("release_grant").retry.base_ms, 500);
        let bad: BTreeMap<String, PoolOverride> =
            toml::from_str("[nope]\nconcurrency = 1").unwrap();
        assert!(Pools::builtin().with_overrides(&bad).is_err());
    }
}
