//! `qod history generate`: a synthetic history from a seed. The commands are drawn up front
//! (creates through v0 and v1, overlapping creates, extends, deletes); the network and the
//! sinks are synthetic peers whose every answer is a draw keyed by what was asked (so that it
//! does not depend on the order jobs run in); the run goes through the same virtual-time loop
//! as a replay, with recording on, and its store is exported: the history is what this build
//! did with those inputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::history::Step;
use super::peers::Answering;
use crate::network::{Grant, GrantRef, Network, NetworkError, ProvisionRequest};
use crate::notify::CallbackSink;
use crate::notify::sink_client::Outcome;

/// The shares of each kind of event (`--mix key=value,...`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Sessions created through v0 (the rest through v1).
    pub v0: f64,
    /// Sessions with a sink.
    pub sink: f64,
    /// Sessions deleted before they end.
    pub delete: f64,
    /// Sessions extended once.
    pub extend: f64,
    /// Creates sent twice (the second overlaps and is refused).
    pub overlap: f64,
    /// Provisionings the network refuses for good.
    pub refuse: f64,
    /// Network calls that fail and are retried.
    pub fail: f64,
    /// Grant renewals the network refuses (the session ends NETWORK_TERMINATED).
    pub terminate: f64,
    /// Sinks that fail their first two attempts.
    pub sink_fail: f64,
    /// Sinks that answer after 3 s.
    pub sink_slow: f64,
    /// Sinks that answer 410 Gone.
    pub sink_gone: f64,
    /// Session durations, seconds.
    pub min_duration: u64,
    pub max_duration: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            v0: 0.2,
            sink: 0.8,
            delete: 0.2,
            extend: 0.2,
            overlap: 0.05,
            refuse: 0.02,
            fail: 0.02,
            terminate: 0.01,
            sink_fail: 0.05,
            sink_slow: 0.02,
            sink_gone: 0.01,
            min_duration: 60,
            max_duration: 7200,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut mix = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=value"))?;
            let share = || -> Result<f64, String> {
                let v: f64 = value
                    .parse()
                    .map_err(|_| format!("{key}={value}: not a number"))?;
                if (0.0..=1.0).contains(&v) {
                    Ok(v)
                } else {
                    Err(format!("{key}={value}: a share from 0 to 1"))
                }
            };
            let secs = || -> Result<u64, String> {
                value
                    .parse()
                    .map_err(|_| format!("{key}={value}: not a whole number of seconds"))
            };
            match key {
                "v0" => mix.v0 = share()?,
                "sink" => mix.sink = share()?,
                "delete" => mix.delete = share()?,
                "extend" => mix.extend = share()?,
                "overlap" => mix.overlap = share()?,
                "refuse" => mix.refuse = share()?,
                "fail" => mix.fail = share()?,
                "terminate" => mix.terminate = share()?,
                "sink_fail" => mix.sink_fail = share()?,
                "sink_slow" => mix.sink_slow = share()?,
                "sink_gone" => mix.sink_gone = share()?,
                "min_duration" => mix.min_duration = secs()?,
                "max_duration" => mix.max_duration = secs()?,
                other => return Err(format!("unknown mix key {other:?}")),
            }
        }
        if !(1..=86_400).contains(&mix.min_duration) || mix.min_duration > mix.max_duration {
            return Err("durations: 1 <= min_duration <= max_duration <= 86400".into());
        }
        mix.max_duration = mix.max_duration.min(86_400);
        Ok(mix)
    }
}

