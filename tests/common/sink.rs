//! A consumer's notification sink on loopback whose answers each test scripts per path.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 204 every time.
    Accept,
    /// Answers `status` this many times, then 204.
    FailTimes(u32, u16),
    /// 429 with `Retry-After: secs` this many times, then 204.
    RetryAfter(u32, u64),
    /// The same status every time.
    Always(u16),
    /// Holds the request this long, then 204.
    Hang(Duration),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Value,
    pub answered: u16,
}

#[derive(Clone, Default)]
struct Shared {
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

pub struct TestSink {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl TestSink {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let app = Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    /// The sink URL for `path`, scripted with `behaviour`.
    pub fn url(&self, path: &str, behaviour: Behaviour) -> String {
        self.set(path, behaviour);
        format!("http://{}/{path}", self.addr)
    }

    pub fn set(&self, path: &str, behaviour: Behaviour) {
        self.shared
            .behaviours
            .lock()
            .unwrap()
            .insert(path.to_owned(), behaviour);
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Requests on `path` that were answered 2xx.
    pub fn delivered(&self, path: &str) -> Vec<Received> {
        self.received(path)
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    pub async fn wait_delivered(
        &self,
        path: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Received> {
        super::poll_until(timeout, || async {
            let d = self.delivered(path);
            (d.len() >= count).then_some(d)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{path}: {} of {count} deliveries within {timeout:?}",
                self.delivered(path).len()
            )
        })
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = shared
        .behaviours
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Behaviour::Accept);
    let (status, retry_after, delay) = match behaviour {
        Behaviour::Accept => (204, None, None),
        Behaviour::Always(s) => (s, None, None),
        Behaviour::Hang(d) => (204, None, Some(d)),
        Behaviour::FailTimes(n, s) => {
            if n > 0 {
                shared
                    .behaviours
                    .lock()
                    .unwrap()
                    .insert(path.clone(), Behaviour::FailTimes(n - 1, s));
                (s, None, None)
            } else {
                (204, None, None)
            }
        }
        Behaviour::RetryAfter(n, secs) => {
            if n > 0 {
                shared
                    .behaviours
                    .lock()
                    .unwrap()
                    .insert(path.clone(), Behaviour::RetryAfter(n - 1, secs));
                (429, Some(secs), None)
            } else {
                (204, None, None)
            }
        }
    };
    shared.received.lock().unwrap().push(Received {
        path,
        at: Instant::now(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: status,
    });
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let status = StatusCode::from_u16(status).unwrap();
    match retry_after {
        Some(secs) => (status, [("retry-after", secs.to_string())]).into_response(),
        None => status.into_response(),
    }
}
