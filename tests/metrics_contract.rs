//! The metric contract: the committed catalogue is the one the code declares, and a live
//! `/metrics` after traffic of every kind exports exactly the catalogue's families, with their
//! types and help, labels and only allowed label values; `promtool check metrics` finds
//! nothing to say about it; the OpenMetrics exposition holds the same series.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::sink::{Behaviour, TestSink};
use common::{TestApp, session_body, status};
use qod::metrics::catalogue::{self, FAMILIES, Known};
use serde_json::json;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/metrics.md");

#[test]
fn the_committed_catalogue_is_the_one_the_code_declares() {
    let generated = catalogue::markdown();
    if std::env::var_os("QOD_REFRESH_FIXTURES").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "dashboards/metrics.md is out of date: run `qod metrics catalogue > dashboards/metrics.md`"
    );
}

/// One sample line of the text format: name, labels in order, value.
fn sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let (head, value) = line.rsplit_once(' ').expect("a value");
    let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
    let Some((name, rest)) = head.split_once('{') else {
        return (head.to_owned(), Vec::new(), value);
    };
    let body = rest.strip_suffix('}').expect("closing brace");
    let mut labels = Vec::new();
    let mut left = body;
    while !left.is_empty() {
        let (key, after) = left.split_once("=\"").expect("label=\"value\"");
        let end = after.find('"').expect("closing quote");
        labels.push((key.to_owned(), after[..end].to_owned()));
        left = after[end + 1..].trim_start_matches(',');
    }
    (name.to_owned(), labels, value)
}

