//! What every part of the server shares: the ports (storage, time, randomness), the metrics
//! and the queue's wake-ups. A state change needs exactly these; each part adds what only it
//! needs (`Service`, `jobs::JobContext`, the API's state).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::queue::JobQueue;
use crate::random::SharedRandom;
use crate::store::SharedStore;

pub struct Core {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub random: SharedRandom,
    pub metrics: Metrics,
    pub queue: Arc<JobQueue>,
}

/// The lifecycle's timings, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// REQUESTED longer than this ends NETWORK_TERMINATED.
    pub provision_timeout: Duration,
    /// The longest grant asked of the network; longer sessions renew theirs.
    pub grant_lifetime: Duration,
    /// How long an expired session stays readable.
    pub retention: Duration,
}

impl Timings {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            provision_timeout: settings.provision_timeout,
            grant_lifetime: settings.grant_lifetime,
            retention: settings.retention,
        }
    }
}
