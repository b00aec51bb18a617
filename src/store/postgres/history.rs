//! Deleting history past its retention on PostgreSQL, a bounded batch per table and call.

use sqlx::PgConnection;

use super::super::Purged;

pub async fn purge(c: &mut PgConnection, before_ms: i64, batch: usize) -> anyhow::Result<Purged> {
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let notifications = sqlx::query(
        "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications \
         WHERE state <> 'pending' AND finished_at_ms < $1 ORDER BY finished_at_ms LIMIT $2)",
    )
    .bind(before_ms)
    .bind(batch)
    .execute(&mut *c)
    .await?
    .rows_affected() as usize;
    let events = sqlx::query(
        "DELETE FROM session_events WHERE id IN (SELECT e.id FROM session_events e \
         WHERE e.at_ms < $1 AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = e.session_id) \
         ORDER BY e.id LIMIT $2)",
    )
    .bind(before_ms)
    .bind(batch)
    .execute(&mut *c)
    .await?
    .rows_affected() as usize;
    let grants = sqlx::query(
        "DELETE FROM sim_grants WHERE grant_id IN (SELECT g.grant_id FROM sim_grants g \
         WHERE g.released_at_ms < $1 \
         AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = g.session_id) \
         ORDER BY g.released_at_ms LIMIT $2)",
    )
    .bind(before_ms)
    .bind(batch)
    .execute(&mut *c)
    .await?
    .rows_affected() as usize;
    let inputs = sqlx::query(
        "DELETE FROM history_inputs WHERE id IN (SELECT i.id FROM history_inputs i \
         WHERE i.at_ms < $1 AND (i.session_id IS NULL \
           OR NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = i.session_id)) \
         ORDER BY i.id LIMIT $2)",
    )
    .bind(before_ms)
    .bind(batch)
    .execute(&mut *c)
    .await?
    .rows_affected() as usize;
    Ok(Purged {
        notifications,
        events,
        grants,
        inputs,
    })
}
