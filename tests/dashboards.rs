//! The shipped dashboards only query metrics the server actually exports.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::sink::{Behaviour, TestSink};
use common::{TestApp, session_body, status};

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("qod_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_owned());
        i = end;
    }
    names
}

#[tokio::test]
async fn every_dashboard_query_uses_an_exported_metric() {
    let sink = TestSink::start().await;
    let app = TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
    })
    .await;
    let mut body = session_body("+33612345000", "198.51.100.1", 1);
    body["sink"] = serde_json::json!(sink.url("events", Behaviour::Accept));
    let (_, created) = app.create(&body).await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(5), |_, b| {
        status(b) == "UNAVAILABLE"
    })
    .await;
    sink.wait_delivered("events", 2, Duration::from_secs(5))
        .await;
    // Counters appear once incremented, just after the sink answered: poll for the last one.
    let exported = common::poll_until(Duration::from_secs(5), || async {
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains(r#"qod_notification_attempts_total{outcome="delivered"} 2"#)
            .then_some(text)
    })
    .await
    .expect("deliveries counted");
    let families: BTreeSet<String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();

    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let _: serde_json::Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
        for name in metric_names(&text) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                families.contains(family),
                "{} queries {name}, which /metrics does not export",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "no dashboard queries found");
}
