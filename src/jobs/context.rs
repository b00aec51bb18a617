//! What a job handler gets: the shared core, and what jobs alone need (the network, the
//! timings, the pools' retry policies, the notification delivery).

use std::sync::Arc;
use std::time::Duration;

use crate::core::{Core, Timings};
use crate::network::Network;
use crate::notify::CallbackSink;
use crate::notify::limiter::SinkLimiter;
use crate::pools::Pools;
use crate::secrets::SecretBox;

pub struct JobContext {
    pub core: Arc<Core>,
    pub network: Arc<dyn Network>,
    pub timings: Timings,
    pub pools: Pools,
    pub delivery: Delivery,
    /// Whether jobs record the inputs they meet (`recording`).
    pub record_inputs: bool,
}

/// Sending notifications to consumers' sinks.
pub struct Delivery {
    pub sinks: Arc<dyn CallbackSink>,
    pub limiter: SinkLimiter,
    /// Opens the sealed sink tokens.
    pub secrets: Arc<SecretBox>,
    /// A delivery attempt's time limit; also how long a delivery waits for its sink's turn.
    pub timeout: Duration,
    /// This server's URL, the CloudEvents `source`.
    pub public_url: String,
}

impl std::ops::Deref for JobContext {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
