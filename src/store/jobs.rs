//! SQL of the job queue (`jobs` table): enqueue inside the caller's transaction, claim due jobs
//! in batches, acknowledge finished ones in batches, hand back what a stopped process held.

use sqlx::{Row, SqliteConnection};

/// A job handed to this process: its row, its payload still encoded.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: i64,
    pub payload: String,
    pub attempt: u32,
    pub due_at_ms: i64,
}

pub async fn push(
    conn: &mut SqliteConnection,
    queue: &str,
    payload: &str,
    attempt: u32,
    due_at_ms: i64,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO jobs (queue, payload, attempt, due_at_ms) VALUES (?, ?, ?, ?)")
        .bind(queue)
        .bind(payload)
        .bind(attempt)
        .bind(due_at_ms)
        .execute(conn)
        .await?;
    Ok(())
}

/// Claims up to `limit` jobs of `queue` due by `now_ms`, earliest first.
pub async fn claim(
    conn: &mut SqliteConnection,
    queue: &str,
    owner: &str,
    now_ms: i64,
    limit: usize,
) -> anyhow::Result<Vec<ClaimedRow>> {
    let rows = sqlx::query(
        "UPDATE jobs SET claimed_by = ?1, claimed_at_ms = ?2 WHERE id IN ( \
             SELECT id FROM jobs WHERE queue = ?3 AND claimed_by IS NULL AND due_at_ms <= ?2 \
             ORDER BY due_at_ms LIMIT ?4) \
         RETURNING id, payload, attempt, due_at_ms",
    )
    .bind(owner)
    .bind(now_ms)
    .bind(queue)
    .bind(limit as i64)
    .fetch_all(conn)
    .await?;
    let mut claimed = rows
        .iter()
        .map(|r| {
            Ok(ClaimedRow {
                id: r.try_get("id")?,
                payload: r.try_get("payload")?,
                attempt: r.try_get::<i64, _>("attempt")?.max(0) as u32,
                due_at_ms: r.try_get("due_at_ms")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // RETURNING gives no order guarantee.
    claimed.sort_by_key(|c| (c.due_at_ms, c.id));
    Ok(claimed)
}

/// The earliest due time among the waiting jobs of `queue`.
pub async fn next_due(conn: &mut SqliteConnection, queue: &str) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT due_at_ms FROM jobs WHERE queue = ? AND claimed_by IS NULL \
         ORDER BY due_at_ms LIMIT 1",
    )
    .bind(queue)
    .fetch_optional(conn)
    .await?)
}

/// Deletes finished jobs. Ids are integers from our own claims, written inline so that one
/// statement acknowledges a whole batch.
pub async fn finish(conn: &mut SqliteConnection, ids: &[i64]) -> anyhow::Result<()> {
    for chunk in ids.chunks(500) {
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("DELETE FROM jobs WHERE id IN ({list})");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Returns a claimed job to the queue for another attempt at `due_at_ms`.
pub async fn reschedule(
    conn: &mut SqliteConnection,
    id: i64,
    attempt: u32,
    due_at_ms: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE jobs SET attempt = ?, due_at_ms = ?, claimed_by = NULL, claimed_at_ms = NULL \
         WHERE id = ?",
    )
    .bind(attempt)
    .bind(due_at_ms)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Hands every claimed job back. Only safe when no live worker holds them: at startup under
/// the process lock, or after this process's workers stopped.
pub async fn reclaim_all(conn: &mut SqliteConnection) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "UPDATE jobs SET claimed_by = NULL, claimed_at_ms = NULL WHERE claimed_by IS NOT NULL",
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Jobs per queue, waiting and claimed, for the metrics gauges.
pub async fn depth(conn: &mut SqliteConnection) -> anyhow::Result<Vec<(String, i64, i64)>> {
    let rows = sqlx::query(
        "SELECT queue, SUM(claimed_by IS NULL) AS waiting, SUM(claimed_by IS NOT NULL) AS claimed \
         FROM jobs GROUP BY queue",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("queue")?,
                r.try_get("waiting")?,
                r.try_get("claimed")?,
            ))
        })
        .collect()
}
