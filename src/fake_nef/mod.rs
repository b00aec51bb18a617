//! `qod fake-nef`: a NEF speaking the AsSessionWithQoS contract (TS 29.122) faithfully enough
//! to run the orchestrator against it, with the faults real NEFs show (see `behaviour`). It is
//! the demo network and the peer of the NEF tests. State lives in memory: a restart forgets
//! every subscription, as some real NEFs do.
//!
//! Besides the API (`/3gpp-as-session-with-qos/v1/{scsAsId}/subscriptions[/{id}]`) it serves an
//! OAuth2 token endpoint (`POST /oauth/token`) and test controls under `/_fake/`: the
//! subscriptions held, the requests received, `terminate/{id}` (posts SESSION_TERMINATION) and
//! `event/{id}/{EVENT}`.

pub mod behaviour;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

pub use behaviour::Behaviour;

const BASE: &str = "/3gpp-as-session-with-qos/v1";

/// Requests kept for `/_fake/requests`: every one of a test, a bounded memory for a long demo.
const REQUEST_LOG: usize = 100_000;

/// Path parameters, with or without the SCS/AS segment.
type Params = std::collections::HashMap<String, String>;

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    behaviour: Arc<Behaviour>,
    http: reqwest::Client,
    /// `http` or `https`.
    scheme: &'static str,
}

#[derive(Default)]
struct Inner {
    subscriptions: BTreeMap<String, Value>,
    /// The API requests received, the latest `REQUEST_LOG` of them: method, path, body.
    requests: std::collections::VecDeque<Value>,
    posts: u32,
    faults_used: Vec<u32>,
}

/// Serves the fake NEF on `listener` until `shutdown` resolves; over https when `tls` names
/// a PEM certificate chain and key.
pub async fn serve(
    listener: tokio::net::TcpListener,
    behaviour: Behaviour,
    tls: Option<(&std::path::Path, &std::path::Path)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let fake = Fake {
        inner: Arc::new(Mutex::new(Inner {
            faults_used: vec![0; behaviour.faults.len()],
            ..Inner::default()
        })),
        behaviour: Arc::new(behaviour),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        scheme,
    };
    let app = Router::new()
        .route(
            &format!("{BASE}/{{scs}}/subscriptions"),
            get(list).post(create),
        )
        .route(
            &format!("{BASE}/{{scs}}/subscriptions/{{id}}"),
            get(read).patch(update).put(update).delete(remove),
        )
        // The vendor variant without the SCS/AS segment.
        .route(&format!("{BASE}/subscriptions"), get(list).post(create))
        .route(
            &format!("{BASE}/subscriptions/{{id}}"),
            get(read).patch(update).put(update).delete(remove),
        )
        .route("/oauth/token", post(token))
        .route("/_fake/subscriptions", get(held))
        .route("/_fake/requests", get(requests))
        .route("/_fake/terminate/{id}", post(terminate))
        .route("/_fake/event/{id}/{event}", post(event))
        .with_state(fake);
    let addr = listener.local_addr()?;
    match tls {
        None => {
            tracing::info!(%addr, "fake NEF listening");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        Some((cert, key)) => {
            // Built before the "listening" line, so a bad certificate never looks like a start.
            let listener = tls::TlsListener::new(listener, cert, key)?;
            tracing::info!(%addr, "fake NEF listening (https)");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    Ok(())
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        json!({"title": status.canonical_reason(), "status": status.as_u16(), "detail": detail})
            .to_string(),
    )
        .into_response()
}

impl Inner {
    fn log(&mut self, request: Value) {
        if self.requests.len() == REQUEST_LOG {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
    }
}

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured fault for this request, if one is still due.
    fn fault(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        body: &Value,
    ) -> Option<Response> {
        let mut inner = self.lock();
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        inner.log(json!({
            "method": method.as_str(),
            "path": path,
            "body": body,
            "at_ms": at_ms as u64,
            "traceparent": header("traceparent"),
            "x-correlator": header("x-correlator"),
        }));
        if let Some(expected) = &self.behaviour.require_token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(expected.as_str()) {
                return Some(problem(
                    StatusCode::UNAUTHORIZED,
                    "invalid or missing token",
                ));
            }
        }
        for (i, fault) in self.behaviour.faults.iter().enumerate() {
            if fault.method.eq_ignore_ascii_case(method.as_str())
                && inner.faults_used[i] < fault.times
            {
                inner.faults_used[i] += 1;
                let status =
                    StatusCode::from_u16(fault.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let mut response = problem(status, "injected fault");
                if let Some(secs) = fault.retry_after_secs {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, secs.into());
                }
                return Some(response);
            }
        }
        None
    }

    /// Posts `event` for a subscription to its notification destination (twice if so
    /// configured); failures are only logged, as a NEF would.
    async fn notify(&self, subscription: &Value, event: &str) {
        let body = json!({
            "transaction": subscription["self"],
            "eventReports": [{"event": event}],
        });
        self.post(subscription, &body).await;
    }

    /// Posts a notification to the subscription's destination.
    async fn post(&self, subscription: &Value, body: &Value) {
        let Some(destination) = subscription["notificationDestination"].as_str() else {
            return;
        };
        let times = if self.behaviour.duplicate_events {
            2
        } else {
            1
        };
        for _ in 0..times {
            if let Err(e) = self.http.post(destination).json(body).send().await {
                tracing::warn!(error = %e, "notification not delivered");
            }
        }
    }
}

async fn token(
    State(fake): State<Fake>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<BTreeMap<String, String>>,
) -> Response {
    let client = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.starts_with("Basic "))
        .unwrap_or(false);
    fake.lock().log(json!({
        "method": "TOKEN",
        "path": "/oauth/token",
        "body": {"basic_auth": client, "form": form},
    }));
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    match &fake.behaviour.require_token {
        Some(token) => {
            Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))
                .into_response()
        }
        None => Json(
            json!({"access_token": "fake-nef-token", "token_type": "Bearer", "expires_in": 3600}),
        )
        .into_response(),
    }
}

