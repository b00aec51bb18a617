//! Telling the other nodes of new jobs (`NOTIFY`), at most every `EVERY` per node. A commit
//! that carries a `NOTIFY` takes a lock that all such commits share: one per transaction
//! serialised this node's commits under load. The announcement is only a hint (each lane also
//! polls the table, and a node's own commits wake it directly), so it goes after the commits,
//! folded: the earliest due time per queue since the last one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::lifecycle::ScheduledJob;

const EVERY: Duration = Duration::from_millis(50);

#[derive(Default)]
pub(super) struct Announcer {
    earliest: Mutex<HashMap<&'static str, i64>>,
    wake: Notify,
}

impl Announcer {
    /// Sends what committed jobs `note` collected on `channel`, until the pool closes.
    pub fn start(pool: PgPool, channel: &'static str) -> Arc<Self> {
        let me = Arc::new(Self::default());
        let announcer = me.clone();
        tokio::spawn(async move {
            while !pool.is_closed() {
                announcer.wake.notified().await;
                let due: Vec<String> = {
                    let mut earliest = announcer.lock();
                    earliest.drain().map(|(q, d)| format!("{q}:{d}")).collect()
                };
                if !due.is_empty()
                    && let Err(e) =
                        sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
                            .bind(channel)
                            .bind(due)
                            .execute(&pool)
                            .await
                {
                    // The others' polls find the jobs anyway.
                    tracing::debug!(error = %e, "announcing new jobs failed");
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        me
    }

    /// Jobs that were just committed.
    pub fn note<'a>(&self, jobs: impl IntoIterator<Item = &'a ScheduledJob>) {
        let mut any = false;
        {
            let mut earliest = self.lock();
            for job in jobs {
                let due = job.due.timestamp_millis();
                earliest
                    .entry(job.queue)
                    .and_modify(|d| *d = (*d).min(due))
                    .or_insert(due);
                any = true;
            }
        }
        if any {
            self.wake.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, i64>> {
        self.earliest.lock().unwrap_or_else(|p| p.into_inner())
    }
}
