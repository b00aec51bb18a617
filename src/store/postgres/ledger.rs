//! SQL of the simulated network's grant ledger on PostgreSQL (its own transactions, as a
//! remote network's would be).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::super::ledger::LedgerGrant;
use super::super::millis;
use crate::domain::SessionId;

pub async fn find_by_session(
    c: &mut PgConnection,
    session: SessionId,
) -> anyhow::Result<Option<LedgerGrant>> {
    let row: Option<(String, Option<i64>)> = sqlx::query_as(
        "SELECT grant_id, released_at_ms FROM sim_grants WHERE session_id = $1 FOR UPDATE",
    )
    .bind(session.to_string())
    .fetch_optional(c)
    .await?;
    Ok(row.map(|(grant_id, released)| LedgerGrant {
        grant_id,
        released: released.is_some(),
    }))
}

/// Records a grant unless the session already has one; false when it had.
pub async fn insert(
    c: &mut PgConnection,
    grant_id: &str,
    session: SessionId,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO sim_grants (grant_id, session_id, provisioned_at_ms, lease_until_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(grant_id)
    .bind(session.to_string())
    .bind(millis(now))
    .bind(millis(lease_until))
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn extend_lease(
    c: &mut PgConnection,
    grant_id: &str,
    until: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE sim_grants SET lease_until_ms = $1 WHERE grant_id = $2 AND released_at_ms IS NULL",
    )
    .bind(millis(until))
    .bind(grant_id)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn release(
    c: &mut PgConnection,
    grant_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE sim_grants SET released_at_ms = $1 WHERE grant_id = $2 AND released_at_ms IS NULL",
    )
    .bind(millis(now))
    .bind(grant_id)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn active_count(c: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM sim_grants WHERE released_at_ms IS NULL")
            .fetch_one(c)
            .await?,
    )
}
