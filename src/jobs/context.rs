//! What a job handler gets: the shared core, and what jobs alone need (the network, the
//! timings, the pools' retry policies, the notification delivery).

use std::sync::Arc;
use std::time::Duration;

use crate::core::{Core, Timings};
use crate::domain::SessionId;
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
    /// When the timers of a replayed history fired (empty elsewhere).
    pub firings: Arc<TimerFirings>,
}

/// When each timer of a recorded history fired: (session, queue, due time) to the instant its
/// first attempt started. A replay starts a timer then, not at its due time: the recorded run
/// may have started it late (a busy machine), after a command that changed what it found.
#[derive(Debug, Default)]
pub struct TimerFirings {
    pub starts: std::collections::HashMap<(SessionId, &'static str, i64), i64>,
    /// The replay's timed waits, which a timer held back counts in (the replay moves the
    /// clock on to its start).
    pub waits: Option<Arc<crate::queue::TimedWaits>>,
}

impl TimerFirings {
    /// Waits until the first attempt of this timer is to start, if the history says when.
    pub async fn hold(
        &self,
        clock: &dyn crate::clock::Clock,
        session: SessionId,
        queue: &'static str,
        due_ms: i64,
    ) {
        let (Some(waits), Some(&at)) = (&self.waits, self.starts.get(&(session, queue, due_ms)))
        else {
            return;
        };
        waits
            .sleep_until(clock, crate::store::from_millis(at))
            .await;
    }
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
