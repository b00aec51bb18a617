//! Operational endpoints: health, metrics, and the OpenAPI documents this server implements.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;
use super::openapi::{Document, served};
use crate::domain::{GrantState, QosStatus};
use crate::metrics::openmetrics;
use crate::store::Census;

pub fn routes() -> axum::Router<AppState> {
    Router::new()
        .route("/health/live", get(|| async { StatusCode::NO_CONTENT }))
        .route("/health/ready", get(ready))
        .route("/health/network", get(network))
        .route("/metrics", get(metrics))
        .route(
            "/openapi/quality-on-demand/v1.yaml",
            get(|| async { yaml(served(Document::QodV1)) }),
        )
        .route(
            "/openapi/qos-profiles/v1.yaml",
            get(|| async { yaml(served(Document::ProfilesV1)) }),
        )
        .route(
            "/openapi/qod/v0.yaml",
            get(|| async { yaml(served(Document::QodV0)) }),
        )
}

fn yaml(doc: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], doc)
}

async fn ready(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.service.core().store.ping().await.map_err(|e| {
        tracing::warn!(error = %format!("{e:#}"), "readiness check failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "Database not reachable.",
        )
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether the network (the NEF) answers and takes this server's credentials, asked now.
/// Separate from readiness: requests are still accepted, durably, while the network is away,
/// and provisioning retries until it is back.
async fn network(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.network.check().await.map_err(|e| {
        // The cause (with the NEF's address) goes to the log, not to whoever asks.
        tracing::warn!(error = %e, "network check failed");
        let message = match e {
            crate::network::NetworkError::Refused(_) => {
                "The network refuses this server's credentials."
            }
            _ => "The network is not reachable or failing.",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refreshes the gauges that mirror stored state, then renders everything.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !super::auth::metrics_allowed(&state.guard, headers.get(header::AUTHORIZATION)) {
        let mut refused = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "The metrics endpoint needs its bearer token.",
        )
        .into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"qod-metrics\""),
        );
        return refused;
    }
    let core = state.service.core();
    let now_ms = core.clock.now().timestamp_millis();
    let counts = core.store.write_counts();
    let m = &core.metrics;
    for (counter, total) in [
        (&m.store_commits, counts.commits),
        (&m.store_writes, counts.writes),
        (&m.queue_fenced, counts.fenced),
    ] {
        counter.inc_by(total.saturating_sub(counter.get()));
    }
    for (queue, total) in core.queue.reclaimed() {
        let counter = m.lease_reclaims.with_label_values(&[queue]);
        counter.inc_by(total.saturating_sub(counter.get()));
    }
    // The database's state is counted by one node at a time: summed over nodes it counts once,
    // and a node that stops or loses the role stops reporting it.
    let counting = state.leadership.held();
    if counting {
        match state.census.get(core, now_ms).await {
            Ok(census) => show(core, &census, now_ms),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "metrics: stored state not counted")
            }
        }
    }
    let open_metrics =
        openmetrics::preferred(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let content_type = if open_metrics {
        openmetrics::CONTENT_TYPE
    } else {
        openmetrics::TEXT_CONTENT_TYPE
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        m.render(counting, open_metrics),
    )
        .into_response()
}

/// The last census, reused for a second: counting the stored sessions takes tens of
/// milliseconds at thousands of sessions, and scrapes may come in parallel (they then wait for
/// one count instead of each making their own).
#[derive(Default)]
pub struct CensusCache(tokio::sync::Mutex<Option<(i64, Census)>>);

/// How long a census is reused.
const CENSUS_FRESH_MS: i64 = 1000;

impl CensusCache {
    async fn get(&self, core: &crate::core::Core, now_ms: i64) -> anyhow::Result<Census> {
        let mut cached = self.0.lock().await;
        if let Some((at, census)) = cached.as_ref()
            && (0..CENSUS_FRESH_MS).contains(&(now_ms - at))
        {
            return Ok(census.clone());
        }
        let census = core.store.census(now_ms).await?;
        *cached = Some((now_ms, census.clone()));
        Ok(census)
    }
}

/// Sets the gauges that mirror stored state. Series of labels that no longer occur read 0,
/// not their last value.
fn show(core: &crate::core::Core, census: &Census, now_ms: i64) {
    let m = &core.metrics;
    for status in [
        QosStatus::Requested,
        QosStatus::Available,
        QosStatus::Unavailable,
    ] {
        for profile in &m.profiles {
            let n = census
                .sessions
                .iter()
                .filter(|c| c.status == status && &c.profile == profile)
                .map(|c| c.count)
                .sum();
            m.sessions
                .with_label_values(&[status.as_str(), profile.as_str()])
                .set(n);
        }
    }
    // The grants the network holds, or may hold, for us.
    for state in [
        GrantState::Provisioning,
        GrantState::Granted,
        GrantState::Releasing,
    ] {
        let n = census
            .sessions
            .iter()
            .filter(|c| c.grant == state)
            .map(|c| c.count)
            .sum();
        m.network_grants.with_label_values(&[state.as_str()]).set(n);
    }
    let age_secs =
        |at_ms: Option<i64>| at_ms.map_or(0.0, |at| (now_ms - at).max(0) as f64 / 1000.0);
    m.notifications_dead.set(census.dead_notifications);
    m.notifications_dead_oldest
        .set(age_secs(census.oldest_dead_ms));
    for &queue in crate::jobs::QUEUES {
        let d = census.queues.iter().find(|d| d.queue == queue);
        for (state, n) in [
            ("due", d.map_or(0, |d| d.due)),
            ("scheduled", d.map_or(0, |d| d.scheduled)),
            ("claimed", d.map_or(0, |d| d.claimed)),
        ] {
            m.queue_jobs.with_label_values(&[queue, state]).set(n);
        }
        m.queue_oldest_due
            .with_label_values(&[queue])
            .set(age_secs(d.and_then(|d| d.oldest_due_ms)));
    }
}
