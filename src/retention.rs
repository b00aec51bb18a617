//! Keeps history bounded: every `EVERY`, deletes what is older than `--history-retention`
//! in short batches (one write transaction each, so other writes wait at most one batch),
//! and counts what it deleted. Runs on the clock port, so virtual time drives it too.

use std::time::Duration;

use crate::core::Core;

/// How often the purge looks for history past its retention.
pub const EVERY: Duration = Duration::from_secs(60);

/// Rows per table and transaction.
pub const BATCH: usize = 500;

/// Runs until `stop` resolves, purging while this node holds the maintenance role.
pub async fn run(
    core: std::sync::Arc<Core>,
    retention: Duration,
    leadership: std::sync::Arc<crate::leader::Leadership>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = core.clock.sleep(EVERY) => {}
        }
        if !leadership.held() {
            continue;
        }
        if let Err(e) = purge_once(&core, retention).await {
            tracing::warn!(error = %format!("{e:#}"), "purging old history failed; trying again later");
        }
    }
}

/// Deletes everything past the retention now, batch after batch.
pub async fn purge_once(core: &Core, retention: Duration) -> anyhow::Result<()> {
    let before = core.clock.now() - chrono::Duration::from_std(retention)?;
    loop {
        let purged = core
            .store
            .purge_history(before.timestamp_millis(), BATCH)
            .await?;
        for (table, n) in [
            ("notifications", purged.notifications),
            ("session_events", purged.events),
            ("sim_grants", purged.grants),
            ("history_inputs", purged.inputs),
        ] {
            core.metrics
                .history_purged
                .with_label_values(&[table])
                .inc_by(n as u64);
        }
        let full = [
            purged.notifications,
            purged.events,
            purged.grants,
            purged.inputs,
        ]
        .contains(&BATCH);
        if !full {
            return Ok(());
        }
        tokio::task::yield_now().await;
    }
}
