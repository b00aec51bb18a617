//! deliver_notification: POST one CloudEvent to its sink. Events of a session go out in order:
//! an event waits while an earlier one is pending, and each event, once settled (delivered or
//! dead), starts the next. Retries are scheduled here rather than by the runner because the
//! sink's Retry-After decides the delay as much as the backoff policy does.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::JobContext;
use super::JobKind;
use crate::lifecycle::{self, ScheduledJob};
use crate::metrics::delivery;
use crate::notify::sink_client::{Outcome, SinkClient};
use crate::notify::with_source;
use crate::pools::RetryPolicy;
use crate::recording::{self, Input, SinkAnswer};
use crate::store::Settled;
use crate::store::{Notification, state};

/// When a sink already has its share of deliveries in flight and its line is full, look again
/// after 250 ms, doubled each time it is still busy (with jitter, at most 10 s): a backlog
/// behind a slow sink waits instead of polling it every quarter second.
const SINK_BUSY: RetryPolicy = RetryPolicy {
    max_attempts: 0,
    base_ms: 250,
    factor: 2.0,
    cap_ms: 5_000,
    jitter: true,
    max_age_secs: None,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverNotification {
    pub notification_id: Uuid,
    /// How many times in a row this delivery found its sink busy (not an attempt: nothing
    /// was sent).
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub busy: u32,
}

impl DeliverNotification {
    pub fn new(notification_id: Uuid) -> Self {
        Self {
            notification_id,
            busy: 0,
        }
    }
}

#[async_trait]
impl JobKind for DeliverNotification {
    const QUEUE: &'static str = "deliver_notification";

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let n = {
            let Some(found) = ctx
                .store
                .notification_for_delivery(self.notification_id)
                .await?
            else {
                return Ok(());
            };
            let n = found.notification;
            tracing::Span::current().record("session_id", tracing::field::display(n.session_id));
            if n.state != state::PENDING || found.behind_earlier {
                // Settled already, or waiting its turn: the earlier event starts it when settled.
                return Ok(());
            }
            if found.sink_gone {
                return settle(
                    ctx,
                    &n,
                    state::DEAD,
                    Some("sink answered 410 Gone earlier; not sent"),
                    delivery::REFUSED,
                )
                .await;
            }
            n
        };
        let now = ctx.clock.now();
        if let Some(cred) = &n.credential
            && cred.access_token_expires_utc <= now
        {
            return settle(
                ctx,
                &n,
                state::DEAD,
                Some("sink access token expired; not sent"),
                delivery::REFUSED,
            )
            .await;
        }
        let key = SinkClient::sink_key(&n.sink);
        let Some(_permit) = ctx
            .delivery
            .limiter
            .acquire(&key, ctx.delivery.timeout)
            .await
        else {
            let again = DeliverNotification {
                notification_id: self.notification_id,
                busy: self.busy.saturating_add(1),
            };
            let wait = SINK_BUSY.delay(self.busy + 1, &ctx.random);
            let later =
                ScheduledJob::retry(again, n.attempts, now + chrono::Duration::from_std(wait)?);
            return lifecycle::enqueue(ctx, later).await;
        };

        let body = with_source(n.event.clone(), &ctx.delivery.public_url);
        let token = match n
            .credential
            .as_ref()
            .map(|c| ctx.delivery.secrets.open(&c.access_token))
        {
            None => None,
            Some(Ok(token)) => Some(token),
            Some(Err(e)) => {
                tracing::error!(notification = %n.id, error = %e, "sink token cannot be opened; is this the key it was sealed with?");
                return settle(
                    ctx,
                    &n,
                    state::DEAD,
                    Some("sink token cannot be opened with this server's key"),
                    delivery::REFUSED,
                )
                .await;
            }
        };
        let token = token.as_deref();
        let outcome = ctx.delivery.sinks.post(&n.sink, body, token, now).await;
        let answer = SinkAnswer::of(&outcome);
        recording::push(
            ctx.clock.now(),
            Some(n.session_id),
            Input::Sink {
                event: n.id,
                answer,
            },
        );
        let attempts = n.attempts + 1;
        match outcome {
            Outcome::Delivered => {
                let latency =
                    (ctx.clock.now() - n.created_at).num_milliseconds().max(0) as f64 / 1000.0;
                ctx.metrics.notification_latency.observe(latency);
                settle_after(
                    ctx,
                    &n,
                    attempts,
                    state::DELIVERED,
                    None,
                    delivery::DELIVERED,
                )
                .await
            }
            Outcome::Gone => {
                ctx.store
                    .mark_sink_gone(n.sink.clone(), ctx.clock.now())
                    .await?;
                tracing::info!(notification = %n.id, "sink answered 410 Gone; no more deliveries to it");
                settle_after(
                    ctx,
                    &n,
                    attempts,
                    state::DEAD,
                    Some("sink answered 410 Gone"),
                    delivery::DEAD,
                )
                .await
            }
            Outcome::Permanent { error, refused } => {
                tracing::warn!(notification = %n.id, session = %n.session_id, %error, "notification dead-lettered: the sink cannot take it");
                let outcome = if refused {
                    delivery::REFUSED
                } else {
                    delivery::DEAD
                };
                settle_after(ctx, &n, attempts, state::DEAD, Some(&error), outcome).await
            }
            Outcome::Retry { error, retry_after } => {
                self.retry(ctx, &n, attempts, error, retry_after).await
            }
        }
    }
}

