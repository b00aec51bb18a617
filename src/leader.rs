//! Leadership for maintenance that must run once per database (the history purge): on a
//! shared store one node holds the role for a term it renews every third of it; when that node
//! dies or stalls, another takes the role within a term. A store of one process always leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::store::SharedStore;

pub const MAINTENANCE: &str = "maintenance";

#[derive(Debug)]
pub struct Leadership {
    held: AtomicBool,
}

impl Leadership {
    /// Held from the start (one process), or only once won (shared store).
    pub fn new(held: bool) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicBool::new(held),
        })
    }

    pub fn held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// One bid for the role (or its renewal). A node makes one before it serves, so that a
    /// lone node counts the database for `/metrics` from its first answer.
    pub async fn contend(&self, store: &SharedStore, holder: &str, term: Duration) {
        // Terms are on the wall clock, like leases: virtual time does not stop a node.
        let wall_ms = chrono::Utc::now().timestamp_millis();
        let held = match store.lead(MAINTENANCE, holder, wall_ms, term).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "renewing the maintenance role failed");
                false
            }
        };
        if held != self.held.swap(held, Ordering::AcqRel) {
            tracing::info!(
                held,
                "maintenance role (history purge, database metrics) {}",
                if held { "taken" } else { "lost" }
            );
        }
    }

    /// Competes for `role` until `stop`; a failed renewal gives the role up at once (another
    /// node may take it when the term lapses).
    pub async fn run(
        self: Arc<Self>,
        store: SharedStore,
        holder: String,
        term: Duration,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            self.contend(&store, &holder, term).await;
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(term / 3) => {}
            }
        }
    }
}
