//! `qod replay`: histories exported from real runs replay without divergence, the same file
//! gives the same report twice, and an altered history is caught where it was altered.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::sink::{Behaviour, TestSink};
use common::{TestApp, session_body, status};

async fn qod(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_qod"))
        .args(args)
        .output()
        .await
        .unwrap()
}

/// A run with the lifecycles a consumer meets: expiry with notifications (one refused by its
/// sink once), an overlapping create refused, a deletion, an extension, a v0 session.
async fn recorded_run() -> (TestApp, TestSink) {
    let sink = TestSink::start().await;
    let app = TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
    })
    .await;
    let mut body = session_body("+33640000001", "198.51.100.30", 1);
    body["sink"] = json!(sink.url("flaky", Behaviour::FailTimes(1, 500)));
    let (code, created) = app.create(&body).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(app.create(&body).await.0, 409);
    let (_, other) = app
        .create(&session_body("+33640000002", "198.51.100.30", 60))
        .await;
    let long = other["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&long, Duration::from_secs(5), |_, b| {
        status(b) == "AVAILABLE"
    })
    .await;
    let extend = format!("/quality-on-demand/v1/sessions/{long}/extend");
    let (code, _) = app
        .post(&extend, &json!({"requestedAdditionalDuration": 30}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        app.delete(&format!("/quality-on-demand/v1/sessions/{long}"))
            .await
            .0,
        204
    );
    let v0 = session_body("+33640000003", "198.51.100.30", 1);
    let (code, made) = app.post("/qod/v0/sessions", &v0).await;
    assert_eq!(code, 201, "{made}");
    sink.wait_delivered("flaky", 2, Duration::from_secs(15))
        .await;
    // Until every lifecycle has ended and its grant is back.
    let db = app.db.clone();
    common::poll_until(Duration::from_secs(15), || async {
        let live = db
            .int(
                "SELECT COUNT(*) FROM sessions WHERE status <> 'UNAVAILABLE' OR grant_state <> 'released'",
                &[],
            )
            .await;
        (live == 0).then_some(())
    })
    .await
    .expect("every lifecycle ended");
    (app, sink)
}

async fn export(app: &TestApp, out: &Path) {
    let db = common::process_database_args(app.dir.path()).await;
    let out = out.display().to_string();
    let run = qod(&["history", "export", &db[0], &db[1], "--out", &out]).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn edit_lines(path: &Path, edit: impl Fn(&mut Value) -> bool) -> bool {
    let text = std::fs::read_to_string(path).unwrap();
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if !changed && edit(&mut v) {
                changed = true;
            }
            v.to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    changed
}

#[tokio::test]
async fn a_real_run_replays_without_divergence_twice_alike_and_an_altered_one_is_caught() {
    let (app, _sink) = recorded_run().await;
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    export(&app, &history).await;
    let file = history.display().to_string();

    let mut reports = Vec::new();
    for n in 0..2 {
        let report = dir.path().join(format!("report-{n}.txt"));
        let run = qod(&["replay", &file, "--report", &report.display().to_string()]).await;
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        assert!(
            run.status.success(),
            "replay {n} diverged:\n{text}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(text.contains("divergences: none"), "{text}");
        reports.push(text);
    }
    assert_eq!(reports[0], reports[1], "two replays of one file differ");
    assert!(reports[0].contains(" 3 sessions"), "{}", reports[0]);

    // The network refused the v0 session's provisioning (instead of granting it): the replay
    // must say that the session ended otherwise, at its second transition.
    let altered = dir.path().join("altered.jsonl");
    std::fs::copy(&history, &altered).unwrap();
    let text = std::fs::read_to_string(&altered).unwrap();
    let v0_create = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["input"] == "command" && v["api"] == "v0")
        .expect("the v0 create was recorded");
    let v0_session = v0_create["session"].as_str().unwrap().to_owned();
    let session = v0_session.clone();
    assert!(edit_lines(&altered, |v| {
        if v["input"] == "network" && v["op"] == "provision" && v["session"] == session.as_str() {
            v["answer"] = json!({"refused": {"reason": "altered"}});
            return true;
        }
        false
    }));
    let run = qod(&["replay", &altered.display().to_string(), "--json"]).await;
    assert!(!run.status.success(), "the altered history replayed clean");
    let report: Value = serde_json::from_slice(&run.stdout).expect("a JSON report");
    let first = report["divergences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "transition")
        .unwrap_or_else(|| panic!("no transition divergence: {report:#}"));
    assert_eq!(first["session"], v0_session.as_str(), "{report:#}");
    assert_eq!(first["index"], 1, "{report:#}");
    assert_eq!(
        first["expected"],
        "REQUESTED -> AVAILABLE (NETWORK_GRANTED)"
    );
    assert_eq!(
        first["actual"],
        "REQUESTED -> UNAVAILABLE (NETWORK_TERMINATED)"
    );
    assert_eq!(report["counts"]["transition"], 1, "{report:#}");
}
