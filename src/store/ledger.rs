//! SQL for the simulated network's grant ledger. The ledger is the network's memory, not ours:
//! it is written in its own transactions, as a remote network would.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};

use super::millis;
use crate::domain::SessionId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerGrant {
    pub grant_id: String,
    pub released: bool,
}

pub async fn find_by_session(
    conn: &mut SqliteConnection,
    session: SessionId,
) -> anyhow::Result<Option<LedgerGrant>> {
    let row = sqlx::query("SELECT grant_id, released_at_ms FROM sim_grants WHERE session_id = ?")
        .bind(session.to_string())
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(LedgerGrant {
            grant_id: r.try_get("grant_id")?,
            released: r.try_get::<Option<i64>, _>("released_at_ms")?.is_some(),
        })
    })
    .transpose()
}

pub async fn insert(
    conn: &mut SqliteConnection,
    grant_id: &str,
    session: SessionId,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO sim_grants (grant_id, session_id, provisioned_at_ms, lease_until_ms) VALUES (?, ?, ?, ?)",
    )
    .bind(grant_id)
    .bind(session.to_string())
    .bind(millis(now))
    .bind(millis(lease_until))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn extend_lease(
    conn: &mut SqliteConnection,
    grant_id: &str,
    until: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE sim_grants SET lease_until_ms = ? WHERE grant_id = ? AND released_at_ms IS NULL",
    )
    .bind(millis(until))
    .bind(grant_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a grant released; returns false if it was unknown or already released.
pub async fn release(
    conn: &mut SqliteConnection,
    grant_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE sim_grants SET released_at_ms = ? WHERE grant_id = ? AND released_at_ms IS NULL",
    )
    .bind(millis(now))
    .bind(grant_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn active_count(conn: &mut SqliteConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM sim_grants WHERE released_at_ms IS NULL")
            .fetch_one(conn)
            .await?,
    )
}
