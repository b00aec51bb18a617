//! SQL for `session_events`, the append-only history of transitions.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::millis;
use super::writer::Tx;
use crate::domain::SessionId;
use crate::domain::session::Transition;

pub fn append(
    tx: &Tx,
    session: SessionId,
    revision: i64,
    t: &Transition,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    tx.prepare_cached(
        "INSERT INTO session_events (session_id, revision, from_status, to_status, reason, at_ms) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        session.to_string(),
        revision,
        t.from.map(|s| s.as_str()),
        t.to,
        t.reason,
        millis(at),
    ])?;
    Ok(())
}
