//! The dashboards and the rules proven on the real tools: a real Prometheus scrapes a running
//! server through a scripted scenario and evaluates every panel's, variable's and rule's
//! expression (none errors, none is empty); failure drills with Prometheus and Alertmanager
//! each fire exactly their alerts within a stated time, and none fires before the fault.
//!
//! The drills load the committed rules with every `for` shortened to `DRILL_FOR` (the real
//! durations are exercised by `promtool test rules` in `tests/alerts.rs`); thresholds and
//! windows are the committed ones.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::prometheus::{self, Daemon};
use common::sink::{Behaviour, TestSink};
use common::{TestApp, override_pools, session_body};
use serde_json::{Value, json};
use tokio::sync::watch;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
const DRILL_FOR: &str = "10s";

/// Grafana's variables as a dashboard on this Prometheus would set them (1 s scrapes).
fn substitute(expr: &str, instance: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$__range", "1m")
        .replace("$__interval", "1s")
        .replace("$job", "qod")
        .replace("$instance", instance)
}

/// Whether a result shows something: a series with a number (NaN is an empty panel too).
fn filled(result: &[Value]) -> bool {
    result.iter().any(|s| {
        s["value"][1]
            .as_str()
            .is_some_and(|v| v.parse::<f64>().is_ok_and(|v| !v.is_nan()))
    })
}

/// Sinks of the scenario: one that accepts, one that always fails.
const ACCEPTING: &str = "accepting";
const FAILING: &str = "failing";

/// The scripted scenario, until `stop`: creates through v1 and v0 that expire within
/// seconds, creates that are extended and deleted, an overlapping request (409), sessions
/// whose sink always fails (dead letters), on a network that fails and refuses some requests.
async fn scenario(app: &TestApp, sink: &TestSink, mut stop: watch::Receiver<bool>) -> (u32, u32) {
    let (mut round, mut conflicts) = (0u32, 0u32);
    while !*stop.borrow() {
        round += 1;
        let phone = |n: u32| format!("+3361{:07}", round * 10 + n);
        let mut short = session_body(&phone(1), "198.51.100.1", 2);
        short["sink"] = json!(sink.url(ACCEPTING, Behaviour::Accept));
        let (code, body) = app.create(&short).await;
        assert_eq!(code, 201, "{body}");
        // The same device again while its session lives (unless the network refused it).
        if app.create(&short).await.0 == 409 {
            conflicts += 1;
        }

        let mut failing = session_body(&phone(2), "198.51.100.2", 3);
        failing["sink"] = json!(sink.url(FAILING, Behaviour::Always(500)));
        assert_eq!(app.create(&failing).await.0, 201);

        let (code, long) = app
            .create(&session_body(&phone(3), "198.51.100.3", 60))
            .await;
        assert_eq!(code, 201, "{long}");
        let id = long["sessionId"].as_str().unwrap().to_owned();
        let path = format!("/quality-on-demand/v1/sessions/{id}");
        // An extend is refused (409) until the session is AVAILABLE: both are traffic.
        let _ = app
            .post(
                &format!("{path}/extend"),
                &json!({"requestedAdditionalDuration": 5}),
            )
            .await;
        let v0 = session_body(&phone(4), "198.51.100.4", 2);
        assert_eq!(app.post("/qod/v0/sessions", &v0).await.0, 201);
        let _ = tokio::time::timeout(Duration::from_millis(400), stop.changed()).await;
        app.delete(&path).await;
    }
    (round, conflicts)
}

/// Alert inputs a healthy run leaves without a series, and why.
const MAY_SELECT_NOTHING: &[(&str, &str)] = &[(
    r#"status=~"5..""#,
    "a status's series starts with its first answer, and the scenario has no server error",
)];

