//! Wake-ups from other nodes' commits (`LISTEN`). Only a hint: notifications sent while the
//! connection was away are lost, so a reconnect asks every lane to look at the table again;
//! the lanes' polls cover the rest.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::super::port::JobWake;

/// Pause before listening again after the database went away.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Listens until the pool closes, telling `wake` of each announced job.
pub async fn run(
    pool: &PgPool,
    channel: &str,
    wake: &(dyn Fn(JobWake) + Send + Sync),
) -> anyhow::Result<()> {
    loop {
        if pool.is_closed() {
            return Ok(());
        }
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "job wake-ups: cannot listen now");
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(channel).await {
            tracing::debug!(error = %e, "job wake-ups: LISTEN failed");
            tokio::time::sleep(RECONNECT_AFTER).await;
            continue;
        }
        // Whatever was announced before this LISTEN took effect is in the table.
        wake(JobWake::Missed);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some((queue, due)) = n.payload().rsplit_once(':')
                        && let Ok(due_at_ms) = due.parse::<i64>()
                    {
                        wake(JobWake::Pushed { queue, due_at_ms });
                    }
                }
                Ok(None) => {
                    // The connection was lost and is re-established by the next call.
                    wake(JobWake::Missed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "job wake-ups: connection lost");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    break;
                }
            }
        }
    }
}
