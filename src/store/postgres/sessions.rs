//! SQL for `sessions` on PostgreSQL. The row is decoded by the SQLite module's `decode` (same
//! columns; see `Columns for PgRow`).

use sqlx::{AssertSqlSafe, PgConnection};

use super::super::millis;
use super::super::sessions::{COLUMNS, decode};
use crate::domain::{ClientId, GrantState, QosStatus, Session, SessionId};

pub async fn insert(c: &mut PgConnection, s: &Session) -> anyhow::Result<()> {
    let credential = s
        .sink_credential
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    sqlx::query(
        "INSERT INTO sessions (id, revision, status, status_info, device_key, device, flow, \
         qos_profile, duration_secs, sink, sink_credential, created_at_ms, started_at_ms, \
         expires_at_ms, grant_state, grant_id, deleted, api, lease_until_ms, owner, \
         stray_grant_possible) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21)",
    )
    .bind(s.id.to_string())
    .bind(s.revision)
    .bind(s.status.as_str())
    .bind(s.status_info.map(|i| i.as_str()))
    .bind(s.device.key())
    .bind(serde_json::to_string(&s.device)?)
    .bind(serde_json::to_string(&s.flow)?)
    .bind(&s.qos_profile)
    .bind(s.duration_secs)
    .bind(&s.sink)
    .bind(credential)
    .bind(millis(s.created_at))
    .bind(s.started_at.map(millis))
    .bind(s.expires_at.map(millis))
    .bind(s.grant_state.as_str())
    .bind(&s.grant_id)
    .bind(s.deleted)
    .bind(s.api.as_str())
    .bind(s.lease_until.map(millis))
    .bind(s.owner.as_str())
    .bind(s.stray_grant_possible)
    .execute(c)
    .await?;
    Ok(())
}

/// Writes the mutable part of a session if it is still at `expected_revision`.
pub async fn update(
    c: &mut PgConnection,
    s: &Session,
    expected_revision: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE sessions SET revision = $1, status = $2, status_info = $3, duration_secs = $4, \
         started_at_ms = $5, expires_at_ms = $6, grant_state = $7, grant_id = $8, deleted = $9, \
         lease_until_ms = $10, stray_grant_possible = $11 \
         WHERE id = $12 AND revision = $13",
    )
    .bind(s.revision)
    .bind(s.status.as_str())
    .bind(s.status_info.map(|i| i.as_str()))
    .bind(s.duration_secs)
    .bind(s.started_at.map(millis))
    .bind(s.expires_at.map(millis))
    .bind(s.grant_state.as_str())
    .bind(&s.grant_id)
    .bind(s.deleted)
    .bind(s.lease_until.map(millis))
    .bind(s.stray_grant_possible)
    .bind(s.id.to_string())
    .bind(expected_revision)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A session by id; `for_update` locks its row until the transaction ends.
pub async fn find(
    c: &mut PgConnection,
    id: SessionId,
    for_update: bool,
) -> anyhow::Result<Option<Session>> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sessions WHERE id = $1{lock}"
    )))
    .bind(id.to_string())
    .fetch_optional(c)
    .await?;
    row.map(|r| decode(&r)).transpose()
}

/// One client's live sessions of a device named by any of `keys`, as the kept identifier or
/// as an alias, each once.
pub async fn live_for_device(
    c: &mut PgConnection,
    owner: &ClientId,
    keys: &[String],
) -> anyhow::Result<Vec<Session>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sessions WHERE owner = $2 AND status <> 'UNAVAILABLE' \
         AND NOT deleted AND (device_key = ANY($1) OR id IN \
         (SELECT session_id FROM session_device_aliases WHERE device_key = ANY($1)))"
    )))
    .bind(keys)
    .bind(owner.as_str())
    .fetch_all(c)
    .await?;
    rows.iter().map(decode).collect()
}

pub async fn insert_aliases(
    c: &mut PgConnection,
    session: &Session,
    keys: &[String],
) -> anyhow::Result<()> {
    let kept = session.device.key();
    let aliases: Vec<&String> = keys.iter().filter(|k| **k != kept).collect();
    if aliases.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO session_device_aliases (device_key, session_id) \
         SELECT k, $2 FROM UNNEST($1::text[]) AS k ON CONFLICT DO NOTHING",
    )
    .bind(aliases)
    .bind(session.id.to_string())
    .execute(c)
    .await?;
    Ok(())
}

/// How many sessions of a client hold or seek QoS, counting no further than `limit`.
pub async fn live_count_for_owner(
    c: &mut PgConnection,
    owner: &ClientId,
    limit: u64,
) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM sessions WHERE owner = $1 \
         AND status <> 'UNAVAILABLE' AND NOT deleted LIMIT $2) AS live",
    )
    .bind(owner.as_str())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_one(c)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub async fn delete(
    c: &mut PgConnection,
    id: SessionId,
    expected_revision: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query("DELETE FROM sessions WHERE id = $1 AND revision = $2")
        .bind(id.to_string())
        .bind(expected_revision)
        .execute(c)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn visible_for_device(
    c: &mut PgConnection,
    owner: &ClientId,
    device_key: &str,
) -> anyhow::Result<Vec<Session>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sessions WHERE device_key = $1 AND owner = $2 AND NOT deleted \
         ORDER BY created_at_ms, id"
    )))
    .bind(device_key)
    .bind(owner.as_str())
    .fetch_all(c)
    .await?;
    rows.iter().map(decode).collect()
}

pub async fn census(c: &mut PgConnection) -> anyhow::Result<Vec<(QosStatus, GrantState, i64)>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT status, grant_state, COUNT(*) FROM sessions GROUP BY status, grant_state",
    )
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(status, grant, n)| Ok((status.parse()?, grant.parse()?, n)))
        .collect()
}

pub async fn append_event(
    c: &mut PgConnection,
    session: SessionId,
    revision: i64,
    t: &crate::domain::session::Transition,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO session_events (session_id, revision, from_status, to_status, reason, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(session.to_string())
    .bind(revision)
    .bind(t.from.map(|s| s.as_str()))
    .bind(t.to)
    .bind(t.reason)
    .bind(millis(at))
    .execute(c)
    .await?;
    Ok(())
}
