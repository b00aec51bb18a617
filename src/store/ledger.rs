//! SQL for the simulated network's grant ledger. The ledger is the network's memory, not ours:
//! it is written in its own transactions, as a remote network would.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::millis;
use super::writer::Tx;
use crate::domain::SessionId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerGrant {
    pub grant_id: String,
    pub released: bool,
}

pub fn find_by_session(tx: &Tx, session: SessionId) -> anyhow::Result<Option<LedgerGrant>> {
    Ok(tx
        .prepare_cached("SELECT grant_id, released_at_ms FROM sim_grants WHERE session_id = ?")?
        .query_row([session.to_string()], |r| {
            Ok(LedgerGrant {
                grant_id: r.get(0)?,
                released: r.get::<_, Option<i64>>(1)?.is_some(),
            })
        })
        .optional()?)
}

pub fn insert(
    tx: &Tx,
    grant_id: &str,
    session: SessionId,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<()> {
    tx.prepare_cached(
        "INSERT INTO sim_grants (grant_id, session_id, provisioned_at_ms, lease_until_ms) \
         VALUES (?, ?, ?, ?)",
    )?
    .execute(params![
        grant_id,
        session.to_string(),
        millis(now),
        millis(lease_until)
    ])?;
    Ok(())
}

pub fn extend_lease(tx: &Tx, grant_id: &str, until: DateTime<Utc>) -> anyhow::Result<bool> {
    let done = tx
        .prepare_cached(
            "UPDATE sim_grants SET lease_until_ms = ? WHERE grant_id = ? AND released_at_ms IS NULL",
        )?
        .execute(params![millis(until), grant_id])?;
    Ok(done == 1)
}

/// Marks a grant released; returns false if it was unknown or already released.
pub fn release(tx: &Tx, grant_id: &str, now: DateTime<Utc>) -> anyhow::Result<bool> {
    let done = tx
        .prepare_cached(
            "UPDATE sim_grants SET released_at_ms = ? WHERE grant_id = ? AND released_at_ms IS NULL",
        )?
        .execute(params![millis(now), grant_id])?;
    Ok(done == 1)
}

pub fn active_count(conn: &Tx) -> anyhow::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM sim_grants WHERE released_at_ms IS NULL")?
        .query_row([], |r| r.get(0))?)
}