impl DeliverNotification {
    async fn retry(
        &self,
        ctx: &JobContext,
        n: &Notification,
        attempts: u32,
        error: String,
        retry_after: Option<Duration>,
    ) -> anyhow::Result<()> {
        let policy = &ctx.pools.get(Self::QUEUE).retry;
        let now = ctx.clock.now();
        let age = (now - n.created_at).to_std().unwrap_or_default();
        if policy.exhausted(attempts) || policy.too_old(age) {
            tracing::warn!(notification = %n.id, attempts, %error, "notification dead-lettered");
            let error = format!("{error} (gave up after {attempts} attempts)");
            return settle_after(ctx, n, attempts, state::DEAD, Some(&error), delivery::DEAD).await;
        }
        let delay = policy
            .delay(attempts, &ctx.random)
            .max(retry_after.unwrap_or_default());
        let next = now + chrono::Duration::from_std(delay)?;
        let job = ScheduledJob::retry(
            DeliverNotification::new(self.notification_id),
            attempts,
            next,
        );
        ctx.store
            .retry_notification(n.id, attempts, error.clone(), next, job)
            .await?
            .publish(ctx);
        ctx.metrics
            .notification_attempts
            .with_label_values(&[delivery::RETRIED])
            .inc();
        tracing::debug!(notification = %n.id, attempts, delay_ms = delay.as_millis() as u64, %error, "notification retry scheduled");
        Ok(())
    }
}

async fn settle(
    ctx: &JobContext,
    n: &Notification,
    final_state: &'static str,
    error: Option<&str>,
    outcome: &str,
) -> anyhow::Result<()> {
    settle_after(ctx, n, n.attempts, final_state, error, outcome).await
}

/// Ends the event's delivery and starts the session's next waiting event.
async fn settle_after(
    ctx: &JobContext,
    n: &Notification,
    attempts: u32,
    final_state: &'static str,
    error: Option<&str>,
    outcome: &str,
) -> anyhow::Result<()> {
    let settled = Settled {
        id: n.id,
        final_state,
        attempts,
        error: error.map(str::to_owned),
        at: ctx.clock.now(),
    };
    ctx.store
        .settle_notification(settled, |next, at| {
            ScheduledJob::new(DeliverNotification::new(next), at)
        })
        .await?
        .publish(ctx);
    ctx.metrics
        .notification_attempts
        .with_label_values(&[outcome])
        .inc();
    Ok(())
}
