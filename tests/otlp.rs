//! OTLP export on real processes: `qod serve --otlp-endpoint` posts its request and job spans to
//! a loopback collector of this test's own, which reads them with the OpenTelemetry project's
//! own OTLP types (`opentelemetry-proto`, JSON mapping): the caller's trace and parent on the
//! request's span, the job's span in a trace of its own linked to it, the session id and the
//! correlator on both; a collector answering 503 is tried again, the last spans are sent when
//! the server stops, a collector that is away holds no request up, a bad endpoint stops the
//! start with a clear error.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::process::{Process, start};
use common::{poll_until, session_body};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use qod::trace::TraceParent;
use serde_json::Value;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// What the collector received.
#[derive(Default)]
struct Received {
    exports: Vec<ExportTraceServiceRequest>,
    /// Bodies it could not read as OTLP JSON, and requests without the JSON content type.
    refused: Vec<String>,
    posts: usize,
}

struct Collector {
    url: String,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    /// A collector on loopback that answers 503 to its first `failing` exports.
    async fn start(failing: usize) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let failing = Arc::new(AtomicUsize::new(failing));
        let state = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (state, failing) = (state.clone(), failing.clone());
                async move {
                    let mut got = state.lock().unwrap();
                    got.posts += 1;
                    if headers.get("content-type").and_then(|v| v.to_str().ok())
                        != Some("application/json")
                    {
                        got.refused.push(format!("content type {headers:?}"));
                        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}");
                    }
                    match serde_json::from_slice::<ExportTraceServiceRequest>(&body) {
                        Err(e) => {
                            got.refused
                                .push(format!("{e}: {}", String::from_utf8_lossy(&body)));
                            (StatusCode::BAD_REQUEST, "{}")
                        }
                        Ok(_) if failing.load(Ordering::SeqCst) > 0 => {
                            failing.fetch_sub(1, Ordering::SeqCst);
                            (StatusCode::SERVICE_UNAVAILABLE, "{}")
                        }
                        Ok(export) => {
                            got.exports.push(export);
                            (StatusCode::OK, "{}")
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, received }
    }

    fn spans(&self) -> Vec<Span> {
        let got = self.received.lock().unwrap();
        assert!(got.refused.is_empty(), "not OTLP JSON: {:?}", got.refused);
        got.exports
            .iter()
            .flat_map(|e| &e.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    async fn span(&self, what: &str, pred: impl Fn(&Span) -> bool) -> Span {
        poll_until(Duration::from_secs(20), || async {
            self.spans().into_iter().find(|s| pred(s))
        })
        .await
        .unwrap_or_else(|| panic!("no {what} among {:#?}", self.spans()))
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn text(span: &Span, key: &str) -> Option<String> {
    match attr(span, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve(dir: &std::path::Path, endpoint: &str) -> Process {
    let db = common::process_database_args_blocking(dir);
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--otlp-endpoint",
        endpoint,
    ];
    args.extend(db.iter().map(String::as_str));
    args.extend(["--client-rate-limit", "0"]);
    start(&args, &dir.join("qod.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_job_spans_reach_the_collector_in_the_callers_trace_and_linked() {
    let collector = Collector::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut qod = serve(dir.path(), &collector.url);
    let token = common::dev_token_in(dir.path());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{}/quality-on-demand/v1/sessions", qod.addr))
        .bearer_auth(&token)
        .header("traceparent", CALLER)
        .header("x-correlator", "otlp-1")
        .json(&session_body("+33612340101", "198.51.100.11", 60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let caller = TraceParent::parse(CALLER).unwrap();

    // The request's span: the caller's trace and parent, named after its route.
    let request = collector
        .span("request span", |s| {
            s.kind == SpanKind::Server as i32 && text(s, "qod.session.id").as_deref() == Some(&id)
        })
        .await;
    assert_eq!(request.name, "POST /quality-on-demand/v1/sessions");
    assert_eq!(hex(&request.trace_id), caller.trace_hex());
    assert_eq!(hex(&request.parent_span_id), caller.span_hex());
    assert_eq!(
        text(&request, "qod.x_correlator").as_deref(),
        Some("otlp-1")
    );
    assert_eq!(
        text(&request, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attr(&request, "http.response.status_code"),
        Some(&any_value::Value::IntValue(201))
    );
    assert!(request.start_time_unix_nano > 0);
    assert!(request.end_time_unix_nano >= request.start_time_unix_nano);
    assert_eq!(request.status.as_ref().map_or(0, |s| s.code), 0);

    // The provisioning job: its own trace, linked to the request's span.
    let job = collector
        .span("provisioning job span", |s| {
            s.name == "process provision_session"
                && text(s, "qod.session.id").as_deref() == Some(&id)
        })
        .await;
    assert_eq!(job.kind, SpanKind::Consumer as i32);
    assert_ne!(job.trace_id, request.trace_id);
    assert!(job.parent_span_id.is_empty());
    assert_eq!(job.links.len(), 1, "{job:#?}");
    assert_eq!(job.links[0].trace_id, request.trace_id);
    assert_eq!(job.links[0].span_id, request.span_id);
    assert_eq!(text(&job, "qod.x_correlator").as_deref(), Some("otlp-1"));
    assert_eq!(text(&job, "qod.job.outcome").as_deref(), Some("succeeded"));
    assert_eq!(
        text(&job, "messaging.destination.name").as_deref(),
        Some("provision_session")
    );

    let exports = collector.received.lock().unwrap().exports.clone();
    let resource = exports[0].resource_spans[0].resource.as_ref().unwrap();
    let service = resource.attributes.iter().find(|a| a.key == "service.name");
    assert!(
        matches!(
            service.and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref()),
            Some(any_value::Value::StringValue(s)) if s == "qod"
        ),
        "{resource:#?}"
    );
    // The first export was answered 503 and tried again.
    assert!(collector.received.lock().unwrap().posts > exports.len());

    // The last request before a stop is exported on the way out.
    let r = http
        .get(format!(
            "http://{}/quality-on-demand/v1/sessions/{id}",
            qod.addr
        ))
        .bearer_auth(&token)
        .header("x-correlator", "the-last-one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pid = qod.child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let exited = poll_until(Duration::from_secs(20), || {
        let done = qod.child.try_wait().unwrap();
        async move { done }
    })
    .await
    .expect("the server stops on SIGTERM");
    assert!(exited.success(), "{exited:?}");
    let last = collector
        .spans()
        .into_iter()
        .find(|s| text(s, "qod.x_correlator").as_deref() == Some("the-last-one"));
    let last = last.expect("the last request's span was flushed at the stop");
    assert_eq!(last.name, "GET /quality-on-demand/v1/sessions/{sessionId}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_away_holds_no_request_up() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let qod = serve(dir.path(), &format!("http://127.0.0.1:{port}"));
    let token = common::dev_token_in(dir.path());
    let http = reqwest::Client::new();
    for i in 0..20 {
        let r = http
            .post(format!("http://{}/quality-on-demand/v1/sessions", qod.addr))
            .bearer_auth(&token)
            .json(&session_body(
                &format!("+336123402{i:02}"),
                "198.51.100.12",
                60,
            ))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let log = dir.path().join("qod.log");
    let warned = poll_until(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("trace spans were not exported").then_some(()) }
    })
    .await;
    assert!(warned.is_some(), "no warning about the lost spans");
}

#[test]
fn an_endpoint_that_is_not_an_http_url_stops_the_start() {
    for endpoint in ["grpc://127.0.0.1:4317", "127.0.0.1:4318"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qod"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--otlp-endpoint",
                endpoint,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--otlp-endpoint"), "{err}");
    }
}
