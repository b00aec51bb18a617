//! SQL for `session_events`, the append-only history of transitions.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};

use super::{from_millis, millis};
use crate::domain::SessionId;
use crate::domain::session::Transition;

pub async fn append(
    conn: &mut SqliteConnection,
    session: SessionId,
    revision: i64,
    t: &Transition,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO session_events (session_id, revision, from_status, to_status, reason, at_ms) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(session.to_string())
    .bind(revision)
    .bind(t.from.map(|s| s.as_str()))
    .bind(t.to)
    .bind(t.reason)
    .bind(millis(at))
    .execute(conn)
    .await?;
    Ok(())
}

/// A recorded event, as history readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: i64,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

pub async fn for_session(
    conn: &mut SqliteConnection,
    session: SessionId,
) -> anyhow::Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT revision, from_status, to_status, reason, at_ms FROM session_events \
         WHERE session_id = ? ORDER BY id",
    )
    .bind(session.to_string())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Event {
                revision: r.try_get("revision")?,
                from: r.try_get("from_status")?,
                to: r.try_get("to_status")?,
                reason: r.try_get("reason")?,
                at: from_millis(r.try_get("at_ms")?),
            })
        })
        .collect()
}