async fn create(
    State(fake): State<Fake>,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    if let Some(fault) = fake.fault(&method, &headers, &path, &body) {
        return fault;
    }
    if body["notificationDestination"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "notificationDestination is required",
        );
    }
    if let Some(missing) = fake
        .behaviour
        .required_fields
        .iter()
        .find(|f| body.get(f.as_str()).is_none())
    {
        return problem(StatusCode::BAD_REQUEST, &format!("{missing} is required"));
    }
    let Some(reference) = body["qosReference"].as_str() else {
        return problem(StatusCode::BAD_REQUEST, "qosReference is required");
    };
    if !fake.behaviour.qos_references.is_empty()
        && !fake.behaviour.qos_references.iter().any(|r| r == reference)
    {
        return problem(StatusCode::BAD_REQUEST, "unknown qosReference");
    }
    let flows_ok = body["flowInfo"].as_array().is_some_and(|flows| {
        !flows.is_empty()
            && flows.iter().all(|f| {
                f["flowDescriptions"]
                    .as_array()
                    .is_some_and(|d| (1..=2).contains(&d.len()))
            })
    });
    if !flows_ok {
        return problem(
            StatusCode::BAD_REQUEST,
            "flowInfo needs 1 or 2 flow descriptions per flow",
        );
    }
    let ue = ["ueIpv4Addr", "ueIpv6Addr", "gpsi"]
        .iter()
        .find_map(|k| body[*k].as_str())
        .unwrap_or("");
    if fake.behaviour.unknown_ues.iter().any(|u| u == ue) {
        return problem(StatusCode::NOT_FOUND, "UE unknown");
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    // Absolute, under the name the client used (the one its certificate check accepted).
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let location = format!("{}://{host}{path}/{id}", fake.scheme);
    let mut subscription = body;
    subscription["self"] = Value::String(location.clone());
    let slow = {
        let mut inner = fake.lock();
        inner.posts += 1;
        inner.posts <= fake.behaviour.slow_posts
    };
    // In a task of its own: the NEF goes on with the creation after the client hung up.
    let creation = {
        let (fake, subscription) = (fake.clone(), subscription.clone());
        tokio::spawn(async move {
            if slow && fake.behaviour.slow_posts_create_late {
                tokio::time::sleep(Duration::from_millis(fake.behaviour.slow_ms)).await;
            }
            fake.lock().subscriptions.insert(id, subscription);
        })
    };
    if creation.await.is_err() {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "creation failed");
    }
    if let Some(delay) = fake.behaviour.allocation_delay_ms {
        let (fake, subscription) = (fake.clone(), subscription.clone());
        if fake.behaviour.early_events {
            fake.notify(&subscription, "SUCCESSFUL_RESOURCES_ALLOCATION")
                .await;
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                fake.notify(&subscription, "SUCCESSFUL_RESOURCES_ALLOCATION")
                    .await;
            });
        }
    }
    if subscription["requestTestNotification"] == true {
        let (fake, subscription) = (fake.clone(), subscription.clone());
        tokio::spawn(async move {
            fake.post(
                &subscription,
                &json!({"subscription": subscription["self"]}),
            )
            .await;
        });
    }
    if slow && !fake.behaviour.slow_posts_create_late {
        tokio::time::sleep(Duration::from_millis(fake.behaviour.slow_ms)).await;
    }
    if fake.behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fake.behaviour.latency_ms)).await;
    }
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(subscription),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(rename = "ip-addrs")]
    ip_addrs: Option<String>,
}

