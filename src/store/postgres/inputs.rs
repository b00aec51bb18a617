//! SQL for `history_inputs` on PostgreSQL: the recorded inputs (see `recording`).

use futures::TryStreamExt;
use sqlx::PgConnection;

use super::super::port::{HistoryEntry, HistoryFilter, HistoryRow, HistorySink};

use crate::recording::Recorded;

/// Inserts inputs in one statement, in their order.
pub async fn insert_many(c: &mut PgConnection, inputs: &[&Recorded]) -> anyhow::Result<()> {
    if inputs.is_empty() {
        return Ok(());
    }
    let bodies = inputs
        .iter()
        .map(|r| serde_json::to_string(&r.input))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "INSERT INTO history_inputs (at_ms, session_id, body) \
         SELECT at_ms, session_id, body \
         FROM UNNEST($1::bigint[], $2::text[], $3::text[]) WITH ORDINALITY AS i(at_ms, session_id, body, n) \
         ORDER BY n",
    )
    .bind(inputs.iter().map(|r| r.at.timestamp_millis()).collect::<Vec<_>>())
    .bind(
        inputs
            .iter()
            .map(|r| r.session.map(|s| s.to_string()))
            .collect::<Vec<_>>(),
    )
    .bind(bodies)
    .execute(c)
    .await?;
    Ok(())
}

/// Inputs and transitions in time order (inputs first within a millisecond), streamed.
pub async fn read_history(
    c: &mut PgConnection,
    filter: HistoryFilter,
    each: &mut HistorySink,
) -> anyhow::Result<u64> {
    type Row = (
        i64,
        Option<String>,
        i32,
        i64,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT at_ms, session_id, 0 AS kind, id, body, NULL::bigint, NULL::text, NULL::text, NULL::text \
         FROM history_inputs WHERE at_ms >= $1 AND at_ms < $2 AND ($3::text IS NULL OR session_id = $3) \
         UNION ALL \
         SELECT at_ms, session_id, 1, id, NULL, revision, from_status, to_status, reason \
         FROM session_events WHERE at_ms >= $1 AND at_ms < $2 AND ($3::text IS NULL OR session_id = $3) \
         ORDER BY 1, 3, 4",
    )
    .bind(filter.since_ms)
    .bind(filter.until_ms)
    .bind(filter.session.map(|s| s.to_string()))
    .fetch(c);
    let mut read = 0;
    while let Some((at_ms, session, kind, _, body, revision, from, to, reason)) =
        rows.try_next().await?
    {
        let entry = if kind == 0 {
            HistoryEntry::Input(body.unwrap_or_default())
        } else {
            HistoryEntry::Transition {
                revision: revision.unwrap_or_default(),
                from,
                to: to.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
            }
        };
        each(HistoryRow {
            at_ms,
            session,
            entry,
        })?;
        read += 1;
    }
    Ok(read)
}

/// Every transition, each session's together in time order (in the order written within a
/// millisecond), sessions in the order of their ids, streamed.
pub async fn read_transitions(c: &mut PgConnection, each: &mut HistorySink) -> anyhow::Result<u64> {
    type Row = (i64, String, i64, Option<String>, String, String);
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT at_ms, session_id, revision, from_status, to_status, reason \
         FROM session_events ORDER BY session_id, at_ms, id",
    )
    .fetch(c);
    let mut read = 0;
    while let Some((at_ms, session, revision, from, to, reason)) = rows.try_next().await? {
        each(HistoryRow {
            at_ms,
            session: Some(session),
            entry: HistoryEntry::Transition {
                revision,
                from,
                to,
                reason,
            },
        })?;
        read += 1;
    }
    Ok(read)
}
