//! What the service and the workers share: storage, queue, ports, catalogue, metrics.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::NotifySettings;
use crate::domain::Catalogue;
use crate::metrics::Metrics;
use crate::network::Network;
use crate::notify::limiter::SinkLimiter;
use crate::notify::sink_client::SinkClient;
use crate::pools::Pools;
use crate::queue::JobQueue;
use crate::secrets::SecretBox;
use crate::store::SharedStore;

pub struct Core {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub random: crate::random::SharedRandom,
    pub network: Arc<dyn Network>,
    pub catalogue: Catalogue,
    pub pools: Pools,
    pub metrics: Metrics,
    pub queue: Arc<JobQueue>,
    pub secrets: SecretBox,
    pub provision_timeout: Duration,
    pub grant_lifetime: Duration,
    pub retention: Duration,
    /// Active sessions one client may hold; 0 for no cap.
    pub max_active_sessions: u64,
    pub notify: NotifySettings,
    /// The configured public URL, or `http://` and the address actually bound.
    pub public_url: String,
    pub sinks: Arc<SinkClient>,
    pub sink_limiter: SinkLimiter,
    /// This server's callback URLs for network notifications (and their check).
    pub callbacks: crate::network::nef::callback::CallbackUrls,
}
