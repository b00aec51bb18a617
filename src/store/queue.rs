//! Queue-like SQL over apalis's `Jobs` table: enqueue inside our own transactions, reclaim jobs
//! of a dead process, hand jobs back on shutdown, prune finished jobs.

use apalis::prelude::TaskBuilder;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::SqliteConnection;

/// apalis counts its own attempts and re-runs a job whose handler failed until this many; our
/// handlers only fail when the database itself failed, and retry with backoff by re-enqueueing,
/// so this is just a ceiling that is never meant to be reached.
const APALIS_MAX_ATTEMPTS: usize = 10_000;

/// Inserts one job in `queue`, due at `due` (apalis stores whole seconds, rounded down; the
/// handler waits out the remainder).
pub async fn push<T: Serialize>(
    conn: &mut SqliteConnection,
    queue: &str,
    payload: &T,
    due: DateTime<Utc>,
) -> anyhow::Result<()> {
    let task = TaskBuilder::new(serde_json::to_vec(payload)?)
        .run_at_timestamp(due.timestamp().max(0) as u64)
        .max_attempts(APALIS_MAX_ATTEMPTS)
        .build();
    apalis_sqlite::queries::push_tasks(conn, queue, &[task])
        .await
        .map_err(|e| anyhow::anyhow!("enqueueing into {queue}: {e}"))?;
    Ok(())
}

/// Puts every claimed-but-unfinished job back to Pending. Only safe when no live worker holds
/// them: at startup under the process lock, or after our own workers stopped.
pub async fn reclaim_all(conn: &mut SqliteConnection) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
         WHERE status IN ('Queued', 'Running')",
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes finished jobs whose `done_at` (Unix seconds) is older than `before`. Compares
/// integers with integers: apalis's own `vacuum_before` compares against text and deletes jobs
/// finished seconds ago.
pub async fn prune_finished(
    conn: &mut SqliteConnection,
    before: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM Jobs WHERE status IN ('Done', 'Killed') AND done_at IS NOT NULL \
         AND CAST(done_at AS INTEGER) < ?",
    )
    .bind(before.timestamp())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
