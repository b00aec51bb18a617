//! Deleting history past its retention, a bounded batch per call: settled notifications (with
//! their sealed tokens and sink URLs), the events of sessions that were purged, and the
//! simulated network's released grants of such sessions, and the recorded inputs of such
//! sessions (or of none). Oldest rows first (rowid order), so
//! a batch stops as soon as it found enough.

use rusqlite::params;

use super::writer::Tx;

/// Rows deleted by one call, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub notifications: usize,
    pub events: usize,
    pub grants: usize,
    pub inputs: usize,
}

impl Purged {
    pub fn total(&self) -> usize {
        self.notifications + self.events + self.grants + self.inputs
    }
}

pub fn purge(tx: &Tx, before_ms: i64, batch: usize) -> anyhow::Result<Purged> {
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let notifications = tx
        .prepare_cached(
            "DELETE FROM notifications WHERE rowid IN (SELECT rowid FROM notifications \
             WHERE state <> 'pending' AND finished_at_ms < ?1 ORDER BY rowid LIMIT ?2)",
        )?
        .execute(params![before_ms, batch])?;
    let events = tx
        .prepare_cached(
            "DELETE FROM session_events WHERE id IN (SELECT e.id FROM session_events e \
             WHERE e.at_ms < ?1 AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = e.session_id) \
             ORDER BY e.id LIMIT ?2)",
        )?
        .execute(params![before_ms, batch])?;
    let grants = tx
        .prepare_cached(
            "DELETE FROM sim_grants WHERE rowid IN (SELECT g.rowid FROM sim_grants g \
             WHERE g.released_at_ms < ?1 \
             AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = g.session_id) \
             ORDER BY g.rowid LIMIT ?2)",
        )?
        .execute(params![before_ms, batch])?;
    let inputs = tx
        .prepare_cached(
            "DELETE FROM history_inputs WHERE id IN (SELECT i.id FROM history_inputs i \
             WHERE i.at_ms < ?1 AND (i.session_id IS NULL \
               OR NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = i.session_id)) \
             ORDER BY i.id LIMIT ?2)",
        )?
        .execute(params![before_ms, batch])?;
    Ok(Purged {
        notifications,
        events,
        grants,
        inputs,
    })
}