async fn list(
    State(fake): State<Fake>,
    uri: Uri,
    Query(query): Query<ListQuery>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    if let Some(fault) = fake.fault(&method, &headers, &path, &Value::Null) {
        return fault;
    }
    let wanted: Option<Vec<String>> = match query
        .ip_addrs
        .as_deref()
        .map(serde_json::from_str::<Vec<Value>>)
    {
        None => None,
        Some(Ok(list)) => Some(
            list.iter()
                .filter_map(|a| a["ipv4Addr"].as_str().or(a["ipv6Addr"].as_str()))
                .map(str::to_owned)
                .collect(),
        ),
        Some(Err(_)) => return problem(StatusCode::BAD_REQUEST, "ip-addrs is not a JSON array"),
    };
    let inner = fake.lock();
    let found: Vec<Value> = inner
        .subscriptions
        .values()
        .filter(|s| {
            wanted.as_ref().is_none_or(|w| {
                ["ueIpv4Addr", "ueIpv6Addr"]
                    .iter()
                    .any(|k| s[*k].as_str().is_some_and(|a| w.iter().any(|x| x == a)))
            })
        })
        .cloned()
        .collect();
    Json(found).into_response()
}

async fn read(State(fake): State<Fake>, Path(params): Path<Params>) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    match fake.lock().subscriptions.get(&id) {
        Some(s) => Json(s.clone()).into_response(),
        None => problem(StatusCode::NOT_FOUND, "no such subscription"),
    }
}

async fn update(
    State(fake): State<Fake>,
    Path(params): Path<Params>,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = params.get("id").cloned().unwrap_or_default();
    let path = uri.path().to_owned();
    if let Some(fault) = fake.fault(&method, &headers, &path, &patch) {
        return fault;
    }
    let mut inner = fake.lock();
    let Some(subscription) = inner.subscriptions.get_mut(&id) else {
        return problem(StatusCode::NOT_FOUND, "no such subscription");
    };
    if let (Some(target), Some(changes)) = (subscription.as_object_mut(), patch.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                target.remove(k);
            } else {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    Json(subscription.clone()).into_response()
}

async fn remove(
    State(fake): State<Fake>,
    Path(params): Path<Params>,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    let path = uri.path().to_owned();
    if let Some(fault) = fake.fault(&method, &headers, &path, &Value::Null) {
        return fault;
    }
    match fake.lock().subscriptions.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => problem(StatusCode::NOT_FOUND, "no such subscription"),
    }
}

async fn held(State(fake): State<Fake>) -> Json<Vec<Value>> {
    Json(fake.lock().subscriptions.values().cloned().collect())
}

async fn requests(State(fake): State<Fake>) -> Json<Vec<Value>> {
    Json(fake.lock().requests.iter().cloned().collect())
}

async fn terminate(State(fake): State<Fake>, Path(id): Path<String>) -> StatusCode {
    event(State(fake), Path((id, "SESSION_TERMINATION".to_owned()))).await
}

async fn event(State(fake): State<Fake>, Path((id, event)): Path<(String, String)>) -> StatusCode {
    let subscription = fake.lock().subscriptions.get(&id).cloned();
    match subscription {
        Some(s) => {
            fake.notify(&s, &event).await;
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}
