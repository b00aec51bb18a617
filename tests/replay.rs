//! `qod replay`: histories exported from real runs replay without divergence, the same file
//! gives the same report twice, and an altered history is caught where it was altered.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::sink::{Behaviour, TestSink};
use common::{TestApp, qod_cli, session_body, status};

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
    // The extension outlasts the grant's lease: its renewal is due at once. The delete waits
    // for it, so that the recording does not depend on whether the renewal started within the
    // few milliseconds before the delete (a replay fires a timer the recording never fired at
    // its due time; see the README's limits of a replay).
    let db = app.db.clone();
    common::poll_until(Duration::from_secs(10), || async {
        let renewed = db
            .int(
                "SELECT COUNT(*) FROM session_events WHERE session_id = ? AND reason = 'GRANT_RENEWED'",
                &[&long],
            )
            .await;
        (renewed > 0).then_some(())
    })
    .await
    .expect("the extended session's grant was renewed");
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
    let run = qod_cli(&["history", "export", &db[0], &db[1], "--out", &out]).await;
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

/// The committed histories: one exported from a run of `recorded_run` by this release (format
/// version 1: a later build must still replay it), and the same with one network answer
/// altered. `QOD_REFRESH_FIXTURES=1` rewrites both from a fresh run.
const REAL_FIXTURE: &str = "tests/fixtures/history-v1-real-run.jsonl";
const ALTERED_FIXTURE: &str = "tests/fixtures/history-v1-altered.jsonl";

/// Alters the v0 session's provisioning answer to a refusal; returns that session.
fn alter(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let v0_create = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["input"] == "command" && v["api"] == "v0")
        .expect("the v0 create was recorded");
    let session = v0_create["session"].as_str().unwrap().to_owned();
    assert!(edit_lines(path, |v| {
        if v["input"] == "network" && v["op"] == "provision" && v["session"] == session.as_str() {
            v["answer"] = json!({"refused": {"reason": "altered"}});
            return true;
        }
        false
    }));
    session
}

/// Replays `file` with a JSON report; returns whether it passed and the report.
async fn replay_json(file: &str) -> (bool, Value) {
    let run = qod_cli(&["replay", file, "--json"]).await;
    let report = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&run.stderr)
        )
    });
    (run.status.success(), report)
}

/// The altered history's report names the altered session's provisioning.
fn assert_caught(report: &Value, session: &str) {
    let first = report["divergences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "transition")
        .unwrap_or_else(|| panic!("no transition divergence: {report:#}"));
    assert_eq!(first["session"], session, "{report:#}");
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

#[tokio::test]
async fn the_committed_real_run_replays_clean_and_its_altered_copy_is_caught() {
    let (ok, report) = replay_json(REAL_FIXTURE).await;
    assert!(ok, "{report:#}");
    assert_eq!(report["divergences"], json!([]), "{report:#}");
    assert!(
        report["transitions_expected"].as_u64() > Some(8),
        "{report:#}"
    );
    let text = std::fs::read_to_string(ALTERED_FIXTURE).unwrap();
    let session = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["answer"]["refused"]["reason"] == "altered")
        .expect("the altered answer is in the fixture")["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, report) = replay_json(ALTERED_FIXTURE).await;
    assert!(!ok, "the altered fixture replayed clean");
    assert_caught(&report, &session);
}

/// `qod history generate ARGS --out OUT`, which must succeed.
async fn generate(out: &Path, args: &[&str]) {
    let out = out.display().to_string();
    let mut all = vec!["history", "generate", "--out", &out];
    all.extend_from_slice(args);
    let run = qod_cli(&all).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// What runs at one instant runs in the same order in every process (a virtual clock waking its
/// sleepers, the queue claiming its lanes): before that was so, two generations of 500
/// sessions from one seed differed in the order of answers recorded at one millisecond.
#[tokio::test]
async fn one_seed_generates_the_same_file_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for n in 0..2 {
        let out = dir.path().join(format!("generated-{n}.jsonl"));
        generate(
            &out,
            &["--sessions", "500", "--hours", "24", "--seed", "42"],
        )
        .await;
        files.push(std::fs::read(&out).unwrap());
    }
    assert!(files[0].len() > 100_000, "{} bytes", files[0].len());
    assert!(files[0] == files[1], "two generations from one seed differ");
}

#[tokio::test]
async fn a_generated_history_holds_every_kind_of_input_and_replays_clean_twice_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mix = "v0=0.3,delete=0.3,extend=0.3,overlap=0.2,refuse=0.1,fail=0.1,terminate=0.2,\
               sink_fail=0.2,sink_slow=0.1,sink_gone=0.1,min_duration=60,max_duration=1800";
    let out = dir.path().join("generated.jsonl");
    let args = [
        "--sessions",
        "80",
        "--hours",
        "0.25",
        "--seed",
        "11",
        "--mix",
        mix,
    ];
    generate(&out, &args).await;
    let text = &std::fs::read_to_string(&out).unwrap();
    for needle in [
        r#""api":"v0","op":"create""#,
        r#""api":"v1","op":"create""#,
        r#""status":409"#,
        r#""op":"extend""#,
        r#""op":"delete""#,
        r#""refused":{"reason":"synthetic refusal"}"#,
        r#""unavailable":{"reason":"synthetic outage"}"#,
        r#""refused":{"reason":"synthetic termination"}"#,
        r#""answer":{"retry""#,
        r#""answer":"gone""#,
        r#""reason":"DURATION_EXPIRED""#,
        r#""reason":"DELETE_REQUESTED""#,
        r#""reason":"NETWORK_TERMINATED""#,
        r#""job":"renew_grant""#,
    ] {
        assert!(
            text.contains(needle),
            "{needle} is not in the generated history"
        );
    }
    let file = out.display().to_string();
    let (ok, report) = replay_json(&file).await;
    assert!(ok, "{report:#}");
    let (_, again) = replay_json(&file).await;
    assert_eq!(report, again, "two replays of one generated history differ");
    // Most creates stored a session (an overlapping one only once the first had ended).
    let sessions = report["sessions"].as_u64().unwrap();
    assert!((60..=100).contains(&sessions), "{report:#}");
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
        let run = qod_cli(&["replay", &file, "--report", &report.display().to_string()]).await;
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
    let session = alter(&altered);
    let (ok, report) = replay_json(&altered.display().to_string()).await;
    assert!(!ok, "the altered history replayed clean");
    assert_caught(&report, &session);
    if std::env::var_os("QOD_REFRESH_FIXTURES").is_some() {
        std::fs::copy(&history, REAL_FIXTURE).unwrap();
        std::fs::copy(&altered, ALTERED_FIXTURE).unwrap();
    }
}
