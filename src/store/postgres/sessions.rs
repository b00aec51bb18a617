//! SQL for `sessions` on PostgreSQL. The row is decoded by the SQLite module's `decode` (same
//! columns; see `Columns for PgRow`).

use sqlx::{AssertSqlSafe, PgConnection};

use super::super::millis;
use super::super::port::SessionCount;
use super::super::sessions::{COLUMNS, decode};
use crate::domain::{ClientId, Session, SessionId};

/// Inserts new sessions, one statement for all.
pub async fn insert_many(c: &mut PgConnection, new: &[&Session]) -> anyhow::Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let text = |f: &dyn Fn(&Session) -> Option<String>| -> Vec<Option<String>> {
        new.iter().map(|s| f(s)).collect()
    };
    let int = |f: &dyn Fn(&Session) -> Option<i64>| -> Vec<Option<i64>> {
        new.iter().map(|s| f(s)).collect()
    };
    let flag = |f: &dyn Fn(&Session) -> bool| -> Vec<bool> { new.iter().map(|s| f(s)).collect() };
    let json = |f: &dyn Fn(&Session) -> serde_json::Result<String>| -> anyhow::Result<Vec<String>> {
        Ok(new.iter().map(|s| f(s)).collect::<Result<_, _>>()?)
    };
    let credentials = new
        .iter()
        .map(|s| {
            s.sink_credential
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "INSERT INTO sessions (id, revision, status, status_info, device_key, device, flow, \
         qos_profile, duration_secs, sink, sink_credential, created_at_ms, started_at_ms, \
         expires_at_ms, grant_state, grant_id, deleted, api, lease_until_ms, owner, \
         stray_grant_possible) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
           $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], \
           $12::bigint[], $13::bigint[], $14::bigint[], $15::text[], $16::text[], $17::bool[], \
           $18::text[], $19::bigint[], $20::text[], $21::bool[])",
    )
    .bind(text(&|s| Some(s.id.to_string())))
    .bind(int(&|s| Some(s.revision)))
    .bind(text(&|s| Some(s.status.as_str().to_owned())))
    .bind(text(&|s| s.status_info.map(|i| i.as_str().to_owned())))
    .bind(text(&|s| Some(s.device.key())))
    .bind(json(&|s| serde_json::to_string(&s.device))?)
    .bind(json(&|s| serde_json::to_string(&s.flow))?)
    .bind(text(&|s| Some(s.qos_profile.clone())))
    .bind(int(&|s| Some(s.duration_secs)))
    .bind(text(&|s| s.sink.clone()))
    .bind(credentials)
    .bind(int(&|s| Some(millis(s.created_at))))
    .bind(int(&|s| s.started_at.map(millis)))
    .bind(int(&|s| s.expires_at.map(millis)))
    .bind(text(&|s| Some(s.grant_state.as_str().to_owned())))
    .bind(text(&|s| s.grant_id.clone()))
    .bind(flag(&|s| s.deleted))
    .bind(text(&|s| Some(s.api.as_str().to_owned())))
    .bind(int(&|s| s.lease_until.map(millis)))
    .bind(text(&|s| Some(s.owner.as_str().to_owned())))
    .bind(flag(&|s| s.stray_grant_possible))
    .execute(c)
    .await?;
    Ok(())
}

/// Records the other keys each new session's device is known by.
pub async fn insert_aliases_many(
    c: &mut PgConnection,
    aliases: &[(String, String)],
) -> anyhow::Result<()> {
    if aliases.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO session_device_aliases (device_key, session_id) \
         SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(aliases.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
    .bind(
        aliases
            .iter()
            .map(|(_, id)| id.as_str())
            .collect::<Vec<_>>(),
    )
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

/// The live sessions of each (owner, device key) wanted, by kept key or by alias, with the
/// pair each was found for.
pub async fn live_for_devices(
    c: &mut PgConnection,
    wanted: &[(String, String)],
) -> anyhow::Result<Vec<(String, String, Session)>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // By kept key, and by alias; an OR of both made it a scan. The aliases are looked up
    // first (materialised: few devices have any): joined the other way round, the planner
    // probed the aliases of every live session of the owner.
    let live = "s.status <> 'UNAVAILABLE' AND NOT s.deleted";
    let columns: String = COLUMNS
        .split(", ")
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(AssertSqlSafe(format!(
        "WITH w AS (SELECT * FROM UNNEST($1::text[], $2::text[]) AS w(wanted_owner, wanted_key)), \
         aliased AS MATERIALIZED (SELECT w.wanted_owner, w.wanted_key, a.session_id \
           FROM w JOIN session_device_aliases a ON a.device_key = w.wanted_key) \
         SELECT w.wanted_owner, w.wanted_key, {columns} FROM w \
         JOIN sessions s ON s.owner = w.wanted_owner AND s.device_key = w.wanted_key \
         WHERE {live} \
         UNION \
         SELECT h.wanted_owner, h.wanted_key, {columns} FROM aliased h \
         JOIN sessions s ON s.id = h.session_id AND s.owner = h.wanted_owner \
         WHERE {live}"
    )))
    .bind(wanted.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>())
    .bind(wanted.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>())
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            use sqlx::Row;
            Ok((
                r.try_get("wanted_owner")?,
                r.try_get("wanted_key")?,
                decode(r)?,
            ))
        })
        .collect()
}

/// How many sessions of each owner hold or seek QoS, counting no further than its limit.
pub async fn live_counts(
    c: &mut PgConnection,
    limits: &[(String, u64)],
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    if limits.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT o, (SELECT COUNT(*) FROM (SELECT 1 FROM sessions WHERE owner = o \
           AND status <> 'UNAVAILABLE' AND NOT deleted LIMIT l) AS live) \
         FROM UNNEST($1::text[], $2::bigint[]) AS u(o, l)",
    )
    .bind(limits.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>())
    .bind(
        limits
            .iter()
            .map(|(_, l)| i64::try_from(*l).unwrap_or(i64::MAX))
            .collect::<Vec<i64>>(),
    )
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(o, n)| (o, u64::try_from(n).unwrap_or(0)))
        .collect())
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
