//! The real binary, killed with SIGKILL at random moments while sessions are created,
//! provisioned and expired, then restarted on the same database: nothing accepted is lost,
//! nothing is done twice, no grant is left behind.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{self, Process};
use common::sink::{Behaviour, TestSink};
use rand::Rng;

/// `db`: the test backend's database flags (`common::process_database_args`).
fn start(dir: &Path, db: &[String]) -> Process {
    start_with(dir, db, &[])
}

fn start_with(dir: &Path, db: &[String], extra: &[&str]) -> Process {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--retention-secs",
        "1",
        "--sim-latency-ms",
        "20",
        "--client-rate-limit",
        "0",
    ];
    args.extend(db.iter().map(String::as_str));
    args.extend_from_slice(extra);
    process::start(&args, &dir.join("server.log"))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_accepted_session_and_leaks_no_grant() {
    let mut dir = tempfile::tempdir().unwrap();
    // Post-mortem mode: the data folder and the server log survive the test.
    dir.disable_cleanup(std::env::var_os("QOD_TEST_KEEP").is_some());
    eprintln!("server logs: {}", dir.path().join("server.log").display());
    let db = common::process_database_args(dir.path()).await;
    let accepted: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    // Windows during which no server ran: (killed at, next ready at).
    let mut down: Vec<(i64, i64)> = Vec::new();
    let client = common::authorized_builder(Some(&common::dev_token_in(dir.path())))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut serial = 0u32;

    for round in 0..6 {
        let mut server = start(dir.path(), &db);
        if let Some(last) = down.last_mut() {
            last.1 = now_ms();
        }
        let url = format!("http://{}/quality-on-demand/v1/sessions", server.addr);
        let run_for = Duration::from_millis(rand::rng().random_range(300..1500));
        let deadline = Instant::now() + run_for;
        let mut tasks = Vec::new();
        for worker in 0..2 {
            let (client, url, accepted) = (client.clone(), url.clone(), accepted.clone());
            let first = serial + worker * 10_000;
            tasks.push(tokio::spawn(async move {
                let mut n = first;
                while Instant::now() < deadline {
                    // A steady load, well below saturation: this test is about crashes, not speed.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n += 1;
                    let duration = 1 + i64::from(n % 3);
                    let body = common::session_body(
                        &format!("+336{round}{n:07}"),
                        "198.51.100.1",
                        duration,
                    );
                    let Ok(r) = client.post(&url).json(&body).send().await else {
                        continue;
                    };
                    if r.status() != 201 {
                        continue;
                    }
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(id) = v["sessionId"].as_str() {
                        accepted.lock().unwrap().push((id.to_owned(), duration));
                    }
                }
            }));
        }
        serial += 100_000;
        tokio::time::sleep(run_for).await;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        down.push((now_ms(), i64::MAX));
        for t in tasks {
            t.await.unwrap();
        }
        // Let some expiries fall due while the server is down.
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..1500))).await;
    }

    let mut server = start(dir.path(), &db);
    if let Some(last) = down.last_mut() {
        last.1 = now_ms();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 40,
        "too few sessions created to mean anything: {}",
        accepted.len()
    );

    let db = common::TestDb::open(dir.path()).await;
    let all_purged = common::poll_until(Duration::from_secs(30), || async {
        let left = db.int("SELECT COUNT(*) FROM sessions", &[]).await;
        (left == 0).then_some(())
    })
    .await;
    assert!(
        all_purged.is_some(),
        "sessions still stored 30 s after the last restart"
    );

    for (id, duration) in &accepted {
        let rows = db
            .rows(
                "SELECT to_status, reason, at_ms FROM session_events WHERE session_id = ? ORDER BY id",
                &[id],
            )
            .await;
        let path: Vec<&str> = rows
            .iter()
            .map(|r| r["to_status"].as_str().unwrap())
            .collect();
        assert_eq!(
            path,
            ["REQUESTED", "AVAILABLE", "UNAVAILABLE", "PURGED"],
            "session {id}"
        );
        assert_eq!(rows[2]["reason"], "DURATION_EXPIRED", "session {id}");
        let available_at = rows[1]["at_ms"].as_i64().unwrap();
        let expired_at = rows[2]["at_ms"].as_i64().unwrap();
        let held = db
            .int(
                "SELECT COUNT(*) FROM sim_grants WHERE session_id = ?",
                &[id],
            )
            .await;
        assert_eq!(held, 1, "session {id} held {held} grants");
        let due = available_at + duration * 1000;
        assert!(
            expired_at >= due,
            "session {id} expired {} ms before its due time",
            due - expired_at
        );
        // Within 1.5 s of expiresAt; if the server was killed before that, within 1.5 s of the
        // restart that followed. On PostgreSQL a restarted node is a new node: the jobs the
        // killed one held wait for their lease (3 s) to lapse.
        let grace = if common::postgres_backend() {
            1500 + 3000
        } else {
            1500
        };
        let window = down
            .iter()
            .find(|(killed, ready)| *ready > due && *killed < due + grace);
        let resumed = window.map(|d| d.1);
        let allowed = resumed.map_or(due + 1500, |ready| ready.max(due) + grace);
        assert!(
            expired_at <= allowed,
            "session {id} expired {} ms after due (down from/to relative to due: {:?})",
            expired_at - due,
            window.map(|(k, r)| (k - due, r - due))
        );
    }

    let grants = db.int("SELECT COUNT(*) FROM sim_grants", &[]).await;
    let active = db
        .int(
            "SELECT COUNT(*) FROM sim_grants WHERE released_at_ms IS NULL",
            &[],
        )
        .await;
    assert_eq!(active, 0, "grants left in the network");
    let sessions_with_grants = db
        .int("SELECT COUNT(DISTINCT session_id) FROM sim_grants", &[])
        .await;
    assert_eq!(
        grants, sessions_with_grants,
        "a session was provisioned twice"
    );

    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_with_exit_code_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::process_database_args(dir.path()).await;
    let mut server = start(dir.path(), &db);
    let client = common::authorized_client(Some(&common::dev_token_in(dir.path())));
    let r = client
        .post(format!(
            "http://{}/quality-on-demand/v1/sessions",
            server.addr
        ))
        .json(&common::session_body("+33612340000", "198.51.100.1", 60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_neither_loses_an_event_nor_changes_its_id() {
    let sink = TestSink::start().await;
    let url = sink.url("slow", Behaviour::Hang(Duration::from_millis(150)));
    let dir = tempfile::tempdir().unwrap();
    let db = common::process_database_args(dir.path()).await;
    let flags = ["--allow-insecure-sinks", "--allow-private-sinks"];
    let mut server = start_with(dir.path(), &db, &flags);
    let client = common::authorized_client(Some(&common::dev_token_in(dir.path())));
    let mut sessions = Vec::new();
    for i in 0..20 {
        let mut body = common::session_body(&format!("+3363000{i:04}"), "198.51.100.1", 1);
        body["sink"] = serde_json::json!(url);
        let r = client
            .post(format!(
                "http://{}/quality-on-demand/v1/sessions",
                server.addr
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        sessions.push(v["sessionId"].as_str().unwrap().to_owned());
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(100..700))).await;
        drop(server); // SIGKILL
        server = start_with(dir.path(), &db, &flags);
    }

    let complete = common::poll_until(Duration::from_secs(30), || async {
        let delivered = sink.delivered("slow");
        let all = sessions.iter().all(|s| {
            ["AVAILABLE", "UNAVAILABLE"].iter().all(|status| {
                delivered.iter().any(|r| {
                    r.body["data"]["sessionId"] == s.as_str()
                        && r.body["data"]["qosStatus"] == *status
                })
            })
        });
        all.then_some(())
    })
    .await;
    assert!(complete.is_some(), "some events never arrived");
    let received = sink.received("slow");
    for s in &sessions {
        for status in ["AVAILABLE", "UNAVAILABLE"] {
            let ids: std::collections::BTreeSet<&str> = received
                .iter()
                .filter(|r| {
                    r.body["data"]["sessionId"] == s.as_str()
                        && r.body["data"]["qosStatus"] == status
                })
                .map(|r| r.body["id"].as_str().unwrap())
                .collect();
            assert_eq!(
                ids.len(),
                1,
                "{status} of {s} was sent under several ids: {ids:?}"
            );
        }
    }
    eprintln!(
        "{} requests for {} events",
        received.len(),
        sessions.len() * 2
    );
    drop(server);
}
