//! SQL of the job queue (`job_queue` table): enqueue inside the caller's transaction, claim due jobs
//! in batches, acknowledge finished ones in batches, hand back what a stopped process held.

use rusqlite::{OptionalExtension, params};

use super::writer::Tx;

/// A job handed to this process: its row, its payload still encoded.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: i64,
    pub payload: String,
    pub attempt: u32,
    pub due_at_ms: i64,
    /// The claim's fencing epoch (always 0 in SQLite: one process, no leases).
    pub epoch: i64,
    /// The trace context of the work that enqueued the job.
    pub trace: crate::trace::Carried,
}

impl ClaimedRow {
    pub fn fence(&self) -> super::fence::Fence {
        super::fence::Fence {
            job: self.id,
            epoch: self.epoch,
        }
    }
}

pub fn push(tx: &Tx, job: &crate::lifecycle::ScheduledJob) -> anyhow::Result<()> {
    tx.prepare_cached(
        "INSERT INTO job_queue (queue, payload, attempt, due_at_ms, traceparent, correlator) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        job.queue,
        job.payload,
        job.attempt,
        job.due.timestamp_millis(),
        job.trace.traceparent,
        job.trace.correlator
    ])?;
    Ok(())
}

const DUE: &str = "SELECT id, payload, attempt, due_at_ms, traceparent, correlator FROM job_queue \
     WHERE queue = ?1 AND claimed_by IS NULL AND due_at_ms <= ?2 \
     ORDER BY due_at_ms, id LIMIT ?3 + 0";

