//! What the service and the workers share: storage, ports, catalogue, metrics, wake-ups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use sqlx::SqlitePool;

use crate::clock::SharedClock;
use crate::config::NotifySettings;
use crate::domain::Catalogue;
use crate::metrics::Metrics;
use crate::network::Network;
use crate::notify::limiter::SinkLimiter;
use crate::notify::sink_client::SinkClient;
use crate::pools::Pools;

pub struct Core {
    pub pool: SqlitePool,
    pub clock: SharedClock,
    pub network: Arc<dyn Network>,
    pub catalogue: Catalogue,
    pub pools: Pools,
    pub metrics: Metrics,
    pub wakers: Wakers,
    pub provision_timeout: Duration,
    pub retention: Duration,
    pub notify: NotifySettings,
    pub sinks: Arc<SinkClient>,
    pub sink_limiter: SinkLimiter,
}

impl Core {
    /// A write transaction that takes SQLite's write lock up front, so what it reads cannot
    /// change before it commits (the overlap check and every read-modify-write rely on this).
    pub async fn begin_write(&self) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

type WakerMap = HashMap<&'static str, Vec<mpsc::Sender<()>>>;

/// In-process wake-ups for queue workers, so a job due now starts without waiting for the next
/// poll (apalis's idle workers otherwise sleep until their poll interval or heartbeat).
#[derive(Clone, Default)]
pub struct Wakers {
    inner: Arc<Mutex<WakerMap>>,
}

impl Wakers {
    /// A stream of wake signals for one worker of `queue`; dropping it unsubscribes.
    pub fn subscribe(&self, queue: &'static str) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel(1);
        self.lock().entry(queue).or_default().push(tx);
        rx
    }

    pub fn wake(&self, queue: &str) {
        if let Some(senders) = self.lock().get_mut(queue) {
            // A full channel already holds a pending wake-up: nothing is lost by dropping ours.
            senders.retain_mut(|s| !s.is_closed());
            for s in senders.iter_mut() {
                let _ = s.try_send(());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WakerMap> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
