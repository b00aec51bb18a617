//! The dispatcher loop: each round is one write transaction that acknowledges what workers
//! finished, reschedules what they retry, and claims due jobs for every lane with room.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{JobQueue, Settlement};
use crate::clock::SharedClock;
use crate::store::ClaimedRow;
use crate::store::{Claim, RoundTime, SharedStore};

/// Pause after a failed round, so that an unavailable database is not hammered.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Runs rounds until `stop` resolves, then writes the last settlements and returns. Resolve
/// `stop` only once the workers have stopped, so that no settlement comes after the last round.
pub async fn run_dispatcher(
    queue: Arc<JobQueue>,
    store: SharedStore,
    clock: SharedClock,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last_scan: HashMap<&'static str, DateTime<Utc>> = HashMap::new();
    loop {
        let now = clock.now();
        let now_ms = now.timestamp_millis();
        let wanted = if queue.held.load(Ordering::Acquire) {
            Vec::new()
        } else {
            lanes_to_claim(&queue, &last_scan, now)
        };
        if wanted.is_empty() && queue.defers_settlements() {
            if park(&queue, &clock, sleep_time(&queue, now_ms), &mut stop).await {
                break;
            }
            continue;
        }
        // Shared with the round's closure; kept here to hand back if the round fails.
        let pending = queue.take_settlements();
        let retried = pending.retried;
        let settlements = Arc::new(pending.settlements);
        let pause = if wanted.is_empty() && settlements.is_empty() {
            sleep_time(&queue, now_ms)
        } else {
            let at = RoundTime {
                now_ms,
                wall_ms: Utc::now().timestamp_millis(),
            };
            queue.round_active.store(true, Ordering::Release);
            let outcome = match round(&queue, &store, &wanted, settlements.clone(), at).await {
                Ok(claimed) => {
                    for name in &wanted {
                        last_scan.insert(name, clock.now());
                    }
                    hand_out(&queue, claimed);
                    queue.retries_written(&retried);
                    queue.finished(settlements.len());
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "job queue round failed; retrying");
                    queue.restore_settlements(super::Pending {
                        settlements: Arc::unwrap_or_clone(settlements),
                        retried,
                    });
                    for name in &wanted {
                        queue.lanes[name]
                            .next_due_ms
                            .store(i64::MIN, Ordering::Release);
                    }
                    AFTER_FAILURE
                }
            };
            queue.round_active.store(false, Ordering::Release);
            outcome
        };
        if pause.is_zero() {
            // Let workers and request handlers run between busy rounds.
            tokio::task::yield_now().await;
            continue;
        }
        if park(&queue, &clock, pause, &mut stop).await {
            break;
        }
    }
    final_flush(&queue, &store, clock.as_ref()).await;
}

/// Sleeps for `pause` or until woken; true once `stop` resolved.
async fn park(
    queue: &JobQueue,
    clock: &SharedClock,
    pause: Duration,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let wake = queue.wake.notified();
    queue.parked.notify_waiters();
    tokio::select! {
        biased;
        () = stop => true,
        () = wake => false,
        () = clock.sleep(pause) => false,
    }
}

/// Lanes with room whose next job is due, or that have not looked at the table for a poll
/// interval (jobs written by another process or by hand).
fn lanes_to_claim(
    queue: &JobQueue,
    last_scan: &HashMap<&'static str, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<&'static str> {
    let now_ms = now.timestamp_millis();
    queue
        .lanes
        .iter()
        .filter(|(name, lane)| {
            let room = lane.sender.capacity() > 0;
            let due = lane.next_due_ms.load(Ordering::Acquire) <= now_ms;
            let stale = last_scan
                .get(*name)
                .is_none_or(|at| (now - *at).to_std().unwrap_or_default() >= lane.poll);
            room && (due || stale)
        })
        .map(|(name, _)| *name)
        .collect()
}

/// Until the earliest next due time or poll of a lane with room.
fn sleep_time(queue: &JobQueue, now_ms: i64) -> Duration {
    queue
        .lanes
        .values()
        .filter(|lane| lane.sender.capacity() > 0)
        .map(|lane| {
            let due_in = lane
                .next_due_ms
                .load(Ordering::Acquire)
                .saturating_sub(now_ms);
            Duration::from_millis(due_in.max(1) as u64).min(lane.poll)
        })
        .min()
        .unwrap_or(Duration::from_secs(1))
}

async fn round(
    queue: &JobQueue,
    store: &SharedStore,
    wanted: &[&'static str],
    settlements: Arc<Vec<Settlement>>,
    at: RoundTime,
) -> anyhow::Result<Vec<(&'static str, Vec<ClaimedRow>)>> {
    // From here on an enqueue lowers next_due_ms below what this round reads from the table,
    // so a job committed while the round runs is not overlooked.
    let claims: Vec<Claim> = wanted
        .iter()
        .map(|&name| {
            let lane = &queue.lanes[name];
            lane.next_due_ms.store(i64::MAX, Ordering::Release);
            Claim {
                queue: name,
                limit: lane.sender.capacity().min(lane.batch),
            }
        })
        .collect();
    let outcome = store
        .queue_round(&queue.owner, settlements, claims, at)
        .await?;
    Ok(outcome
        .into_iter()
        .map(|claimed| {
            queue.lanes[claimed.queue]
                .reclaimed
                .fetch_add(claimed.taken_over as u64, Ordering::Relaxed);
            if let Some(next) = claimed.next_due_ms {
                queue.lanes[claimed.queue]
                    .next_due_ms
                    .fetch_min(next, Ordering::AcqRel);
            }
            (claimed.queue, claimed.rows)
        })
        .collect())
}

fn hand_out(queue: &JobQueue, claimed: Vec<(&'static str, Vec<ClaimedRow>)>) {
    for (name, rows) in claimed {
        let lane = &queue.lanes[name];
        for row in rows {
            let id = row.id;
            queue.in_flight.fetch_add(1, Ordering::AcqRel);
            if lane.sender.try_send(row).is_err() {
                queue.finished(1);
                // Only this loop sends and it checked the room first; the row stays claimed
                // and goes back to the queue when the process stops.
                tracing::error!(queue = name, job = id, "lane refused a claimed job");
            }
        }
    }
}

/// Writes what the stopped workers reported, retrying a few times if the database is busy.
async fn final_flush(queue: &JobQueue, store: &SharedStore, clock: &dyn crate::clock::Clock) {
    for _ in 0..5 {
        let pending = queue.take_settlements();
        if pending.settlements.is_empty() {
            return;
        }
        let retried = pending.retried;
        let settlements = Arc::new(pending.settlements);
        let result = store
            .queue_round(
                &queue.owner,
                settlements.clone(),
                Vec::new(),
                RoundTime::at(0),
            )
            .await;
        match result {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "writing the last settlements failed");
                queue.restore_settlements(super::Pending {
                    settlements: Arc::unwrap_or_clone(settlements),
                    retried,
                });
                clock.sleep(AFTER_FAILURE).await;
            }
        }
    }
}
