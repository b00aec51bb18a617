//! SQL for the notification outbox and the sinks that answered 410 Gone.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection, sqlite::SqliteRow};
use uuid::Uuid;

use super::{from_millis, millis};
use crate::domain::{SessionId, SinkCredential};

/// Delivery state of one event.
pub mod state {
    pub const PENDING: &str = "pending";
    pub const DELIVERED: &str = "delivered";
    pub const DEAD: &str = "dead";
}

#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: Uuid,
    pub session_id: SessionId,
    pub sink: String,
    pub credential: Option<SinkCredential>,
    /// The CloudEvent without `source`, which the sender adds from configuration.
    pub event: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Notification {
    pub id: Uuid,
    pub session_id: SessionId,
    pub seq: i64,
    pub sink: String,
    pub credential: Option<SinkCredential>,
    pub event: serde_json::Value,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, session_id, seq, sink, credential, event, state, attempts, last_error, \
    created_at_ms, next_attempt_ms, finished_at_ms";

fn decode(r: &SqliteRow) -> anyhow::Result<Notification> {
    let id: String = r.try_get("id")?;
    let session: String = r.try_get("session_id")?;
    let credential: Option<String> = r.try_get("credential")?;
    let event: String = r.try_get("event")?;
    Ok(Notification {
        id: id.parse()?,
        session_id: SessionId(session.parse()?),
        seq: r.try_get("seq")?,
        sink: r.try_get("sink")?,
        credential: credential.map(|c| serde_json::from_str(&c)).transpose()?,
        event: serde_json::from_str(&event)?,
        state: r.try_get("state")?,
        attempts: r
            .try_get::<i64, _>("attempts")?
            .try_into()
            .unwrap_or(u32::MAX),
        last_error: r.try_get("last_error")?,
        created_at: from_millis(r.try_get("created_at_ms")?),
        next_attempt_at: r
            .try_get::<Option<i64>, _>("next_attempt_ms")?
            .map(from_millis),
        finished_at: r
            .try_get::<Option<i64>, _>("finished_at_ms")?
            .map(from_millis),
    })
}

/// Appends an event to its session's sequence.
pub async fn insert(conn: &mut SqliteConnection, n: &NewNotification) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO notifications (id, session_id, seq, sink, credential, event, state, created_at_ms) \
         VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications WHERE session_id = ?), ?, ?, ?, 'pending', ?)",
    )
    .bind(n.id.to_string())
    .bind(n.session_id.to_string())
    .bind(n.session_id.to_string())
    .bind(&n.sink)
    .bind(n.credential.as_ref().map(serde_json::to_string).transpose()?)
    .bind(n.event.to_string())
    .bind(millis(n.created_at))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find(conn: &mut SqliteConnection, id: Uuid) -> anyhow::Result<Option<Notification>> {
    let sql = format!("SELECT {COLUMNS} FROM notifications WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Whether an earlier event of the session still waits for delivery (order per session).
pub async fn earlier_pending(
    conn: &mut SqliteConnection,
    n: &Notification,
) -> anyhow::Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM notifications WHERE session_id = ? AND seq < ? AND state = 'pending' LIMIT 1")
            .bind(n.session_id.to_string())
            .bind(n.seq)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// Whether an event of the same session older than `id` is still pending.
pub async fn earlier_pending_than(
    conn: &mut SqliteConnection,
    session: SessionId,
    id: Uuid,
) -> anyhow::Result<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM notifications AS e WHERE e.session_id = ?1 AND e.state = 'pending' \
         AND e.seq < (SELECT seq FROM notifications WHERE id = ?2) LIMIT 1",
    )
    .bind(session.to_string())
    .bind(id.to_string())
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// The session's next event waiting behind `n`, if any.
pub async fn next_pending(
    conn: &mut SqliteConnection,
    n: &Notification,
) -> anyhow::Result<Option<Uuid>> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT id FROM notifications WHERE session_id = ? AND seq > ? AND state = 'pending' ORDER BY seq LIMIT 1",
    )
    .bind(n.session_id.to_string())
    .bind(n.seq)
    .fetch_optional(conn)
    .await?;
    Ok(id.map(|s| s.parse()).transpose()?)
}

/// Records a failed attempt that will be retried at `next`.
pub async fn record_retry(
    conn: &mut SqliteConnection,
    id: Uuid,
    attempts: u32,
    error: &str,
    next: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE notifications SET attempts = ?, last_error = ?, next_attempt_ms = ? WHERE id = ? AND state = 'pending'")
        .bind(i64::from(attempts))
        .bind(error)
        .bind(millis(next))
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves a pending event to a final state. Returns false if it was no longer pending.
pub async fn finish(
    conn: &mut SqliteConnection,
    id: Uuid,
    final_state: &str,
    attempts: u32,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE notifications SET state = ?, attempts = ?, last_error = COALESCE(?, last_error), \
         finished_at_ms = ?, next_attempt_ms = NULL WHERE id = ? AND state = 'pending'",
    )
    .bind(final_state)
    .bind(i64::from(attempts))
    .bind(error)
    .bind(millis(at))
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts a dead letter back to pending for a fresh series of attempts.
pub async fn revive(conn: &mut SqliteConnection, id: Uuid) -> anyhow::Result<Option<Notification>> {
    let done = sqlx::query(
        "UPDATE notifications SET state = 'pending', attempts = 0, finished_at_ms = NULL WHERE id = ? AND state = 'dead'",
    )
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    find(conn, id).await
}

pub async fn list(
    conn: &mut SqliteConnection,
    only_state: Option<&str>,
    session: Option<SessionId>,
    limit: i64,
) -> anyhow::Result<Vec<Notification>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM notifications WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR session_id = ?2) \
         ORDER BY created_at_ms, seq LIMIT ?3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(only_state)
        .bind(session.map(|s| s.to_string()))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(decode).collect()
}

pub async fn dead_count(conn: &mut SqliteConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE state = 'dead'")
            .fetch_one(conn)
            .await?,
    )
}

pub async fn mark_gone(
    conn: &mut SqliteConnection,
    sink: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO gone_sinks (sink, gone_at_ms) VALUES (?, ?) ON CONFLICT (sink) DO NOTHING",
    )
    .bind(sink)
    .bind(millis(at))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn is_gone(conn: &mut SqliteConnection, sink: &str) -> anyhow::Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM gone_sinks WHERE sink = ?")
        .bind(sink)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

/// An operator retrying a dead letter vouches for its sink again.
pub async fn forget_gone(conn: &mut SqliteConnection, sink: &str) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM gone_sinks WHERE sink = ?")
        .bind(sink)
        .execute(conn)
        .await?;
    Ok(())
}
