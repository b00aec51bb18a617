//! The bench's own notification sink: records when each session's events arrive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};

/// What arrived for one session.
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    pub available_at: Option<Instant>,
    /// The AVAILABLE event's `time`: when the server started the session.
    pub started: Option<DateTime<Utc>>,
    /// When the DURATION_EXPIRED event arrived, by the wall clock.
    pub expired_received: Option<DateTime<Utc>>,
    pub other_unavailable: bool,
}

#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<HashMap<String, Arrivals>>>,
}

impl Recorder {
    pub fn snapshot(&self) -> HashMap<String, Arrivals> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, event: &serde_json::Value) {
        let data = &event["data"];
        let Some(session) = data["sessionId"].as_str() else {
            return;
        };
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(session.to_owned()).or_default();
        match (data["qosStatus"].as_str(), data["statusInfo"].as_str()) {
            (Some("AVAILABLE"), _) => {
                entry.available_at.get_or_insert_with(Instant::now);
                entry.started = event["time"].as_str().and_then(|t| t.parse().ok());
            }
            (Some("UNAVAILABLE"), Some("DURATION_EXPIRED")) => {
                entry.expired_received.get_or_insert_with(Utc::now);
            }
            (Some("UNAVAILABLE"), _) => entry.other_unavailable = true,
            _ => {}
        }
    }
}

async fn receive(State(recorder): State<Recorder>, body: Bytes) -> StatusCode {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(event) => {
            recorder.record(&event);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// Starts the sink on `listen`; returns its address and the recorder.
pub async fn start(listen: SocketAddr) -> anyhow::Result<(SocketAddr, Recorder)> {
    let recorder = Recorder::default();
    let app = Router::new()
        .route("/events", axum::routing::post(receive))
        .with_state(recorder.clone());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, recorder))
}
