//! SQL for the `sessions` table: writes (and the reads that decide them) run in the writer,
//! plain reads on a read connection.

use rusqlite::{OptionalExtension, params};

use super::port::SessionCount;
use super::writer::Tx;
use super::{Columns, InOrder, from_millis, millis};
use crate::domain::{ClientId, Device, Flow, Session, SessionId, SinkCredential};

pub(super) const COLUMNS: &str = "id, revision, status, status_info, device, flow, qos_profile, duration_secs, \
    sink, sink_credential, created_at_ms, started_at_ms, expires_at_ms, grant_state, grant_id, deleted, \
    api, lease_until_ms, owner, stray_grant_possible";

pub(super) fn decode(row: &impl Columns) -> anyhow::Result<Session> {
    Ok(Session {
        id: SessionId(row.text("id")?.parse()?),
        revision: row.int("revision")?,
        status: row.text("status")?.parse()?,
        status_info: row
            .opt_text("status_info")?
            .map(|s| s.parse())
            .transpose()?,
        device: serde_json::from_str::<Device>(&row.text("device")?)?,
        flow: serde_json::from_str::<Flow>(&row.text("flow")?)?,
        qos_profile: row.text("qos_profile")?,
        duration_secs: row.int("duration_secs")?,
        sink: row.opt_text("sink")?,
        sink_credential: row
            .opt_text("sink_credential")?
            .map(|c| serde_json::from_str::<SinkCredential>(&c))
            .transpose()?,
        created_at: from_millis(row.int("created_at_ms")?),
        started_at: row.opt_int("started_at_ms")?.map(from_millis),
        expires_at: row.opt_int("expires_at_ms")?.map(from_millis),
        grant_state: row.text("grant_state")?.parse()?,
        grant_id: row.opt_text("grant_id")?,
        deleted: row.int("deleted")? != 0,
        api: row.text("api")?.parse()?,
        lease_until: row.opt_int("lease_until_ms")?.map(from_millis),
        owner: ClientId(row.text("owner")?),
        stray_grant_possible: row.int("stray_grant_possible")? != 0,
    })
}

pub fn insert(tx: &Tx, s: &Session) -> anyhow::Result<()> {
    let credential = s
        .sink_credential
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    tx.prepare_cached(
        "INSERT INTO sessions (id, revision, status, status_info, device_key, device, flow, \
         qos_profile, duration_secs, sink, sink_credential, created_at_ms, started_at_ms, \
         expires_at_ms, grant_state, grant_id, deleted, api, lease_until_ms, owner, \
         stray_grant_possible) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        s.id.to_string(),
        s.revision,
        s.status.as_str(),
        s.status_info.map(|i| i.as_str()),
        s.device.key(),
        serde_json::to_string(&s.device)?,
        serde_json::to_string(&s.flow)?,
        s.qos_profile,
        s.duration_secs,
        s.sink,
        credential,
        millis(s.created_at),
        s.started_at.map(millis),
        s.expires_at.map(millis),
        s.grant_state.as_str(),
        s.grant_id,
        i64::from(s.deleted),
        s.api.as_str(),
        s.lease_until.map(millis),
        s.owner.as_str(),
        i64::from(s.stray_grant_possible),
    ])?;
    Ok(())
}

/// Writes the mutable part of a session, only if nobody changed it since `expected_revision`.
/// Returns false when the row moved on (the caller's view is stale).
pub fn update(tx: &Tx, s: &Session, expected_revision: i64) -> anyhow::Result<bool> {
    let changed = tx
        .prepare_cached(
            "UPDATE sessions SET revision = ?, status = ?, status_info = ?, duration_secs = ?, \
             started_at_ms = ?, expires_at_ms = ?, grant_state = ?, grant_id = ?, deleted = ?, \
             lease_until_ms = ?, stray_grant_possible = ? \
             WHERE id = ? AND revision = ?",
        )?
        .execute(params![
            s.revision,
            s.status.as_str(),
            s.status_info.map(|i| i.as_str()),
            s.duration_secs,
            s.started_at.map(millis),
            s.expires_at.map(millis),
            s.grant_state.as_str(),
            s.grant_id,
            i64::from(s.deleted),
            s.lease_until.map(millis),
            i64::from(s.stray_grant_possible),
            s.id.to_string(),
            expected_revision,
        ])?;
    Ok(changed == 1)
}

