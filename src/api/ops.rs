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
use crate::store::sessions;

pub fn routes() -> axum::Router<AppState> {
    Router::new()
        .route("/health/live", get(|| async { StatusCode::NO_CONTENT }))
        .route("/health/ready", get(ready))
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
    sqlx::query("SELECT 1")
        .execute(&state.service.core().pool)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "Database not reachable.",
            )
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
    if let Ok(mut conn) = core.pool.acquire().await {
        if let Ok(census) = sessions::census(&mut conn).await {
            for status in [
                QosStatus::Requested,
                QosStatus::Available,
                QosStatus::Unavailable,
            ] {
                let n = census.iter().filter(|c| c.0 == status).map(|c| c.2).sum();
                core.metrics
                    .sessions
                    .with_label_values(&[status.as_str()])
                    .set(n);
            }
            // The grants the network holds, or may hold, for us.
            for state in [
                GrantState::Provisioning,
                GrantState::Granted,
                GrantState::Releasing,
            ] {
                let n = census.iter().filter(|c| c.1 == state).map(|c| c.2).sum();
                core.metrics
                    .network_grants
                    .with_label_values(&[state.as_str()])
                    .set(n);
            }
        }
        if let Ok(n) = crate::store::notifications::dead_count(&mut conn).await {
            core.metrics.notifications_dead.set(n);
        }
        let now_ms = core.clock.now().timestamp_millis();
        if let Ok(depths) = crate::store::jobs::depth(&mut conn, now_ms).await {
            // Queues that emptied read 0, not their last value.
            for queue in crate::jobs::QUEUES {
                let d = depths.iter().find(|d| d.queue == queue);
                for (state, n) in [
                    ("due", d.map_or(0, |d| d.due)),
                    ("scheduled", d.map_or(0, |d| d.scheduled)),
                    ("claimed", d.map_or(0, |d| d.claimed)),
                ] {
                    core.metrics
                        .queue_jobs
                        .with_label_values(&[queue, state])
                        .set(n);
                }
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        core.metrics.render(),
    )
        .into_response()
}
