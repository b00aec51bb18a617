//! `qod bench` keeps working: a few seconds of load against the in-process server, checked for
//! a complete report. No timing is asserted (the machine is shared).

mod common;

use common::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_bench_run_reports_every_lifecycle() {
    let app = TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
    })
    .await;
    let target = format!("http://{}", app.addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qod"))
        .args([
            "bench",
            "--target",
            &target,
            "--rate",
            "20",
            "--duration",
            "2s",
            "--token",
            app.token.as_deref().expect("development token"),
        ])
        .args([
            "--session-duration",
            "1",
            "--grace",
            "10",
            "--concurrency",
            "4",
            "--json",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let created = report["created"].as_u64().unwrap();
    assert!(created >= 10, "{report}");
    assert_eq!(
        report["lifecycles_completed"].as_u64(),
        Some(created),
        "{report}"
    );
    assert_eq!(
        report["create_to_available"]["count"].as_u64(),
        Some(created)
    );
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    for field in ["create_latency", "expiry_lateness"] {
        assert!(
            report[field]["p99_ms"].is_number(),
            "{field} missing: {report}"
        );
    }
    assert!(report["server_jobs_per_s"].as_f64().unwrap() > 0.0);
}

/// Runs `qod bench` for a short load against `target`; returns its exit status and stderr.
async fn bench(target: &str, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qod"))
        .args(["bench", "--target", target, "--duration", "30s"])
        .args(extra)
        .output()
        .await
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_that_cannot_work_stops_at_once_with_the_reason_and_a_hint() {
    let app = TestApp::spawn().await;
    let target = format!("http://{}", app.addr);
    let token = app.token.clone().expect("development token");
    let started = std::time::Instant::now();

    let (status, err) = bench(&target, &["--token", &token]).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("INVALID_SINK")
            && err.contains("--allow-insecure-sinks --allow-private-sinks"),
        "{err}"
    );

    let (status, err) = bench(&target, &[]).await;
    assert!(!status.success(), "{err}");
    assert!(err.contains("401") && err.contains("--token"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (status, err) = bench(&nowhere, &["--token", &token]).await;
    assert!(!status.success(), "{err}");
    assert!(err.contains("no server answers"), "{err}");

    let (status, err) = bench(&target, &["--token", &token, "--rate", "0"]).await;
    assert_eq!(status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("--rate"), "{err}");

    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "none of them ran the 30 s load"
    );
}
