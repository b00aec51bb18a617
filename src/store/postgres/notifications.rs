//! SQL of the notification outbox on PostgreSQL. Writes that decide which event of a session
//! gets the delivery job (an insert behind a pending event, a settlement starting the next)
//! take the session's outbox lock first, so that they cannot cross under READ COMMITTED.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use super::super::millis;
use super::super::notifications::{COLUMNS, ForDelivery, NewNotification, Notification, decode};
use crate::domain::SessionId;

/// Serialises the outbox writes of one session until the transaction ends.
pub async fn lock_session(c: &mut PgConnection, session: SessionId) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(session.to_string())
        .execute(c)
        .await?;
    Ok(())
}

pub async fn insert(c: &mut PgConnection, n: &NewNotification) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO notifications (id, session_id, seq, sink, credential, event, state, created_at_ms) \
         VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications WHERE session_id = $2), \
         $3, $4, $5, 'pending', $6)",
    )
    .bind(n.id.to_string())
    .bind(n.session_id.to_string())
    .bind(&n.sink)
    .bind(n.credential.as_ref().map(serde_json::to_string).transpose()?)
    .bind(n.event.to_string())
    .bind(millis(n.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn find_for_delivery(
    c: &mut PgConnection,
    id: Uuid,
) -> anyhow::Result<Option<ForDelivery>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS}, \
         EXISTS (SELECT 1 FROM notifications AS e WHERE e.session_id = n.session_id \
                 AND e.seq < n.seq AND e.state = 'pending') AS behind_earlier, \
         EXISTS (SELECT 1 FROM gone_sinks AS g WHERE g.sink = n.sink) AS sink_gone \
         FROM notifications AS n WHERE n.id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(c)
    .await?;
    row.map(|r| {
        Ok(ForDelivery {
            notification: decode(&r)?,
            behind_earlier: r.try_get("behind_earlier")?,
            sink_gone: r.try_get("sink_gone")?,
        })
    })
    .transpose()
}

pub async fn earlier_pending_than(
    c: &mut PgConnection,
    session: SessionId,
    id: Uuid,
) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM notifications AS e WHERE e.session_id = $1 \
         AND e.state = 'pending' AND e.seq < (SELECT seq FROM notifications WHERE id = $2))",
    )
    .bind(session.to_string())
    .bind(id.to_string())
    .fetch_one(c)
    .await?)
}

pub async fn next_pending_after(c: &mut PgConnection, id: Uuid) -> anyhow::Result<Option<Uuid>> {
    let next: Option<String> = sqlx::query_scalar(
        "SELECT e.id FROM notifications AS n JOIN notifications AS e \
         ON e.session_id = n.session_id AND e.seq > n.seq AND e.state = 'pending' \
         WHERE n.id = $1 ORDER BY e.seq LIMIT 1",
    )
    .bind(id.to_string())
    .fetch_optional(c)
    .await?;
    Ok(next.map(|s| s.parse()).transpose()?)
}

/// The session an event belongs to.
pub async fn session_of(c: &mut PgConnection, id: Uuid) -> anyhow::Result<Option<SessionId>> {
    let s: Option<String> =
        sqlx::query_scalar("SELECT session_id FROM notifications WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(c)
            .await?;
    Ok(s.map(|s| s.parse().map(SessionId)).transpose()?)
}

pub async fn record_retry(
    c: &mut PgConnection,
    id: Uuid,
    attempts: u32,
    error: &str,
    next: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE notifications SET attempts = $1, last_error = $2, next_attempt_ms = $3 \
         WHERE id = $4 AND state = 'pending'",
    )
    .bind(i64::from(attempts))
    .bind(error)
    .bind(millis(next))
    .bind(id.to_string())
    .execute(c)
    .await?;
    Ok(())
}

pub async fn finish(
    c: &mut PgConnection,
    id: Uuid,
    final_state: &str,
    attempts: u32,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE notifications SET state = $1, attempts = $2, last_error = COALESCE($3, last_error), \
         finished_at_ms = $4, next_attempt_ms = NULL WHERE id = $5 AND state = 'pending'",
    )
    .bind(final_state)
    .bind(i64::from(attempts))
    .bind(error)
    .bind(millis(at))
    .bind(id.to_string())
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn revive(c: &mut PgConnection, id: Uuid) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE notifications SET state = 'pending', attempts = 0, finished_at_ms = NULL \
         WHERE id = $1 AND state = 'dead' RETURNING sink",
    )
    .bind(id.to_string())
    .fetch_optional(c)
    .await?)
}

pub async fn list(
    c: &mut PgConnection,
    only_state: Option<&str>,
    session: Option<SessionId>,
    limit: i64,
) -> anyhow::Result<Vec<Notification>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE ($1::text IS NULL OR state = $1) \
         AND ($2::text IS NULL OR session_id = $2) ORDER BY created_at_ms, seq LIMIT $3"
    )))
    .bind(only_state)
    .bind(session.map(|s| s.to_string()))
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(decode).collect()
}

pub async fn dead_count(c: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE state = 'dead'")
            .fetch_one(c)
            .await?,
    )
}

pub async fn mark_gone(c: &mut PgConnection, sink: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO gone_sinks (sink, gone_at_ms) VALUES ($1, $2) ON CONFLICT (sink) DO NOTHING",
    )
    .bind(sink)
    .bind(millis(at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn forget_gone(c: &mut PgConnection, sink: &str) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM gone_sinks WHERE sink = $1")
        .bind(sink)
        .execute(c)
        .await?;
    Ok(())
}