/// The commands of `sessions` sessions created over `span_ms` from `start_ms`, in time order.
/// A create's session is named `@n` (the n-th create); extends and deletes name it so.
pub fn commands(sessions: u64, start_ms: i64, span_ms: i64, mix: &Mix, seed: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let profiles = ["QOS_E", "QOS_S", "QOS_M", "QOS_L"];
    let mut steps = Vec::new();
    let mut names = super::history::Names::default();
    for n in 0..sessions {
        let at = start_ms + rng.random_range(0..span_ms.max(1));
        let api = if rng.random_bool(mix.v0) { "v0" } else { "v1" };
        let client = format!("client-{}", rng.random_range(1..=8));
        let duration = rng.random_range(mix.min_duration..=mix.max_duration);
        let mut body = json!({
            "device": {"phoneNumber": format!("+3361{:07}", rng.random_range(0..10_000_000))},
            "applicationServer": {"ipv4Address": format!("198.51.100.{}", rng.random_range(1..255))},
            "qosProfile": profiles[rng.random_range(0..profiles.len())],
            "duration": duration,
        });
        if rng.random_bool(mix.sink) {
            body["sink"] = json!(format!("https://consumer-{client}.example/qod/events"));
        }
        let name = format!("@{n}");
        let (api, client) = (names.get(api), names.get(&client));
        let mut command = |at_ms: i64, op: &str, body: Option<serde_json::Value>| Step::Command {
            at_ms,
            api: api.clone(),
            op: names.get(op),
            client: client.clone(),
            phone: None,
            body: body.map(|b| b.to_string().into_boxed_str()),
            status: 0,
            session: Some(name.clone()),
        };
        steps.push(command(at, "create", Some(body.clone())));
        if rng.random_bool(mix.overlap) {
            let again = at + rng.random_range(1..2_000);
            let mut twice = command(again, "create", Some(body));
            if let Step::Command { session, .. } = &mut twice {
                *session = Some(format!("@{n}/overlap"));
            }
            steps.push(twice);
        }
        let life_ms = i64::try_from(duration).unwrap_or(i64::MAX) * 1000;
        if rng.random_bool(mix.extend) {
            let when = at + rng.random_range(1_000..(life_ms / 2).max(1_001));
            let extra = rng.random_range(60..=600);
            steps.push(command(
                when,
                "extend",
                Some(json!({"requestedAdditionalDuration": extra})),
            ));
        }
        if rng.random_bool(mix.delete) {
            let when = at + rng.random_range(1_000..life_ms.max(1_001));
            steps.push(command(when, "delete", None));
        }
    }
    steps.sort_by_key(Step::at_ms);
    steps
}

