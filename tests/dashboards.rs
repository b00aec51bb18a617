//! The shipped dashboards only query metrics the server actually exports.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

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
    let app = TestApp::spawn().await;
    let (_, created) = app
        .create(&session_body("+33612345000", "198.51.100.1", 1))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(5), |_, b| {
        status(b) == "UNAVAILABLE"
    })
    .await;
    let exported = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
