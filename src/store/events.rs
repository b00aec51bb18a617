//! SQL for `session_events`, the append-only history of transitions.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::millis;
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
