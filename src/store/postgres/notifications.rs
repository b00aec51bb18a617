//! SQL of the notification outbox on PostgreSQL. Writes that decide which event of a session
//! gets the delivery job (an insert behind a pending event, a settlement starting the next)
//! hold the session's row lock (see `batch`), so that they cannot cross under READ COMMITTED.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use super::super::millis;
use super::super::notifications::{COLUMNS, ForDelivery, NewNotification, Notification, decode};
use crate::domain::SessionId;

/// The sessions of the events `ids` (each once).
pub async fn sessions_of(c: &mut PgConnection, ids: &[Uuid]) -> anyhow::Result<Vec<SessionId>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT session_id FROM notifications WHERE id = ANY($1)")
            .bind(ids.iter().map(ToString::to_string).collect::<Vec<_>>())
            .fetch_all(c)
            .await?;
    rows.into_iter()
        .map(|s| Ok(SessionId(s.parse()?)))
        .collect()
}

/// Ends the deliveries of `settled` still pending; their ids with their sessions.
pub async fn finish_many(
    c: &mut PgConnection,
    settled: &[&super::super::port::Settled],
) -> anyhow::Result<std::collections::HashMap<Uuid, SessionId>> {
    if settled.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, String)> = sqlx::query_as(
        "UPDATE notifications AS n SET state = s.state, attempts = s.attempts, \
         last_error = COALESCE(s.error, n.last_error), finished_at_ms = s.at_ms, \
         next_attempt_ms = NULL \
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) \
           AS s(id, state, attempts, error, at_ms) \
         WHERE n.id = s.id AND n.state = 'pending' \
         RETURNING n.id, n.session_id",
    )
    .bind(settled.iter().map(|s| s.id.to_string()).collect::<Vec<_>>())
    .bind(settled.iter().map(|s| s.final_state).collect::<Vec<_>>())
    .bind(
        settled
            .iter()
            .map(|s| i64::from(s.attempts))
            .collect::<Vec<_>>(),
    )
    .bind(settled.iter().map(|s| s.error.clone()).collect::<Vec<_>>())
    .bind(settled.iter().map(|s| millis(s.at)).collect::<Vec<_>>())
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(id, session)| Ok((id.parse()?, SessionId(session.parse()?))))
        .collect()
}

/// For each of `ids`, the next event of its session waiting behind it.
pub async fn next_pending_after_many(
    c: &mut PgConnection,
    ids: &[Uuid],
) -> anyhow::Result<std::collections::HashMap<Uuid, Uuid>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.id, e.id FROM notifications AS n \
         JOIN LATERAL (SELECT e.id FROM notifications AS e WHERE e.session_id = n.session_id \
                       AND e.seq > n.seq AND e.state = 'pending' ORDER BY e.seq LIMIT 1) AS e ON true \
         WHERE n.id = ANY($1)",
    )
    .bind(ids.iter().map(ToString::to_string).collect::<Vec<_>>())
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(n, e)| Ok((n.parse()?, e.parse()?)))
        .collect()
}

/// Each session's last event number and whether one of its events is pending.
pub async fn outbox_states(
    c: &mut PgConnection,
    sessions: &[SessionId],
) -> anyhow::Result<std::collections::HashMap<SessionId, super::batch::Outbox>> {
    if sessions.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT session_id, MAX(seq), bool_or(state = 'pending') FROM notifications \
         WHERE session_id = ANY($1) GROUP BY session_id",
    )
    .bind(sessions.iter().map(ToString::to_string).collect::<Vec<_>>())
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(s, last_seq, pending)| {
            Ok((
                SessionId(s.parse()?),
                super::batch::Outbox { last_seq, pending },
            ))
        })
        .collect()
}

/// Appends events with the numbers given.
pub async fn insert_many(
    c: &mut PgConnection,
    rows: &[(NewNotification, i64)],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let credentials = rows
        .iter()
        .map(|(n, _)| n.credential.as_ref().map(serde_json::to_string).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "INSERT INTO notifications (id, session_id, seq, sink, credential, event, state, created_at_ms) \
         SELECT id, session_id, seq, sink, credential, event, 'pending', created_at_ms \
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[]) \
           AS n(id, session_id, seq, sink, credential, event, created_at_ms)",
    )
    .bind(rows.iter().map(|(n, _)| n.id.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(n, _)| n.session_id.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, seq)| *seq).collect::<Vec<_>>())
    .bind(rows.iter().map(|(n, _)| n.sink.clone()).collect::<Vec<_>>())
    .bind(credentials)
    .bind(rows.iter().map(|(n, _)| n.event.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(n, _)| millis(n.created_at)).collect::<Vec<_>>())
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

/// How many notifications are dead, and the transition time of the oldest.
pub async fn dead(c: &mut PgConnection) -> anyhow::Result<(i64, Option<i64>)> {
    Ok(sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at_ms) FROM notifications WHERE state = 'dead'",
    )
    .fetch_one(c)
    .await?)
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