fn rules_file() -> PathBuf {
    PathBuf::from(DIR).join("qod.rules.yml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_variable_and_rule_evaluates_on_a_real_prometheus() {
    let Some((prometheus_bin, _)) = prometheus::binaries() else {
        return;
    };
    let sink = TestSink::start().await;
    let app = TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
        s.sim.failure_rate = 0.2;
        s.sim.refuse_rate = 0.1;
        override_pools(
            s,
            "[deliver_notification]\nretry = { max_attempts = 2, base_ms = 100, jitter = false }",
        );
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let instance = app.addr.to_string();
    let prom = prometheus::prometheus(
        &prometheus_bin,
        dir.path(),
        &prometheus::config(&instance, &rules_file(), None, "none"),
    )
    .await;

    let (stop, stopped) = watch::channel(false);
    let traffic = scenario(&app, &sink, stopped);
    let proof = async {
        // Twenty seconds of scrapes, the traffic going on.
        common::poll_until(Duration::from_secs(60), || async {
            (prom.scrapes("qod").await >= 20).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("Prometheus did not scrape: {}", prom.log_text()));
        let problems = evaluate_everything(&prom, &instance).await;
        stop.send(true).unwrap();
        problems
    };
    let ((rounds, conflicts), problems) = tokio::join!(traffic, proof);
    assert!(rounds >= 10, "only {rounds} rounds of traffic");
    assert!(conflicts > 0, "no overlapping request was answered 409");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every expression of the dashboards and the rules, evaluated now; what is wrong with each.
async fn evaluate_everything(prom: &Daemon, instance: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut evaluated = 0;
    for (path, board) in common::dashboards() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for variable in board["templating"]["list"].as_array().into_iter().flatten() {
            let Some(query) = variable["query"]["query"].as_str() else {
                continue;
            };
            let (selector, label) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .unwrap_or_else(|| panic!("{name}: variable query {query}"));
            let values = prom
                .label_values(label.trim(), &substitute(selector, instance))
                .await;
            let want = if label.trim() == "job" {
                "qod"
            } else {
                instance
            };
            if !values.iter().any(|v| v == want) {
                problems.push(format!("{name}: variable {query} gives {values:?}"));
            }
            evaluated += 1;
        }
        for panel in board["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let title = panel["title"].as_str().unwrap_or_default();
                match prom.query(&substitute(expr, instance)).await {
                    Err(e) => problems.push(format!("{name} / {title}: {e}")),
                    Ok(r) if !filled(&r) => {
                        problems.push(format!("{name} / {title}: empty ({expr})"))
                    }
                    Ok(_) => {}
                }
                evaluated += 1;
            }
        }
    }
    for rule in prom.rules().await {
        let rule_name = rule["name"].as_str().unwrap_or_default().to_owned();
        if rule["health"] != "ok" {
            problems.push(format!(
                "rule {rule_name}: health {} ({})",
                rule["health"], rule["lastError"]
            ));
        }
        let expr = rule["query"].as_str().unwrap_or_default().to_owned();
        match rule["type"].as_str() {
            Some("recording") => match prom.query(&rule_name).await {
                Ok(r) if filled(&r) => {}
                other => problems.push(format!("recorded {rule_name}: {other:?}")),
            },
            // An alert's expression is empty while it is silent; what it reads must exist.
            _ => {
                if let Err(e) = prom.query(&expr).await {
                    problems.push(format!("alert {rule_name}: {e}"));
                }
                let ast = promql_parser::parser::parse(&expr).unwrap();
                for selector in common::promql::selectors(&ast) {
                    let selector = common::promql::render(selector);
                    if let Some((_, why)) = MAY_SELECT_NOTHING
                        .iter()
                        .find(|(s, _)| selector.contains(s))
                    {
                        eprintln!("{rule_name}: {selector} not checked: {why}");
                        continue;
                    }
                    match prom.query(&format!("count({selector})")).await {
                        Ok(r) if filled(&r) => {}
                        other => problems.push(format!(
                            "alert {rule_name}: {selector} selects nothing ({other:?})"
                        )),
                    }
                }
            }
        }
        evaluated += 1;
    }
    assert!(evaluated >= 80, "only {evaluated} expressions found");
    problems
}

/// The committed rules with every `for` shortened, for the drills.
fn drill_rules(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(rules_file()).unwrap();
    let shortened: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: {DRILL_FOR}", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect();
    assert!(
        shortened.iter().filter(|l| l.contains("for: ")).count() >= 15,
        "every alert has a for"
    );
    let file = dir.join("qod.rules.yml");
    std::fs::write(&file, shortened.join("\n") + "\n").unwrap();
    file
}

/// One drill: a server in its healthy state, then its fault, and the alerts it must cause.
struct Drill {
    name: &'static str,
    expected: &'static [&'static str],
    /// Labels an expected alert must carry: (alert, label, value).
    labels: &'static [(&'static str, &'static str, &'static str)],
    /// From the fault to the last expected alert at Alertmanager.
    within: Duration,
}

