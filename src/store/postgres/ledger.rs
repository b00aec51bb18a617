//! SQL of the simulated network's grant ledger on PostgreSQL (its own transactions, as a
//! remote network's would be).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::super::ledger::LedgerGrant;
use super::super::millis;
use crate::domain::SessionId;

/// The session's grant as the ledger holds it after this call: the existing one (and whether
/// it was released), or `grant_id` recorded now unless `refuse`; None when refused. One
/// statement, so one round trip and no transaction of its own.
pub async fn provision(
    c: &mut PgConnection,
    grant_id: &str,
    session: SessionId,
    refuse: bool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<Option<LedgerGrant>> {
    let row: Option<(String, bool)> = sqlx::query_as(
        "WITH existing AS ( \
             SELECT grant_id, released_at_ms IS NOT NULL AS released FROM sim_grants \
             WHERE session_id = $2), \
         fresh AS ( \
             INSERT INTO sim_grants (grant_id, session_id, provisioned_at_ms, lease_until_ms) \
             SELECT $1, $2, $3, $4 WHERE NOT $5 AND NOT EXISTS (SELECT 1 FROM existing) \
             ON CONFLICT (session_id) DO NOTHING RETURNING grant_id) \
         SELECT grant_id, released FROM existing \
         UNION ALL SELECT grant_id, false FROM fresh",
    )
    .bind(grant_id)
    .bind(session.to_string())
    .bind(millis(now))
    .bind(millis(lease_until))
    .bind(refuse)
    .fetch_optional(c)
    .await?;
    Ok(row.map(|(grant_id, released)| LedgerGrant { grant_id, released }))
}

pub async fn active_count(c: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM sim_grants WHERE released_at_ms IS NULL")
            .fetch_one(c)
            .await?,
    )
}

/// Extends the active grant `grant_id` (or the session's, without an id); its id, if active.
pub async fn extend(
    c: &mut PgConnection,
    session: SessionId,
    grant_id: Option<&str>,
    until: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE sim_grants SET lease_until_ms = $1 \
         WHERE (grant_id = $2 OR ($2::text IS NULL AND session_id = $3)) \
           AND released_at_ms IS NULL RETURNING grant_id",
    )
    .bind(millis(until))
    .bind(grant_id)
    .bind(session.to_string())
    .fetch_optional(c)
    .await?)
}

/// Releases the grant `grant_id` (or the session's, without an id); unknown ones count as
/// released.
pub async fn release(
    c: &mut PgConnection,
    session: SessionId,
    grant_id: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE sim_grants SET released_at_ms = $1 \
         WHERE (grant_id = $2 OR ($2::text IS NULL AND session_id = $3)) \
           AND released_at_ms IS NULL",
    )
    .bind(millis(now))
    .bind(grant_id)
    .bind(session.to_string())
    .execute(c)
    .await?;
    Ok(())
}
