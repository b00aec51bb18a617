//! Trace context and correlator through the queue, on real processes (`qod serve --log-format
//! json`, the fake NEF, a loopback sink): a request's W3C `traceparent` and `x-correlator` are
//! in its span; the provisioning job runs in a trace of its own linked to the request's span,
//! with the session id and the correlator; that job's context reaches the NEF (with the
//! correlator) and the consumer's CloudEvent (its `traceparent` extension); an invalid
//! `traceparent` starts a new trace instead of failing the request.

mod common;

use std::io::BufRead;
use std::time::Duration;

use common::process::start;
use common::sink::{Behaviour, TestSink};
use common::{poll_until, session_body};
use qod::trace::TraceParent;
use serde_json::{Value, json};

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The JSON log lines written so far.
fn log_lines(path: &std::path::Path) -> Vec<Value> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The span of the first closed span (`message: close`) whose fields match `pred`.
async fn closed_span(log: &std::path::Path, pred: impl Fn(&Value) -> bool) -> Value {
    poll_until(Duration::from_secs(15), || async {
        log_lines(log)
            .into_iter()
            .find(|l| l["fields"]["message"] == "close" && pred(&l["span"]))
            .map(|l| l["span"].clone())
    })
    .await
    .unwrap_or_else(|| panic!("no such span in {}", std::fs::read_to_string(log).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_and_correlator_follow_the_session_to_the_nef_and_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let nef = start(
        &["fake-nef", "--listen", "127.0.0.1:0"],
        &dir.path().join("nef.log"),
    );
    let nef_url = format!("http://{}/3gpp-as-session-with-qos/v1", nef.addr);
    let db = common::process_database_args_blocking(dir.path());
    let log = dir.path().join("qod.log");
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--log-format", "json"];
    args.extend(db.iter().map(String::as_str));
    args.extend([
        "--network",
        "nef",
        "--nef-url",
        &nef_url,
        "--nef-scs-as-id",
        "as1",
        "--client-rate-limit",
        "0",
        "--allow-insecure-sinks",
        "--allow-private-sinks",
    ]);
    let qod = start(&args, &log);
    let token = common::dev_token_in(dir.path());
    let sink = TestSink::start().await;
    let http = reqwest::Client::new();
    let create = |body: Value, traceparent: &'static str, correlator: &'static str| {
        http.post(format!("http://{}/quality-on-demand/v1/sessions", qod.addr))
            .bearer_auth(&token)
            .header("traceparent", traceparent)
            .header("x-correlator", correlator)
            .json(&body)
            .send()
    };

    let mut body = session_body("+33612340001", "198.51.100.1", 60);
    body["sink"] = json!(sink.url("events", Behaviour::Accept));
    let r = create(body, CALLER, "corr-1").await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-correlator"], "corr-1");
    let created: Value = r.json().await.unwrap();
    let id = created["sessionId"].as_str().unwrap().to_owned();

    // The request's span: the caller's trace, the caller's span as parent.
    let caller = TraceParent::parse(CALLER).unwrap();
    let request = closed_span(&log, |s| {
        s["session_id"] == id.as_str() && s["method"] == "POST"
    })
    .await;
    assert_eq!(request["trace_id"], caller.trace_hex());
    assert_eq!(request["parent_span_id"], caller.span_hex());
    assert_eq!(request["x_correlator"], "corr-1");
    assert_eq!(request["status"], 201);

    // The provisioning job: a trace of its own, linked to the request's span.
    let job = closed_span(&log, |s| {
        s["session_id"] == id.as_str() && s["queue"] == "provision_session"
    })
    .await;
    let link = TraceParent::parse(job["link"].as_str().unwrap()).unwrap();
    assert_eq!(link.trace_hex(), caller.trace_hex());
    assert_eq!(link.span_hex(), request["span_id"].as_str().unwrap());
    assert_ne!(job["trace_id"], request["trace_id"]);
    assert_eq!(job["x_correlator"], "corr-1");

    // The NEF got the job's context and the correlator.
    let requests: Vec<Value> = http
        .get(format!("http://{}/_fake/requests", nef.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let post = requests
        .iter()
        .find(|r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with("/subscriptions"))
        .expect("the subscription was created");
    let sent = TraceParent::parse(post["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(sent.trace_hex(), job["trace_id"].as_str().unwrap());
    assert_eq!(sent.span_hex(), job["span_id"].as_str().unwrap());
    assert_eq!(post["x-correlator"], "corr-1");

    // The AVAILABLE event carries the context of the job that made the session AVAILABLE.
    let delivered = sink
        .wait_delivered("events", 1, Duration::from_secs(15))
        .await;
    let event = &delivered[0].body;
    assert_eq!(event["data"]["qosStatus"], "AVAILABLE");
    let carried = TraceParent::parse(event["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(carried.trace_hex(), job["trace_id"].as_str().unwrap());

    // A traceparent that does not parse is ignored: the request starts a trace of its own.
    let r = create(
        session_body("+33612340002", "198.51.100.2", 60),
        "00-not-a-trace-01",
        "corr-2",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let other = created["sessionId"].as_str().unwrap().to_owned();
    let request = closed_span(&log, |s| {
        s["session_id"] == other.as_str() && s["method"] == "POST"
    })
    .await;
    assert!(request["parent_span_id"].is_null(), "{request}");
    assert_ne!(request["trace_id"], caller.trace_hex());
    assert_eq!(request["trace_id"].as_str().unwrap().len(), 32);
}
