//! SQL of the job queue on PostgreSQL: claims in batches with `FOR UPDATE SKIP LOCKED`, each
//! claim a lease with the next epoch; settlements and fenced writes check the epoch. Due times
//! are on the clock port, leases (`claimed_at_ms`, `lease_until_ms`) on the wall clock.

use sqlx::PgConnection;

use super::super::ClaimedRow;
use super::super::fence::Fence;
use super::super::jobs::Depth;
use super::super::port::RoundTime;
use crate::lifecycle::ScheduledJob;

/// Enqueues jobs in one statement.
pub async fn push(c: &mut PgConnection, jobs: &[ScheduledJob]) -> anyhow::Result<()> {
    push_refs(c, &jobs.iter().collect::<Vec<_>>()).await
}

pub async fn push_refs(c: &mut PgConnection, jobs: &[&ScheduledJob]) -> anyhow::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue).collect();
    let payloads: Vec<&str> = jobs.iter().map(|j| j.payload.as_str()).collect();
    let attempts: Vec<i32> = jobs
        .iter()
        .map(|j| i32::try_from(j.attempt).unwrap_or(i32::MAX))
        .collect();
    let due: Vec<i64> = jobs.iter().map(|j| j.due.timestamp_millis()).collect();
    let parents: Vec<Option<&str>> = jobs
        .iter()
        .map(|j| j.trace.traceparent.as_deref())
        .collect();
    let correlators: Vec<Option<&str>> =
        jobs.iter().map(|j| j.trace.correlator.as_deref()).collect();
    sqlx::query(
        "INSERT INTO job_queue (queue, payload, attempt, due_at_ms, traceparent, correlator) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], \
         $6::text[])",
    )
    .bind(queues)
    .bind(payloads)
    .bind(attempts)
    .bind(due)
    .bind(parents)
    .bind(correlators)
    .execute(c)
    .await?;
    Ok(())
}

/// Claims up to `limit` due jobs of `queue`, waiting ones and those whose lease lapsed, earliest
/// first; returns them and how many were taken over from a lapsed lease.
pub async fn claim(
    c: &mut PgConnection,
    queue: &str,
    owner: &str,
    at: RoundTime,
    lease_ms: i64,
    limit: usize,
) -> anyhow::Result<(Vec<ClaimedRow>, usize)> {
    // Two locked picks, each through its own index, then the earliest due of both.
    type Row = (
        i64,
        String,
        i32,
        i64,
        i64,
        bool,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "WITH waiting AS ( \
             SELECT id, due_at_ms, false AS taken_over FROM job_queue \
             WHERE queue = $1 AND claimed_by IS NULL AND due_at_ms <= $2 \
             ORDER BY due_at_ms LIMIT $5 FOR UPDATE SKIP LOCKED), \
         lapsed AS ( \
             SELECT id, due_at_ms, true AS taken_over FROM job_queue \
             WHERE queue = $1 AND claimed_by IS NOT NULL AND lease_until_ms < $6 \
               AND due_at_ms <= $2 \
             ORDER BY lease_until_ms LIMIT $5 FOR UPDATE SKIP LOCKED), \
         picked AS ( \
             SELECT id, taken_over FROM (SELECT * FROM lapsed UNION ALL SELECT * FROM waiting) AS p \
             ORDER BY due_at_ms LIMIT $5) \
         UPDATE job_queue AS j SET claimed_by = $3, claimed_at_ms = $6, \
             lease_until_ms = $6 + $4, epoch = j.epoch + 1 \
         FROM picked WHERE j.id = picked.id \
         RETURNING j.id, j.payload, j.attempt, j.due_at_ms, j.epoch, picked.taken_over, \
             j.traceparent, j.correlator",
    )
    .bind(queue)
    .bind(at.now_ms)
    .bind(owner)
    .bind(lease_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(at.wall_ms)
    .fetch_all(c)
    .await?;
    let taken_over = rows.iter().filter(|r| r.5).count();
    let mut claimed: Vec<ClaimedRow> = rows
        .into_iter()
        .map(
            |(id, payload, attempt, due_at_ms, epoch, _, traceparent, correlator)| ClaimedRow {
                id,
                payload,
                attempt: u32::try_from(attempt).unwrap_or(0),
                due_at_ms,
                epoch,
                trace: crate::trace::Carried {
                    traceparent,
                    correlator,
                },
            },
        )
        .collect();
    claimed.sort_by_key(|c| (c.due_at_ms, c.id));
    Ok((claimed, taken_over))
}

/// When (on the clock port) `queue` next has a job to claim: the earliest due waiting job, or
/// the earliest lapse of a lease on a due job (a node that died leaves those), carried over
/// from the wall clock as "that much later than now".
pub async fn next_due(
    c: &mut PgConnection,
    queue: &str,
    at: RoundTime,
) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT LEAST( \
             (SELECT due_at_ms FROM job_queue WHERE queue = $1 AND claimed_by IS NULL \
              ORDER BY due_at_ms LIMIT 1), \
             (SELECT GREATEST(due_at_ms, $2 + (lease_until_ms + 1 - $3)) FROM job_queue \
              WHERE queue = $1 AND claimed_by IS NOT NULL ORDER BY lease_until_ms LIMIT 1))",
    )
    .bind(queue)
    .bind(at.now_ms)
    .bind(at.wall_ms)
    .fetch_one(c)
    .await?)
}

