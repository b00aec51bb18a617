//! SQL for the `sessions` table.

use sqlx::{Row, SqliteConnection, sqlite::SqliteRow};

use super::{from_millis, millis};
use crate::domain::{Device, Flow, QosStatus, Session, SessionId, SinkCredential};

const COLUMNS: &str = "id, revision, status, status_info, device, flow, qos_profile, duration_secs, \
    sink, sink_credential, created_at_ms, started_at_ms, expires_at_ms, grant_state, grant_id, deleted";

fn decode(row: &SqliteRow) -> anyhow::Result<Session> {
    let id: String = row.try_get("id")?;
    let status_info: Option<String> = row.try_get("status_info")?;
    let device: String = row.try_get("device")?;
    let flow: String = row.try_get("flow")?;
    let credential: Option<String> = row.try_get("sink_credential")?;
    let status: String = row.try_get("status")?;
    let grant_state: String = row.try_get("grant_state")?;
    Ok(Session {
        id: SessionId(id.parse()?),
        revision: row.try_get("revision")?,
        status: status.parse()?,
        status_info: status_info.map(|s| s.parse()).transpose()?,
        device: serde_json::from_str::<Device>(&device)?,
        flow: serde_json::from_str::<Flow>(&flow)?,
        qos_profile: row.try_get("qos_profile")?,
        duration_secs: row.try_get("duration_secs")?,
        sink: row.try_get("sink")?,
        sink_credential: credential
            .map(|c| serde_json::from_str::<SinkCredential>(&c))
            .transpose()?,
        created_at: from_millis(row.try_get("created_at_ms")?),
        started_at: row
            .try_get::<Option<i64>, _>("started_at_ms")?
            .map(from_millis),
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at_ms")?
            .map(from_millis),
        grant_state: grant_state.parse()?,
        grant_id: row.try_get("grant_id")?,
        deleted: row.try_get::<i64, _>("deleted")? != 0,
    })
}

pub async fn insert(conn: &mut SqliteConnection, s: &Session) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, revision, status, status_info, device_key, device, flow, \
         qos_profile, duration_secs, sink, sink_credential, created_at_ms, started_at_ms, \
         expires_at_ms, grant_state, grant_id, deleted) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(
        s.sink_credential
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?,
    )
    .bind(millis(s.created_at))
    .bind(s.started_at.map(millis))
    .bind(s.expires_at.map(millis))
    .bind(s.grant_state.as_str())
    .bind(&s.grant_id)
    .bind(i64::from(s.deleted))
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the mutable part of a session, only if nobody changed it since `expected_revision`.
/// Returns false when the row moved on (the caller's view is stale).
pub async fn update(
    conn: &mut SqliteConnection,
    s: &Session,
    expected_revision: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE sessions SET revision = ?, status = ?, status_info = ?, duration_secs = ?, \
         started_at_ms = ?, expires_at_ms = ?, grant_state = ?, grant_id = ?, deleted = ? \
         WHERE id = ? AND revision = ?",
    )
    .bind(s.revision)
    .bind(s.status.as_str())
    .bind(s.status_info.map(|i| i.as_str()))
    .bind(s.duration_secs)
    .bind(s.started_at.map(millis))
    .bind(s.expires_at.map(millis))
    .bind(s.grant_state.as_str())
    .bind(&s.grant_id)
    .bind(i64::from(s.deleted))
    .bind(s.id.to_string())
    .bind(expected_revision)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn find(conn: &mut SqliteConnection, id: SessionId) -> anyhow::Result<Option<Session>> {
    let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Sessions of a device that still hold or seek QoS (the overlap check's candidates).
pub async fn live_for_device(
    conn: &mut SqliteConnection,
    device_key: &str,
) -> anyhow::Result<Vec<Session>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sessions WHERE device_key = ? AND status <> 'UNAVAILABLE' AND deleted = 0"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(device_key)
        .fetch_all(conn)
        .await?;
    rows.iter().map(decode).collect()
}

/// Every visible session of a device, oldest first.
pub async fn visible_for_device(
    conn: &mut SqliteConnection,
    device_key: &str,
) -> anyhow::Result<Vec<Session>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sessions WHERE device_key = ? AND deleted = 0 ORDER BY created_at_ms, id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(device_key)
        .fetch_all(conn)
        .await?;
    rows.iter().map(decode).collect()
}

pub async fn delete(
    conn: &mut SqliteConnection,
    id: SessionId,
    expected_revision: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query("DELETE FROM sessions WHERE id = ? AND revision = ?")
        .bind(id.to_string())
        .bind(expected_revision)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn count_by_status(conn: &mut SqliteConnection) -> anyhow::Result<Vec<(QosStatus, i64)>> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM sessions GROUP BY status")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            let s: String = r.try_get("status")?;
            Ok((s.parse()?, r.try_get("n")?))
        })
        .collect()
}