/// A draw in [0, 1) keyed by `key` under `seed`: the same key draws the same value.
fn draw(seed: u64, key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // SplitMix64's finaliser spreads FNV's low-entropy high bits.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// How many times each (session, question) was asked so far.
#[derive(Default)]
struct Asked(Mutex<HashMap<String, u32>>);

impl Asked {
    fn next(&self, key: String) -> String {
        let mut asked = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = asked.entry(key.clone()).or_default();
        *n += 1;
        format!("{key}/{n}")
    }
}

/// A network that answers after 5 to 50 ms of virtual time, refusing, failing and ending
/// grants as the mix says.
pub struct SyntheticNetwork {
    mix: Mix,
    seed: u64,
    asked: Asked,
    answering: Answering,
}

impl SyntheticNetwork {
    pub fn new(mix: Mix, seed: u64, answering: Answering) -> Arc<Self> {
        Arc::new(Self {
            mix,
            seed,
            asked: Asked::default(),
            answering,
        })
    }

    /// Waits the call's latency; returns the draw deciding its answer.
    async fn ask(&self, session: &str, op: &str) -> f64 {
        let key = self.asked.next(format!("{session}/{op}"));
        let latency = 5 + (draw(self.seed, &format!("{key}/latency")) * 45.0) as i64;
        self.answering.after(latency).await;
        draw(self.seed, &key)
    }
}

#[async_trait]
impl Network for SyntheticNetwork {
    async fn provision(&self, req: &ProvisionRequest) -> Result<Grant, NetworkError> {
        let session = req.session.to_string();
        let d = self.ask(&session, "provision").await;
        if d < self.mix.fail {
            return Err(NetworkError::Retryable("synthetic outage".into()));
        }
        // Refusals are decided once per session, not per attempt.
        if draw(self.seed, &format!("{session}/refuse")) < self.mix.refuse {
            return Err(NetworkError::Refused("synthetic refusal".into()));
        }
        Ok(Grant {
            id: format!("syn-{session}"),
            lease_until: Some(req.until),
            confirmed: true,
        })
    }

    async fn renew(&self, grant: &GrantRef, until: DateTime<Utc>) -> Result<Grant, NetworkError> {
        let session = grant.session.to_string();
        let d = self.ask(&session, "renew").await;
        if d < self.mix.terminate {
            return Err(NetworkError::Refused("synthetic termination".into()));
        }
        if d < self.mix.terminate + self.mix.fail {
            return Err(NetworkError::Retryable("synthetic outage".into()));
        }
        Ok(Grant {
            id: grant
                .grant_id
                .clone()
                .unwrap_or_else(|| format!("syn-{session}")),
            lease_until: Some(until),
            confirmed: true,
        })
    }

    async fn release(&self, grant: &GrantRef) -> Result<(), NetworkError> {
        let d = self.ask(&grant.session.to_string(), "release").await;
        if d < self.mix.fail {
            return Err(NetworkError::Retryable("synthetic outage".into()));
        }
        Ok(())
    }
}

/// Sinks that deliver after 2 to 20 ms, except those the mix makes fail, slow or gone.
pub struct SyntheticSinks {
    mix: Mix,
    seed: u64,
    asked: Asked,
    answering: Answering,
}

impl SyntheticSinks {
    pub fn new(mix: Mix, seed: u64, answering: Answering) -> Arc<Self> {
        Arc::new(Self {
            mix,
            seed,
            asked: Asked::default(),
            answering,
        })
    }
}

#[async_trait]
impl CallbackSink for SyntheticSinks {
    async fn post(
        &self,
        _sink: &str,
        body: Vec<u8>,
        _bearer: Option<&str>,
        _now: DateTime<Utc>,
    ) -> Outcome {
        let session = super::peers::session_of_event(&body);
        let key = self.asked.next(format!("{session}/sink"));
        let attempt: u32 = key
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let kind = draw(self.seed, &format!("{session}/sink-kind"));
        let (failing, slow, gone) = (
            self.mix.sink_fail,
            self.mix.sink_fail + self.mix.sink_slow,
            self.mix.sink_fail + self.mix.sink_slow + self.mix.sink_gone,
        );
        let latency_ms = if (failing..slow).contains(&kind) {
            3_000
        } else {
            2 + (draw(self.seed, &key) * 18.0) as i64
        };
        self.answering.after(latency_ms).await;
        if kind < failing && attempt <= 2 {
            Outcome::Retry {
                error: "sink answered 500 Internal Server Error".into(),
                retry_after: None,
            }
        } else if (slow..gone).contains(&kind) {
            Outcome::Gone
        } else {
            Outcome::Delivered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_reads_its_keys_and_refuses_what_it_does_not_know() {
        let mix: Mix = "v0=0.5, refuse=0, max_duration=600".parse().unwrap();
        assert_eq!((mix.v0, mix.refuse, mix.max_duration), (0.5, 0.0, 600));
        assert_eq!(mix.sink, Mix::default().sink);
        assert!("v0=2".parse::<Mix>().unwrap_err().contains("0 to 1"));
        assert!("nope=1".parse::<Mix>().unwrap_err().contains("unknown"));
        assert!("min_duration=10,max_duration=5".parse::<Mix>().is_err());
    }

    #[test]
    fn the_same_seed_draws_the_same_commands_and_another_seed_others() {
        let mix = Mix::default();
        let a = commands(200, 0, 3_600_000, &mix, 7);
        let b = commands(200, 0, 3_600_000, &mix, 7);
        let c = commands(200, 0, 3_600_000, &mix, 8);
        let show = |s: &[Step]| format!("{s:?}");
        assert_eq!(show(&a), show(&b));
        assert_ne!(show(&a), show(&c));
        let creates = a
            .iter()
            .filter(|s| matches!(s, Step::Command { op, .. } if &**op == "create"))
            .count();
        assert!((200..260).contains(&creates), "{creates}");
        assert!(a.windows(2).all(|w| w[0].at_ms() <= w[1].at_ms()));
        let draws: Vec<f64> = (0..1000).map(|i| draw(1, &i.to_string())).collect();
        let mean = draws.iter().sum::<f64>() / 1000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