/// Claims up to `limit` jobs of `queue` due by `now_ms`, earliest first.
///
/// Read, then marked one by one, in the writer's transaction: one `UPDATE ... WHERE id IN
/// (SELECT ...) RETURNING` built two temporary tables each time (the subquery's ids and
/// the returned rows), a tenth of a replay's time for claims of a job or two.
///
/// `LIMIT ?3 + 0`, not `LIMIT ?3`: SQLite's planner reads a bare parameter's value, and a
/// statement whose plan used a value expires at its next binding; the claim, run a thousand
/// times a second, was parsed and planned again every time.
pub fn claim(
    tx: &Tx,
    queue: &str,
    owner: &str,
    now_ms: i64,
    limit: usize,
) -> anyhow::Result<Vec<ClaimedRow>> {
    let claimed = tx
        .prepare_cached(DUE)?
        .query_map(params![queue, now_ms, limit as i64], |r| {
            Ok(ClaimedRow {
                id: r.get(0)?,
                payload: r.get(1)?,
                attempt: r.get::<_, i64>(2)?.max(0) as u32,
                due_at_ms: r.get(3)?,
                epoch: 0,
                trace: crate::trace::Carried {
                    traceparent: r.get(4)?,
                    correlator: r.get(5)?,
                },
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut mark =
        tx.prepare_cached("UPDATE job_queue SET claimed_by = ?, claimed_at_ms = ? WHERE id = ?")?;
    for job in &claimed {
        mark.execute(params![owner, now_ms, job.id])?;
    }
    Ok(claimed)
}

/// The earliest due time among the waiting jobs of `queue`.
pub fn next_due(tx: &Tx, queue: &str) -> anyhow::Result<Option<i64>> {
    Ok(tx
        .prepare_cached(
            "SELECT due_at_ms FROM job_queue WHERE queue = ? AND claimed_by IS NULL \
             ORDER BY due_at_ms LIMIT 1",
        )?
        .query_row([queue], |r| r.get(0))
        .optional()?)
}

/// Deletes finished jobs.
pub fn finish(tx: &Tx, ids: &[i64]) -> anyhow::Result<()> {
    let mut stmt = tx.prepare_cached("DELETE FROM job_queue WHERE id = ?")?;
    for id in ids {
        stmt.execute([id])?;
    }
    Ok(())
}

/// Returns a claimed job to the queue for another attempt at `due_at_ms`.
pub fn reschedule(tx: &Tx, id: i64, attempt: u32, due_at_ms: i64) -> anyhow::Result<()> {
    tx.prepare_cached(
        "UPDATE job_queue SET attempt = ?, due_at_ms = ?, claimed_by = NULL, claimed_at_ms = NULL \
         WHERE id = ?",
    )?
    .execute(params![attempt, due_at_ms, id])?;
    Ok(())
}

/// Hands back the jobs `owner` holds, or every claimed job (None: only safe when no live
/// worker holds them, at startup under the process lock).
pub fn reclaim(tx: &Tx, owner: Option<&str>) -> anyhow::Result<usize> {
    Ok(tx.execute(
        "UPDATE job_queue SET claimed_by = NULL, claimed_at_ms = NULL \
         WHERE claimed_by IS NOT NULL AND (?1 IS NULL OR claimed_by = ?1)",
        [owner],
    )?)
}

/// Jobs of one queue by state, for the metrics gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    pub queue: String,
    pub due: i64,
    pub scheduled: i64,
    pub claimed: i64,
    /// The due time of the oldest due job nobody holds.
    pub oldest_due_ms: Option<i64>,
}

pub fn depth(conn: &Tx, now_ms: i64) -> anyhow::Result<Vec<Depth>> {
    let mut stmt = conn.prepare_cached(
        "SELECT queue, \
         SUM(claimed_by IS NULL AND due_at_ms <= ?1), \
         SUM(claimed_by IS NULL AND due_at_ms > ?1), \
         SUM(claimed_by IS NOT NULL), \
         MIN(CASE WHEN claimed_by IS NULL AND due_at_ms <= ?1 THEN due_at_ms END) \
         FROM job_queue GROUP BY queue",
    )?;
    let rows = stmt.query_map([now_ms], |r| {
        Ok(Depth {
            queue: r.get(0)?,
            due: r.get(1)?,
            scheduled: r.get(2)?,
            claimed: r.get(3)?,
            oldest_due_ms: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Moves the jobs an earlier version left in apalis-sqlite's `Jobs` table (payload: the job's
/// fields plus `attempt` and `due_at_ms`) into ours, then drops that table, in one transaction.
/// Returns how many were adopted.
pub fn adopt_apalis_jobs(tx: &Tx) -> anyhow::Result<usize> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'Jobs')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let adopted = tx.execute(
        "INSERT INTO job_queue (queue, payload, attempt, due_at_ms) \
         SELECT job_type, json_remove(CAST(job AS TEXT), '$.attempt', '$.due_at_ms'), \
                COALESCE(json_extract(CAST(job AS TEXT), '$.attempt'), 0), \
                COALESCE(json_extract(CAST(job AS TEXT), '$.due_at_ms'), run_at * 1000) \
         FROM Jobs \
         WHERE status IN ('Pending', 'Queued', 'Running', 'Failed') \
           AND json_valid(CAST(job AS TEXT))",
        [],
    )?;
    tx.execute_batch("DROP TABLE Jobs")?;
    Ok(adopted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_reuse_their_prepared_statement() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in [
            include_str!("../../migrations/sqlite/20261127000001_job_queue.sql"),
            include_str!("../../migrations/sqlite/20261205000001_job_trace.sql"),
        ] {
            conn.execute_batch(migration).unwrap();
        }
        for n in 0..100 {
            let job = crate::lifecycle::ScheduledJob {
                queue: "q",
                payload: "{}".into(),
                attempt: 0,
                due: super::super::from_millis(n),
                trace: Default::default(),
            };
            push(&conn, &job).unwrap();
        }
        let mut taken = Vec::new();
        for (n, limit) in (0..20).zip([1, 5, 2, 7].into_iter().cycle()) {
            let rows = claim(&conn, "q", "me", n * 5, limit).unwrap();
            assert!(rows.len() <= limit && rows.iter().all(|r| r.due_at_ms <= n * 5));
            taken.extend(rows.iter().map(|r| r.due_at_ms));
        }
        // Earliest first, each job once: the claimed ones are no longer waiting.
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "{taken:?}");
        let waiting: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM job_queue WHERE claimed_by IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(waiting as usize, 100 - taken.len());
        let stmt = conn.prepare_cached(DUE).unwrap();
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "a claim must not parse and plan its statement again"
        );
        assert!(
            stmt.get_status(rusqlite::StatementStatus::VmStep) > 0,
            "it ran"
        );
    }
}
