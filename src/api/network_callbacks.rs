//! `POST /network/v1/callbacks/{sessionId}/{secret}`: where the NEF posts the events of a
//! session's subscription (`UserPlaneNotificationData`, or a `TestNotification`). The per-session
//! secret in the URL authenticates the caller; a wrong one answers 404 as if nothing were there.
//! The events are stored as a job before the 204, so the answer is fast and nothing is lost.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Router, response::IntoResponse, response::Response};
use serde_json::Value;

use super::AppState;
use super::json::{BodyError, read_body};
use crate::domain::SessionId;
use crate::jobs::ApplyNetworkEvent;
use crate::jobs::apply_network_event::known_event;
use crate::lifecycle::{self, ScheduledJob};
use crate::network::nef::callback::PATH;
use crate::recording::{self, Input};

/// Largest notification accepted; real ones are a few hundred bytes.
const MAX_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new().route(&format!("{PATH}/{{session}}/{{secret}}"), post(receive))
}

async fn receive(
    State(state): State<AppState>,
    Path((session, secret)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    let core = state.service.core();
    let count = |event: &str| {
        core.metrics
            .network_events
            .with_label_values(&[event])
            .inc();
    };
    // The secret is checked before a byte of the body is read.
    let Some(session) =
        SessionId::parse_canonical(&session).filter(|s| state.callbacks.verify(*s, &secret))
    else {
        count("REFUSED");
        return StatusCode::NOT_FOUND.into_response();
    };
    let body: Bytes = match read_body(req, MAX_BYTES).await {
        Ok(body) => body,
        Err(BodyError::TimedOut) => return StatusCode::REQUEST_TIMEOUT.into_response(),
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let Ok(notification) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(reports) = notification.get("eventReports").and_then(Value::as_array) else {
        if notification.get("subscription").is_some() {
            count("TEST");
            return StatusCode::NO_CONTENT.into_response();
        }
        return StatusCode::BAD_REQUEST.into_response();
    };
    let events: Vec<String> = reports
        .iter()
        .filter_map(|r| r.get("event").and_then(Value::as_str))
        .take(32)
        .map(str::to_owned)
        .collect();
    for event in &events {
        count(known_event(event).unwrap_or("OTHER"));
    }
    let subscription = notification
        .get("transaction")
        .and_then(Value::as_str)
        .map(crate::network::nef::subscription_id);
    if events.iter().any(|e| known_event(e).is_some()) {
        let job = ApplyNetworkEvent {
            session_id: session,
            events,
            subscription,
        };
        let now = core.clock.now();
        let stored = lifecycle::enqueue(core, ScheduledJob::new(job, now));
        let stored = if state.record_inputs {
            let body = notification.clone();
            let recorded = async move {
                recording::push(now, Some(session), Input::Callback { body });
                stored.await
            };
            recording::scope(recorded).await.0
        } else {
            stored.await
        };
        if let Err(e) = stored {
            tracing::error!(error = %format!("{e:#}"), "network event not stored");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}