/// Deletes finished jobs still held at their claim's epoch; returns how many were deleted.
pub async fn finish(c: &mut PgConnection, done: &[Fence]) -> anyhow::Result<usize> {
    if done.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = done.iter().map(|f| f.job).collect();
    let epochs: Vec<i64> = done.iter().map(|f| f.epoch).collect();
    let deleted = sqlx::query(
        "DELETE FROM job_queue AS j USING UNNEST($1::bigint[], $2::bigint[]) AS d(id, epoch) \
         WHERE j.id = d.id AND j.epoch = d.epoch",
    )
    .bind(ids)
    .bind(epochs)
    .execute(c)
    .await?;
    Ok(deleted.rows_affected() as usize)
}

/// Puts claimed jobs back for another attempt, where the claim still holds them.
pub async fn reschedule(
    c: &mut PgConnection,
    retries: &[(Fence, u32, i64)],
) -> anyhow::Result<usize> {
    if retries.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = retries.iter().map(|r| r.0.job).collect();
    let epochs: Vec<i64> = retries.iter().map(|r| r.0.epoch).collect();
    let attempts: Vec<i32> = retries
        .iter()
        .map(|r| i32::try_from(r.1).unwrap_or(i32::MAX))
        .collect();
    let due: Vec<i64> = retries.iter().map(|r| r.2).collect();
    let updated = sqlx::query(
        "UPDATE job_queue AS j SET attempt = r.attempt, due_at_ms = r.due, claimed_by = NULL, \
             claimed_at_ms = NULL, lease_until_ms = NULL \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::bigint[]) AS r(id, epoch, attempt, due) \
         WHERE j.id = r.id AND j.epoch = r.epoch",
    )
    .bind(ids)
    .bind(epochs)
    .bind(attempts)
    .bind(due)
    .execute(c)
    .await?;
    Ok(updated.rows_affected() as usize)
}

/// Hands back every job `owner` holds (a node stopping).
pub async fn release_owned(c: &mut PgConnection, owner: &str) -> anyhow::Result<usize> {
    let done = sqlx::query(
        "UPDATE job_queue SET claimed_by = NULL, claimed_at_ms = NULL, lease_until_ms = NULL \
         WHERE claimed_by = $1",
    )
    .bind(owner)
    .execute(c)
    .await?;
    Ok(done.rows_affected() as usize)
}

/// Hands back every claimed job (only when no node runs).
pub async fn release_all(c: &mut PgConnection) -> anyhow::Result<usize> {
    let done = sqlx::query(
        "UPDATE job_queue SET claimed_by = NULL, claimed_at_ms = NULL, lease_until_ms = NULL \
         WHERE claimed_by IS NOT NULL",
    )
    .execute(c)
    .await?;
    Ok(done.rows_affected() as usize)
}

/// Extends the leases `owner` still holds (the heartbeat); returns how many. Rows a write of
/// their job holds locked now are skipped, not waited for (that write would wait for this
/// update in turn): they are renewed by the next beat, well within the lease.
pub async fn renew(c: &mut PgConnection, owner: &str, until_ms: i64) -> anyhow::Result<usize> {
    let done = sqlx::query(
        "UPDATE job_queue SET lease_until_ms = $2 WHERE id IN ( \
             SELECT id FROM job_queue WHERE claimed_by = $1 AND lease_until_ms < $2 \
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(owner)
    .bind(until_ms)
    .execute(c)
    .await?;
    Ok(done.rows_affected() as usize)
}

/// Of `fences`, those whose job is still held at their epoch, as (job, epoch), each locked
/// against a new claim until the transaction ends.
pub async fn holding(
    c: &mut PgConnection,
    fences: &[Fence],
) -> anyhow::Result<std::collections::HashSet<(i64, i64)>> {
    if fences.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT j.id, j.epoch FROM job_queue AS j \
         JOIN UNNEST($1::bigint[], $2::bigint[]) AS f(id, epoch) \
           ON j.id = f.id AND j.epoch = f.epoch \
         ORDER BY j.id FOR SHARE OF j",
    )
    .bind(fences.iter().map(|f| f.job).collect::<Vec<_>>())
    .bind(fences.iter().map(|f| f.epoch).collect::<Vec<_>>())
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Whether the job is still held at `fence`'s epoch, locking it against a new claim until the
/// transaction ends (a claim skips locked rows).
pub async fn holds(c: &mut PgConnection, fence: Fence) -> anyhow::Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM job_queue WHERE id = $1 AND epoch = $2 FOR SHARE")
            .bind(fence.job)
            .bind(fence.epoch)
            .fetch_optional(c)
            .await?;
    Ok(found.is_some())
}

pub async fn depth(c: &mut PgConnection, now_ms: i64) -> anyhow::Result<Vec<Depth>> {
    let rows: Vec<(String, i64, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT queue, \
         COUNT(*) FILTER (WHERE claimed_by IS NULL AND due_at_ms <= $1), \
         COUNT(*) FILTER (WHERE claimed_by IS NULL AND due_at_ms > $1), \
         COUNT(*) FILTER (WHERE claimed_by IS NOT NULL), \
         MIN(due_at_ms) FILTER (WHERE claimed_by IS NULL AND due_at_ms <= $1) \
         FROM job_queue GROUP BY queue",
    )
    .bind(now_ms)
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(queue, due, scheduled, claimed, oldest_due_ms)| Depth {
            queue,
            due,
            scheduled,
            claimed,
            oldest_due_ms,
        })
        .collect())
}