/// The family a sample belongs to (histograms' series carry suffixes).
fn family_of<'a>(name: &'a str, kinds: &BTreeMap<String, String>) -> &'a str {
    if kinds.contains_key(name) {
        return name;
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Traffic that moves every kind of metric: creates through v0 and v1, an expiry, a delete,
/// an extend, a sink that fails before it accepts, a refused request, a network callback.
async fn traffic(app: &TestApp, sink: &TestSink) {
    let mut short = session_body("+33612345001", "198.51.100.1", 1);
    short["sink"] = json!(sink.url("flaky", Behaviour::FailTimes(1, 500)));
    let (code, created) = app.create(&short).await;
    assert_eq!(code, 201, "{created}");
    let short_id = created["sessionId"].as_str().unwrap().to_owned();

    let (code, created) = app
        .create(&session_body("+33612345002", "198.51.100.2", 60))
        .await;
    assert_eq!(code, 201, "{created}");
    let long_id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&long_id, Duration::from_secs(10), |_, b| {
        status(b) == "AVAILABLE"
    })
    .await;
    let (code, body) = app
        .post(
            &format!("/quality-on-demand/v1/sessions/{long_id}/extend"),
            &json!({"requestedAdditionalDuration": 10}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        app.delete(&format!("/quality-on-demand/v1/sessions/{long_id}"))
            .await
            .0,
        204
    );
    let (code, _) = app
        .post("/qod/v0/sessions", &json!({"duration": "not a number"}))
        .await;
    assert_eq!(code, 400);
    let (code, _) = app.get("/no/such/route").await;
    assert_eq!(code, 404);
    app.wait_for_session(&short_id, Duration::from_secs(10), |_, b| {
        status(b) == "UNAVAILABLE"
    })
    .await;
    sink.wait_delivered("flaky", 2, Duration::from_secs(15))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_exports_exactly_the_catalogue() {
    let sink = TestSink::start().await;
    let app = TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
    })
    .await;
    traffic(&app, &sink).await;
    // Counters of the last delivery are counted just after the sink answered.
    let text = common::poll_until(Duration::from_secs(10), || async {
        let text = app.metrics().await;
        text.contains(r#"qod_notification_attempts_total{outcome="delivered"} 2"#)
            .then_some(text)
    })
    .await
    .expect("deliveries counted");

    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            kinds.insert(name.to_owned(), kind.to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            helps.insert(name.to_owned(), help.to_owned());
        }
    }
    let exported: BTreeSet<&str> = kinds.keys().map(String::as_str).collect();
    let declared: BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
    assert_eq!(
        exported.difference(&declared).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "exported but not in the catalogue"
    );
    assert_eq!(
        declared.difference(&exported).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "in the catalogue but not exported"
    );
    for f in FAMILIES {
        assert_eq!(kinds[f.name], f.kind.as_str(), "{}", f.name);
        assert_eq!(helps[f.name], f.help, "{}", f.name);
    }

    let profiles: Vec<String> = qod::domain::Catalogue::builtin()
        .all()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let known = Known {
        queues: qod::jobs::QUEUES,
        profiles: &profiles,
    };
    let mut series = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels, value) = sample(line);
        let family = catalogue::family(family_of(&name, &kinds));
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .filter(|(k, _)| !(name.ends_with("_bucket") && k == "le"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Exported label order is by name; the catalogue's order is its own.
        let mut ordered = Vec::new();
        for l in family.labels {
            if let Some(found) = labels.iter().find(|(k, _)| *k == l.name) {
                ordered.push(*found);
            }
        }
        assert_eq!(ordered.len(), labels.len(), "{line}: a label not declared");
        assert!(family.allows(&ordered, &known), "{line}: not allowed");
        assert!(value.is_finite() && value >= 0.0, "{line}");
        series += 1;
    }
    assert!(series > 100, "only {series} series");
    // The traffic moved what it should have.
    for moved in [
        r#"qod_session_transitions_total{from="AVAILABLE",reason="DURATION_EXPIRED",to="UNAVAILABLE"} 1"#,
        r#"qod_session_transitions_total{from="AVAILABLE",reason="EXTENDED",to="AVAILABLE"} 1"#,
        r#"qod_notification_attempts_total{outcome="retried"} 1"#,
        r#"qod_session_expiry_lateness_seconds_count 1"#,
        r#"qod_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
    ] {
        assert!(text.contains(moved), "{moved} not in\n{text}");
    }
    assert!(
        text.contains(r#"qod_network_requests_total{operation="provision",outcome="ok"} 2"#),
        "{text}"
    );

    promtool_finds_nothing(&text);
    the_openmetrics_exposition_holds_the_same_series(&app).await;
}

/// Prometheus's own Accept header (2.x) gets OpenMetrics: the same series as the text format,
/// with counters' families named without `_total`, `le` in canonical form and `# EOF` last.
async fn the_openmetrics_exposition_holds_the_same_series(app: &TestApp) {
    // Scraped again: the first scrape added the series of `/metrics` itself.
    let text = &app.metrics().await;
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let r = app
        .client
        .get(app.url("/metrics"))
        .header(reqwest::header::ACCEPT, accept)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()[reqwest::header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let open = r.text().await.unwrap();
    assert!(open.ends_with("\n# EOF\n"), "no EOF at the end");
    assert_eq!(open.matches("# EOF").count(), 1);

    let mut families = BTreeMap::new();
    for line in open.lines().filter(|l| l.starts_with("# TYPE ")) {
        let (name, kind) = line["# TYPE ".len()..].split_once(' ').unwrap();
        families.insert(name.to_owned(), kind.to_owned());
    }
    for f in FAMILIES {
        let name = match f.kind {
            catalogue::Kind::Counter => f
                .name
                .strip_suffix("_total")
                .expect("counters end in _total"),
            _ => f.name,
        };
        assert_eq!(
            families.get(name).map(String::as_str),
            Some(f.kind.as_str()),
            "{name}"
        );
    }
    assert!(
        open.contains(r#"qod_session_expiry_lateness_seconds_bucket{le="1.0"} 1"#),
        "le not canonical"
    );
    assert!(open.contains("# UNIT qod_job_run_seconds seconds\n"));

    let series = |text: &str| -> BTreeSet<(String, Vec<(String, String)>)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (name, labels, _) = sample(l);
                let labels = labels
                    .into_iter()
                    .map(|(k, v)| match (k.as_str(), v.parse::<f64>()) {
                        ("le", Ok(bound)) => (k, bound.to_string()),
                        _ => (k, v),
                    })
                    .collect();
                (name, labels)
            })
            .collect()
    };
    let (classic, open) = (series(text), series(&open));
    assert_eq!(
        classic.symmetric_difference(&open).collect::<Vec<_>>(),
        Vec::<&(String, Vec<(String, String)>)>::new(),
        "series in one exposition only"
    );
}

/// `promtool check metrics` (Debian's, from `scripts/prometheus-tools`) on the scrape. The
/// test command sets `QOD_PROMTOOL`; elsewhere the check is skipped with a line on stderr.
fn promtool_finds_nothing(text: &str) {
    use std::io::Write;
    let Some(promtool) = std::env::var_os("QOD_PROMTOOL") else {
        eprintln!("promtool check skipped: QOD_PROMTOOL is not set (scripts/test-all sets it)");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}