/// A session by id: what a decision inside a write transaction reads, and plain reads too.
pub fn find(tx: &Tx, id: SessionId) -> anyhow::Result<Option<Session>> {
    static FIND: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM sessions WHERE id = ?"));
    let mut stmt = tx.prepare_cached(&FIND)?;
    let row = stmt
        .query_row([id.to_string()], |r| Ok(decode(&InOrder::new(r))))
        .optional()?;
    row.transpose()
}

// `+owner`: the owner is a filter here, never the index to walk (one client may hold
// thousands of live sessions; a device has a handful).
const LIVE_BY_KEY: &str = "FROM sessions WHERE device_key = ?1 AND +owner = ?2 \
     AND status <> 'UNAVAILABLE' AND deleted = 0";
const LIVE_BY_ALIAS: &str = "FROM sessions WHERE id IN \
     (SELECT session_id FROM session_device_aliases WHERE device_key = ?1) \
     AND +owner = ?2 AND status <> 'UNAVAILABLE' AND deleted = 0";

/// One client's sessions that still hold or seek QoS for a device named by any of `keys`, as
/// the kept identifier or as an alias (the overlap check's candidates), each once.
pub fn live_for_device(tx: &Tx, owner: &ClientId, keys: &[String]) -> anyhow::Result<Vec<Session>> {
    let mut by_key = tx.prepare_cached(&format!("SELECT {COLUMNS} {LIVE_BY_KEY}"))?;
    let mut by_alias = tx.prepare_cached(&format!("SELECT {COLUMNS} {LIVE_BY_ALIAS}"))?;
    let mut found: Vec<Session> = Vec::new();
    for key in keys {
        for stmt in [&mut by_key, &mut by_alias] {
            for row in stmt.query_map(params![key, owner.as_str()], |r| {
                Ok(decode(&InOrder::new(r)))
            })? {
                let session = row??;
                if !found.iter().any(|s| s.id == session.id) {
                    found.push(session);
                }
            }
        }
    }
    Ok(found)
}

/// Records the keys besides the kept identifier's under which the session's device was named.
pub fn insert_aliases(tx: &Tx, session: &Session, keys: &[String]) -> anyhow::Result<()> {
    let kept = session.device.key();
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO session_device_aliases (device_key, session_id) VALUES (?, ?)",
    )?;
    for key in keys.iter().filter(|k| **k != kept) {
        stmt.execute(params![key, session.id.to_string()])?;
    }
    Ok(())
}

/// How many sessions of a client hold or seek QoS, counting no further than `limit` (the
/// quota check needs only to know whether the cap is reached). The live statuses are named, not
/// "not UNAVAILABLE": the index then seeks them, instead of walking past every ended session
/// the client still has in its retention period.
/// The client's live sessions (REQUESTED or AVAILABLE, not deleted), as the triggers of
/// `owner_live_counts` keep them.
pub fn live_count_for_owner(tx: &Tx, owner: &ClientId) -> anyhow::Result<u64> {
    let n: Option<i64> = tx
        .prepare_cached("SELECT live FROM owner_live_counts WHERE owner = ?")?
        .query_row(params![owner.as_str()], |r| r.get(0))
        .optional()?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

pub fn delete(tx: &Tx, id: SessionId, expected_revision: i64) -> anyhow::Result<bool> {
    let done = tx
        .prepare_cached("DELETE FROM sessions WHERE id = ? AND revision = ?")?
        .execute(params![id.to_string(), expected_revision])?;
    Ok(done == 1)
}

/// Every visible session of a device, oldest first.
pub fn visible_for_device(
    conn: &Tx,
    owner: &ClientId,
    device_key: &str,
) -> anyhow::Result<Vec<Session>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sessions WHERE device_key = ? AND owner = ? AND deleted = 0 \
         ORDER BY created_at_ms, id"
    ))?;
    let rows = stmt.query_map(params![device_key, owner.as_str()], |r| {
        Ok(decode(&InOrder::new(r)))
    })?;
    rows.map(|r| r?).collect()
}

