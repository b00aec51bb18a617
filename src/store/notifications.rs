//! SQL for the notification outbox and the sinks that answered 410 Gone.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::writer::Tx;
use super::{Columns, InOrder, from_millis, millis};
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

pub(super) const COLUMNS: &str = "id, session_id, seq, sink, credential, event, state, attempts, last_error, \
    created_at_ms, next_attempt_ms, finished_at_ms";

pub(super) fn decode(r: &impl Columns) -> anyhow::Result<Notification> {
    Ok(Notification {
        id: r.text("id")?.parse()?,
        session_id: SessionId(r.text("session_id")?.parse()?),
        seq: r.int("seq")?,
        sink: r.text("sink")?,
        credential: r
            .opt_text("credential")?
            .map(|c| serde_json::from_str(&c))
            .transpose()?,
        event: serde_json::from_str(&r.text("event")?)?,
        state: r.text("state")?,
        attempts: r.int("attempts")?.try_into().unwrap_or(u32::MAX),
        last_error: r.opt_text("last_error")?,
        created_at: from_millis(r.int("created_at_ms")?),
        next_attempt_at: r.opt_int("next_attempt_ms")?.map(from_millis),
        finished_at: r.opt_int("finished_at_ms")?.map(from_millis),
    })
}

/// Appends an event to its session's sequence.
pub fn insert(tx: &Tx, n: &NewNotification) -> anyhow::Result<()> {
    let session = n.session_id.to_string();
    tx.prepare_cached(
        "INSERT INTO notifications (id, session_id, seq, sink, credential, event, state, created_at_ms) \
         VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications WHERE session_id = ?2), \
         ?3, ?4, ?5, 'pending', ?6)",
    )?
    .execute(params![
        n.id.to_string(),
        session,
        n.sink,
        n.credential.as_ref().map(serde_json::to_string).transpose()?,
        n.event.to_string(),
        millis(n.created_at),
    ])?;
    Ok(())
}

/// An event about to be sent, with what decides whether it may go now: whether an earlier
/// event of its session still waits (order per session), and whether its sink answered 410
/// Gone before. One round trip, since every delivery asks.
pub struct ForDelivery {
    pub notification: Notification,
    pub behind_earlier: bool,
    pub sink_gone: bool,
}

pub fn find_for_delivery(conn: &Tx, id: Uuid) -> anyhow::Result<Option<ForDelivery>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, \
         EXISTS (SELECT 1 FROM notifications AS e WHERE e.session_id = n.session_id \
                 AND e.seq < n.seq AND e.state = 'pending') AS behind_earlier, \
         EXISTS (SELECT 1 FROM gone_sinks AS g WHERE g.sink = n.sink) AS sink_gone \
         FROM notifications AS n WHERE n.id = ?"
    ))?;
    let found = stmt
        .query_row([id.to_string()], |r| {
            let r = InOrder::new(r);
            Ok(decode(&r).and_then(|notification| {
                Ok(ForDelivery {
                    notification,
                    behind_earlier: r.int("behind_earlier")? != 0,
                    sink_gone: r.int("sink_gone")? != 0,
                })
            }))
        })
        .optional()?;
    found.transpose()
}

/// Whether an event of the same session older than `id` is still pending.
pub fn earlier_pending_than(tx: &Tx, session: SessionId, id: Uuid) -> anyhow::Result<bool> {
    let found = tx
        .prepare_cached(
            "SELECT 1 FROM notifications AS e WHERE e.session_id = ?1 AND e.state = 'pending' \
             AND e.seq < (SELECT seq FROM notifications WHERE id = ?2) LIMIT 1",
        )?
        .query_row([session.to_string(), id.to_string()], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

/// The session's next event waiting behind the event `id`, if any.
pub fn next_pending_after(tx: &Tx, id: Uuid) -> anyhow::Result<Option<Uuid>> {
    let next: Option<String> = tx
        .prepare_cached(
            "SELECT e.id FROM notifications AS n JOIN notifications AS e \
             ON e.session_id = n.session_id AND e.seq > n.seq AND e.state = 'pending' \
             WHERE n.id = ? ORDER BY e.seq LIMIT 1",
        )?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?;
    Ok(next.map(|s| s.parse()).transpose()?)
}

/// Records a failed attempt that will be retried at `next`.
pub fn record_retry(
    tx: &Tx,
    id: Uuid,
    attempts: u32,
    error: &str,
    next: DateTime<Utc>,
) -> anyhow::Result<()> {
    tx.prepare_cached(
        "UPDATE notifications SET attempts = ?, last_error = ?, next_attempt_ms = ? \
         WHERE id = ? AND state = 'pending'",
    )?
    .execute(params![attempts, error, millis(next), id.to_string()])?;
    Ok(())
}

/// Moves a pending event to a final state. Returns false if it was no longer pending.
pub fn finish(
    tx: &Tx,
    id: Uuid,
    final_state: &str,
    attempts: u32,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = tx
        .prepare_cached(
            "UPDATE notifications SET state = ?, attempts = ?, last_error = COALESCE(?, last_error), \
             finished_at_ms = ?, next_attempt_ms = NULL WHERE id = ? AND state = 'pending'",
        )?
        .execute(params![final_state, attempts, error, millis(at), id.to_string()])?;
    Ok(done == 1)
}

/// Puts a dead letter back to pending for a fresh series of attempts; returns its sink.
pub fn revive(tx: &Tx, id: Uuid) -> anyhow::Result<Option<String>> {
    Ok(tx
        .prepare_cached(
            "UPDATE notifications SET state = 'pending', attempts = 0, finished_at_ms = NULL \
             WHERE id = ? AND state = 'dead' RETURNING sink",
        )?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?)
}

pub fn list(
    conn: &Tx,
    only_state: Option<&str>,
    session: Option<SessionId>,
    limit: i64,
) -> anyhow::Result<Vec<Notification>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE (?1 IS NULL OR state = ?1) \
         AND (?2 IS NULL OR session_id = ?2) ORDER BY created_at_ms, seq LIMIT ?3 + 0"
    ))?;
    let rows = stmt.query_map(
        params![only_state, session.map(|s| s.to_string()), limit],
        |r| Ok(decode(&InOrder::new(r))),
    )?;
    rows.map(|r| r?).collect()
}

/// How many notifications are dead, and the transition time of the oldest.
pub fn dead(conn: &Tx) -> anyhow::Result<(i64, Option<i64>)> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*), MIN(created_at_ms) FROM notifications WHERE state = 'dead'",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

pub fn mark_gone(tx: &Tx, sink: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
    tx.prepare_cached(
        "INSERT INTO gone_sinks (sink, gone_at_ms) VALUES (?, ?) ON CONFLICT (sink) DO NOTHING",
    )?
    .execute(params![sink, millis(at)])?;
    Ok(())
}

/// An operator retrying a dead letter vouches for its sink again.
pub fn forget_gone(tx: &Tx, sink: &str) -> anyhow::Result<()> {
    tx.prepare_cached("DELETE FROM gone_sinks WHERE sink = ?")?
        .execute([sink])?;
    Ok(())
}
