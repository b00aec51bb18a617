//! SQL for `sessions` on PostgreSQL. The row is decoded by the SQLite module's `decode` (same
//! columns; see `Columns for PgRow`).

use sqlx::{AssertSqlSafe, PgConnection};

use super::super::millis;
use super::super::port::SessionCount;
use super::super::sessions::{COLUMNS, decode};
use crate::domain::{ClientId, Session, SessionId};

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

/// A session by id (a plain read; changes lock theirs in `lock_many`).
pub async fn find(c: &mut PgConnection, id: SessionId) -> anyhow::Result<Option<Session>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sessions WHERE id = $1"
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
    // Two index lookups (by kept key, by alias); an OR of both made it a scan of every session.
    let live = "owner = $2 AND status <> 'UNAVAILABLE' AND NOT deleted";
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sessions WHERE device_key = ANY($1) AND {live} \
         UNION SELECT {COLUMNS} FROM sessions WHERE id IN \
         (SELECT session_id FROM session_device_aliases WHERE device_key = ANY($1)) AND {live}"
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

pub async fn census(c: &mut PgConnection) -> anyhow::Result<Vec<SessionCount>> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT status, grant_state, qos_profile, COUNT(*) FROM sessions \
         GROUP BY status, grant_state, qos_profile",
    )
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(status, grant, profile, count)| {
            Ok(SessionCount {
                status: status.parse()?,
                grant: grant.parse()?,
                profile,
                count,
            })
        })
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

/// The sessions of `ids` (sorted), locked for the transaction in that order.
pub async fn lock_many(c: &mut PgConnection, ids: &[SessionId]) -> anyhow::Result<Vec<Session>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    )))
    .bind(ids)
    .fetch_all(c)
    .await?;
    rows.iter().map(decode).collect()
}

/// Writes the mutable part of each session, each at the revision it was read at; every row
/// must be written (they are locked, so a miss is a bug, not a race).
pub async fn update_many(c: &mut PgConnection, updates: &[(Session, i64)]) -> anyhow::Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let col = |f: &dyn Fn(&Session) -> Option<String>| -> Vec<Option<String>> {
        updates.iter().map(|(s, _)| f(s)).collect()
    };
    let int = |f: &dyn Fn(&Session) -> Option<i64>| -> Vec<Option<i64>> {
        updates.iter().map(|(s, _)| f(s)).collect()
    };
    let done = sqlx::query(
        "UPDATE sessions AS s SET revision = u.revision, status = u.status, \
         status_info = u.status_info, duration_secs = u.duration_secs, \
         started_at_ms = u.started_at_ms, expires_at_ms = u.expires_at_ms, \
         grant_state = u.grant_state, grant_id = u.grant_id, deleted = u.deleted, \
         lease_until_ms = u.lease_until_ms, stray_grant_possible = u.stray_grant_possible \
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], \
                     $11::bool[], $12::bigint[], $13::bool[]) \
           AS u(id, read_revision, revision, status, status_info, duration_secs, \
                started_at_ms, expires_at_ms, grant_state, grant_id, deleted, lease_until_ms, \
                stray_grant_possible) \
         WHERE s.id = u.id AND s.revision = u.read_revision",
    )
    .bind(col(&|s| Some(s.id.to_string())))
    .bind(updates.iter().map(|(_, r)| *r).collect::<Vec<i64>>())
    .bind(int(&|s| Some(s.revision)))
    .bind(col(&|s| Some(s.status.as_str().to_owned())))
    .bind(col(&|s| s.status_info.map(|i| i.as_str().to_owned())))
    .bind(int(&|s| Some(s.duration_secs)))
    .bind(int(&|s| s.started_at.map(millis)))
    .bind(int(&|s| s.expires_at.map(millis)))
    .bind(col(&|s| Some(s.grant_state.as_str().to_owned())))
    .bind(col(&|s| s.grant_id.clone()))
    .bind(
        updates
            .iter()
            .map(|(s, _)| s.deleted)
            .collect::<Vec<bool>>(),
    )
    .bind(int(&|s| s.lease_until.map(millis)))
    .bind(
        updates
            .iter()
            .map(|(s, _)| s.stray_grant_possible)
            .collect::<Vec<bool>>(),
    )
    .execute(c)
    .await?;
    anyhow::ensure!(
        done.rows_affected() as usize == updates.len(),
        "{} of {} locked sessions were written",
        done.rows_affected(),
        updates.len()
    );
    Ok(())
}

/// Deletes sessions, each at the revision it was read at.
pub async fn delete_many(c: &mut PgConnection, deletes: &[(SessionId, i64)]) -> anyhow::Result<()> {
    if deletes.is_empty() {
        return Ok(());
    }
    let done = sqlx::query(
        "DELETE FROM sessions AS s USING UNNEST($1::text[], $2::bigint[]) AS d(id, revision) \
         WHERE s.id = d.id AND s.revision = d.revision",
    )
    .bind(
        deletes
            .iter()
            .map(|(id, _)| id.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(deletes.iter().map(|(_, r)| *r).collect::<Vec<i64>>())
    .execute(c)
    .await?;
    anyhow::ensure!(
        done.rows_affected() as usize == deletes.len(),
        "{} of {} locked sessions were deleted",
        done.rows_affected(),
        deletes.len()
    );
    Ok(())
}

type Recorded = (
    SessionId,
    i64,
    crate::domain::session::Transition,
    chrono::DateTime<chrono::Utc>,
);

/// Appends transitions in the order given (their ids follow it).
pub async fn append_events(c: &mut PgConnection, events: &[&Recorded]) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO session_events (session_id, revision, from_status, to_status, reason, at_ms) \
         SELECT session_id, revision, from_status, to_status, reason, at_ms \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[]) \
           WITH ORDINALITY AS e(session_id, revision, from_status, to_status, reason, at_ms, n) \
         ORDER BY n",
    )
    .bind(events.iter().map(|e| e.0.to_string()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.1).collect::<Vec<i64>>())
    .bind(
        events
            .iter()
            .map(|e| e.2.from.map(|s| s.as_str()))
            .collect::<Vec<Option<&str>>>(),
    )
    .bind(events.iter().map(|e| e.2.to).collect::<Vec<&str>>())
    .bind(events.iter().map(|e| e.2.reason).collect::<Vec<&str>>())
    .bind(events.iter().map(|e| millis(e.3)).collect::<Vec<i64>>())
    .execute(c)
    .await?;
    Ok(())
}