/// Stored sessions counted by QoS status and grant state, in one scan (for `/metrics`).
pub fn census(conn: &Tx) -> anyhow::Result<Vec<SessionCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, grant_state, qos_profile, COUNT(*) FROM sessions \
         GROUP BY status, grant_state, qos_profile",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    rows.map(|r| {
        let (status, grant, profile, count) = r?;
        Ok(SessionCount {
            status: status.parse()?,
            grant: grant.parse()?,
            profile,
            count,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as the migrations build it.
    fn schema() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        migrate(&conn, |_| true);
        conn
    }

    /// Applies the migrations whose file names `take` accepts, in order.
    fn migrate(conn: &rusqlite::Connection, take: impl Fn(&str) -> bool) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            if take(&file.file_name().unwrap().to_string_lossy()) {
                conn.execute_batch(&std::fs::read_to_string(file).unwrap())
                    .unwrap();
            }
        }
    }

    const COUNTS: &str = "20261207000001_owner_live_counts.sql";

    /// (owner, count) rows of `sql`, in its order.
    fn owner_counts(conn: &rusqlite::Connection, sql: &str) -> Vec<(String, i64)> {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    fn counted(conn: &rusqlite::Connection) -> Vec<(String, i64)> {
        owner_counts(
            conn,
            "SELECT owner, live FROM owner_live_counts WHERE live <> 0 ORDER BY owner",
        )
    }

    fn recounted(conn: &rusqlite::Connection) -> Vec<(String, i64)> {
        owner_counts(
            conn,
            "SELECT owner, COUNT(*) FROM sessions WHERE status IN ('REQUESTED', 'AVAILABLE') \
             AND deleted = 0 GROUP BY owner ORDER BY owner",
        )
    }

    /// A session row with only what the counts read; an id already stored is left as it is.
    fn insert_raw(conn: &rusqlite::Connection, id: &str, owner: &str, status: &str, deleted: bool) {
        conn.execute(
            "INSERT OR IGNORE INTO sessions (id, revision, status, device_key, device, flow, \
             qos_profile, duration_secs, created_at_ms, owner, deleted) \
             VALUES (?1, 1, ?2, 'tel:+1', '{}', '{}', 'QOS_E', 60, 0, ?3, ?4)",
            params![id, status, owner, deleted],
        )
        .unwrap();
    }

    #[test]
    fn the_live_counts_start_from_the_stored_sessions_and_follow_every_change() {
        use rand::{Rng, SeedableRng};
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        migrate(&conn, |f| f < COUNTS);
        let statuses = ["REQUESTED", "AVAILABLE", "UNAVAILABLE"];
        let owners = ["a", "b", "c"];
        for id in 0..30 {
            insert_raw(
                &conn,
                &id.to_string(),
                owners[id as usize % 3],
                statuses[id as usize % 3],
                id % 7 == 0,
            );
        }
        migrate(&conn, |f| f >= COUNTS);
        assert_eq!(counted(&conn), recounted(&conn));
        assert!(!counted(&conn).is_empty());

        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for step in 0..2_000u32 {
            let id = rng.random_range(0..60u32).to_string();
            let owner = owners[rng.random_range(0..owners.len())];
            let status = statuses[rng.random_range(0..statuses.len())];
            match rng.random_range(0..5) {
                0 => insert_raw(&conn, &id, owner, status, false),
                1 => {
                    conn.execute("DELETE FROM sessions WHERE id = ?", params![id])
                        .unwrap();
                }
                2 => {
                    conn.execute(
                        "UPDATE sessions SET deleted = ?2 WHERE id = ?1",
                        params![id, rng.random_bool(0.5)],
                    )
                    .unwrap();
                }
                3 => {
                    conn.execute(
                        "UPDATE sessions SET owner = ?2 WHERE id = ?1",
                        params![id, owner],
                    )
                    .unwrap();
                }
                _ => {
                    conn.execute(
                        "UPDATE sessions SET status = ?2, revision = revision + 1 WHERE id = ?1",
                        params![id, status],
                    )
                    .unwrap();
                }
            }
            assert_eq!(counted(&conn), recounted(&conn), "after step {step}");
        }
        let live = recounted(&conn);
        let (owner, n) = live.first().expect("some live sessions are left");
        let read = live_count_for_owner(&conn, &ClientId(owner.clone())).unwrap();
        assert_eq!(read, u64::try_from(*n).unwrap());
        let nobody = live_count_for_owner(&conn, &ClientId("nobody".into())).unwrap();
        assert_eq!(nobody, 0);
    }

    fn plan(conn: &rusqlite::Connection, sql: &str) -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN SELECT id {sql}"))
            .unwrap();
        let rows = stmt
            .query_map(params!["tel:+33612345678", "shop"], |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn the_overlap_check_walks_the_device_index_not_the_owners_sessions() {
        let conn = schema();
        let by_key = plan(&conn, LIVE_BY_KEY);
        assert!(by_key.contains("by_device (device_key=?)"), "{by_key}");
        let by_alias = plan(&conn, LIVE_BY_ALIAS);
        assert!(!by_alias.contains("sessions_owner_live"), "{by_alias}");
        assert!(by_alias.contains("session_device_aliases"), "{by_alias}");
    }
}