/// Healthy traffic for `quiet`, during which no alert may fire; then `fault`, after which
/// exactly `drill.expected` must reach Alertmanager within `drill.within`.
async fn run_drill<F: std::future::Future<Output = ()>>(
    drill: &Drill,
    prometheus_bin: &Path,
    am: &Daemon,
    app: &TestApp,
    quiet: impl AsyncFn(),
    fault: F,
) -> Result<Duration, String> {
    let dir = tempfile::tempdir().unwrap();
    let rules = drill_rules(dir.path());
    let prom = prometheus::prometheus(
        prometheus_bin,
        dir.path(),
        &prometheus::config(&app.addr.to_string(), &rules, Some(&am.url), drill.name),
    )
    .await;
    let mine = |alerts: Vec<(String, Value)>| -> BTreeSet<String> {
        alerts
            .into_iter()
            .filter(|(_, labels)| labels["drill"] == drill.name)
            .map(|(name, labels)| {
                for (alert, label, value) in drill.labels {
                    if name == *alert && labels[label] != *value {
                        return format!("{name} with {label}={}", labels[label]);
                    }
                }
                name
            })
            .collect()
    };
    // Healthy: longer than any shortened `for`, nothing fires.
    let healthy_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < healthy_until {
        quiet().await;
        let firing = mine(am.received_alerts().await);
        if !firing.is_empty() {
            return Err(format!(
                "{}: fired before the fault: {firing:?}",
                drill.name
            ));
        }
    }
    if prom.scrapes("qod").await < 5 {
        return Err(format!("{}: Prometheus did not scrape", drill.name));
    }
    fault.await;
    let start = Instant::now();
    let expected: BTreeSet<String> = drill.expected.iter().map(|s| s.to_string()).collect();
    loop {
        let firing = mine(am.received_alerts().await);
        let extra: Vec<&String> = firing.difference(&expected).collect();
        if !extra.is_empty() {
            return Err(format!("{}: unexpected alerts {extra:?}", drill.name));
        }
        if firing == expected {
            return Ok(start.elapsed());
        }
        if start.elapsed() > drill.within {
            return Err(format!(
                "{}: after {:?} only {firing:?} of {expected:?}",
                drill.name, drill.within
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn sinks_allowed(configure: impl FnOnce(&mut qod::Settings)) -> TestApp {
    TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
        configure(s);
    })
    .await
}

/// A create with a sink at `path`, for a device of its own.
async fn create(app: &TestApp, sink: Option<&str>, n: u32, duration: i64) {
    let mut body = session_body(&format!("+3362{n:07}"), "198.51.100.9", duration);
    if let Some(sink) = sink {
        body["sink"] = json!(sink);
    }
    let (code, created) = app.create(&body).await;
    assert_eq!(code, 201, "{created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_drills_fire_exactly_their_alerts() {
    let Some((prometheus_bin, alertmanager_bin)) = prometheus::binaries() else {
        return;
    };
    let am_dir = tempfile::tempdir().unwrap();
    let am = prometheus::alertmanager(
        &alertmanager_bin,
        am_dir.path(),
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .await;
    let counter = std::sync::atomic::AtomicU32::new(0);
    let next = || counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // The NEF goes away: every network request fails.
    let nef_down = Drill {
        name: "nef-down",
        expected: &["QodNetworkErrorRatioHigh"],
        labels: &[],
        within: Duration::from_secs(45),
    };
    // A process of its own: killing it closes the connections the server keeps open to it.
    let nef = common::process::start(
        &["fake-nef", "--listen", "127.0.0.1:0"],
        &am_dir.path().join("nef.log"),
    );
    let nef_addr = nef.addr.clone();
    let nef_app = TestApp::spawn_with(|s| {
        s.nef = Some(qod::network::nef::NefSettings {
            url: format!("http://{nef_addr}/3gpp-as-session-with-qos/v1"),
            scs_as_id: Some("as1".into()),
            timeout: Duration::from_secs(2),
            oauth: None,
            qos_references: Default::default(),
            ca_file: None,
            await_allocation: false,
            request_test_notification: false,
            extra_fields: Default::default(),
        });
    })
    .await;
    let nef_drill = run_drill(
        &nef_down,
        &prometheus_bin,
        &am,
        &nef_app,
        async || {
            create(&nef_app, None, next(), 1).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        },
        async {
            drop(nef);
            for _ in 0..20 {
                create(&nef_app, None, next(), 1).await;
            }
        },
    );

    // The consumer's sink answers 500 to everything: notifications go to the dead letters.
    let sink_500 = Drill {
        name: "sink-500",
        expected: &[
            "QodDeadLettersAppearing",
            "QodNotificationSLOBudgetBurnFast",
            "QodNotificationSLOBudgetBurnSlow",
        ],
        labels: &[],
        within: Duration::from_secs(45),
    };
    let sink = TestSink::start().await;
    let sink_app = sinks_allowed(|s| {
        override_pools(
            s,
            "[deliver_notification]\nretry = { max_attempts = 2, base_ms = 100, jitter = false }",
        )
    })
    .await;
    let sink_drill = run_drill(
        &sink_500,
        &prometheus_bin,
        &am,
        &sink_app,
        async || {
            create(
                &sink_app,
                Some(&sink.url("fine", Behaviour::Accept)),
                next(),
                1,
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        },
        async {
            for _ in 0..15 {
                let url = sink.url("broken", Behaviour::Always(500));
                create(&sink_app, Some(&url), next(), 60).await;
            }
        },
    );

    // The delivery pool stalls: its two workers hang on a sink that never answers, and the
    // deliveries behind them wait.
    let stall = Drill {
        name: "stalled-pool",
        expected: &["QodDeliveryQueueStarved", "QodQueueOldestDueTooOld"],
        labels: &[("QodQueueOldestDueTooOld", "queue", "deliver_notification")],
        within: Duration::from_secs(100),
    };
    let hanging = TestSink::start().await;
    let stall_app = sinks_allowed(|s| {
        s.notify.timeout = Duration::from_secs(600);
        override_pools(s, "[deliver_notification]\nconcurrency = 2");
    })
    .await;
    let stall_drill = run_drill(
        &stall,
        &prometheus_bin,
        &am,
        &stall_app,
        async || {
            create(
                &stall_app,
                Some(&hanging.url("fine", Behaviour::Accept)),
                next(),
                1,
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        },
        async {
            for _ in 0..6 {
                let url = hanging.url("hangs", Behaviour::Hang(Duration::from_secs(600)));
                create(&stall_app, Some(&url), next(), 300).await;
            }
        },
    );

    let results = tokio::join!(nef_drill, sink_drill, stall_drill);
    let mut failures = Vec::new();
    for (drill, result) in [
        (&nef_down, results.0),
        (&sink_500, results.1),
        (&stall, results.2),
    ] {
        match result {
            Ok(took) => eprintln!(
                "drill {}: {:?} at Alertmanager {took:.1?} after the fault (within {:?})",
                drill.name, drill.expected, drill.within
            ),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        am.log_text()
    );
}
