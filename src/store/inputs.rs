//! SQL for `history_inputs`, the recorded inputs (see `recording`).

use rusqlite::params;

use super::millis;
use super::port::{HistoryEntry, HistoryFilter, HistoryRow, HistorySink};
use super::writer::Tx;
use crate::recording::Recorded;

pub fn append(tx: &Tx, inputs: &[Recorded]) -> anyhow::Result<()> {
    if inputs.is_empty() {
        return Ok(());
    }
    let mut insert =
        tx.prepare_cached("INSERT INTO history_inputs (at_ms, session_id, body) VALUES (?, ?, ?)")?;
    for r in inputs {
        insert.execute(params![
            millis(r.at),
            r.session.map(|s| s.to_string()),
            serde_json::to_string(&r.input)?,
        ])?;
    }
    Ok(())
}

/// Inputs and transitions in time order (inputs first within a millisecond), as one query.
const HISTORY: &str = "SELECT at_ms, session_id, 0 AS kind, id, body, NULL, NULL, NULL, NULL \
     FROM history_inputs WHERE at_ms >= ?1 AND at_ms < ?2 AND (?3 IS NULL OR session_id = ?3) \
     UNION ALL \
     SELECT at_ms, session_id, 1, id, NULL, revision, from_status, to_status, reason \
     FROM session_events WHERE at_ms >= ?1 AND at_ms < ?2 AND (?3 IS NULL OR session_id = ?3) \
     ORDER BY 1, 3, 4";

pub fn read_history(
    conn: &Tx,
    filter: HistoryFilter,
    each: &mut HistorySink,
) -> anyhow::Result<u64> {
    let mut stmt = conn.prepare(HISTORY)?;
    let mut rows = stmt.query(params![
        filter.since_ms,
        filter.until_ms,
        filter.session.map(|s| s.to_string())
    ])?;
    let mut read = 0;
    while let Some(r) = rows.next()? {
        let entry = if r.get::<_, i64>(2)? == 0 {
            HistoryEntry::Input(r.get(4)?)
        } else {
            HistoryEntry::Transition {
                revision: r.get(5)?,
                from: r.get(6)?,
                to: r.get(7)?,
                reason: r.get(8)?,
            }
        };
        each(HistoryRow {
            at_ms: r.get(0)?,
            session: r.get(1)?,
            entry,
        })?;
        read += 1;
    }
    Ok(read)
}

/// Every transition, each session's together in time order (in the order written within a
/// millisecond), sessions in the order of their ids: the `session_events_by_session` index
/// gives the sessions in order, so only each session's few rows are sorted.
const TRANSITIONS: &str = "SELECT at_ms, session_id, revision, from_status, to_status, reason \
     FROM session_events ORDER BY session_id, at_ms, id";

pub fn read_transitions(conn: &Tx, each: &mut HistorySink) -> anyhow::Result<u64> {
    let mut stmt = conn.prepare(TRANSITIONS)?;
    let mut rows = stmt.query([])?;
    let mut read = 0;
    while let Some(r) = rows.next()? {
        each(HistoryRow {
            at_ms: r.get(0)?,
            session: r.get(1)?,
            entry: HistoryEntry::Transition {
                revision: r.get(2)?,
                from: r.get(3)?,
                to: r.get(4)?,
                reason: r.get(5)?,
            },
        })?;
        read += 1;
    }
    Ok(read)
}
