//! Regression tests for the job queue: each apalis 1.0 storage defect that made us write our own
//! queue (see the README's "Job queue") is a behaviour checked here, so it cannot come back.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::{TestApp, poll_until, session_body, status};
use qod::config::Durability;
use sqlx::Connection;

/// The workers still take new work: a fresh session is created and provisioned in time.
async fn new_sessions_still_become_available(app: &TestApp, phone: &str, within: Duration) {
    let (code, fresh) = app.create(&session_body(phone, "198.51.100.1", 60)).await;
    assert_eq!(code, 201, "{fresh}");
    let id = fresh["sessionId"].as_str().unwrap();
    app.wait_for_session(id, within, |_, b| status(b) == "AVAILABLE")
        .await;
}

/// Another connection to the server's file, holding SQLite's write lock until it commits.
async fn take_write_lock(app: &TestApp) -> sqlx::SqliteConnection {
    let db = app.dir.path().join("qod.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    other
}

/// (transition time, scheduled expiry) of a session's DURATION_EXPIRED event, in ms.
async fn expiry_times(app: &TestApp, id: &str) -> Option<(i64, i64)> {
    let at = app
        .db
        .value(
            "SELECT at_ms FROM session_events WHERE session_id = ? AND reason = 'DURATION_EXPIRED'",
            &[id],
        )
        .await?;
    let started = app
        .db
        .value(
            "SELECT at_ms FROM session_events WHERE session_id = ? AND to_status = 'AVAILABLE'",
            &[id],
        )
        .await?;
    Some((at.as_i64()?, started.as_i64()?))
}

#[tokio::test]
async fn scheduled_expiries_fire_within_a_second_and_never_early() {
    let app = TestApp::spawn().await;
    let mut sessions = Vec::new();
    for (i, duration) in [1, 2, 3].into_iter().enumerate() {
        let (_, created) = app
            .create(&session_body(
                &format!("+3361000000{i}"),
                "198.51.100.1",
                duration,
            ))
            .await;
        sessions.push((created["sessionId"].as_str().unwrap().to_owned(), duration));
    }
    for (id, duration) in &sessions {
        let times = poll_until(Duration::from_secs(6), || expiry_times(&app, id)).await;
        let (expired_ms, started_ms) =
            times.unwrap_or_else(|| panic!("session {id} never expired"));
        let due_ms = started_ms + duration * 1000;
        let late = expired_ms - due_ms;
        assert!(late >= 0, "expired {} ms before expiresAt", -late);
        assert!(late < 1000, "expired {late} ms after expiresAt");
    }
}

#[tokio::test]
async fn failing_jobs_are_retried_with_growing_delays() {
    let app = TestApp::spawn_with(|s| {
        s.sim.failure_rate = 1.0;
        common::override_pools(s, "[provision_session]\nretry = { max_attempts = 5, base_ms = 100, factor = 2.0, cap_ms = 10000, jitter = false }");
    })
    .await;
    // Watch the queue row between attempts: each retry is the same row, rescheduled. The first
    // attempt's row lives only milliseconds; the retries wait 100 ms and more, and are watched.
    let before_ms = Utc::now().timestamp_millis();
    let watcher = {
        let db = app.db.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(i64, i64)> = Vec::new();
            loop {
                let rows: Vec<(i64, i64)> = db
                    .rows(
                        "SELECT attempt, due_at_ms FROM job_queue \
                         WHERE queue = 'provision_session' AND attempt > 0",
                        &[],
                    )
                    .await
                    .iter()
                    .map(|r| {
                        (
                            r["attempt"].as_i64().unwrap(),
                            r["due_at_ms"].as_i64().unwrap(),
                        )
                    })
                    .collect();
                for r in rows {
                    if !seen.contains(&r) {
                        seen.push(r);
                    }
                }
                if seen.len() >= 4 {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = Instant::now();
    let (_, created) = app
        .create(&session_body("+33610000010", "198.51.100.1", 30))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(10), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(
        ended["statusInfo"], "NETWORK_TERMINATED",
        "gave up after the last attempt"
    );
    // 100 + 200 + 400 + 800 ms of backoff at least; apalis alone retries 25 times in ~50 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "gave up after {:?}",
        started.elapsed()
    );
    let mut due = tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .expect("saw four retries")
        .unwrap();
    due.sort();
    assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let first = due[0].1 - before_ms;
    assert!(
        first >= 100,
        "first retry after {first} ms, expected at least 100 ms"
    );
    let gaps: Vec<i64> = due.windows(2).map(|w| w[1].1 - w[0].1).collect();
    for (n, gap) in gaps.iter().enumerate() {
        let floor = 200 * (1 << n);
        assert!(
            *gap >= floor,
            "gap {n} was {gap} ms, expected at least {floor} ms: {gaps:?}"
        );
    }
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "delays must grow: {gaps:?}"
    );
}

#[tokio::test]
async fn a_long_write_lock_held_elsewhere_stops_no_worker_and_loses_no_job() {
    if common::sqlite_only("a_long_write_lock_held_elsewhere_stops_no_worker_and_loses_no_job") {
        return;
    }
    let app = TestApp::spawn().await;
    let (_, early) = app
        .create(&session_body("+33610000020", "198.51.100.1", 2))
        .await;
    let early = early["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&early, Duration::from_secs(3), |_, b| {
        status(b) == "AVAILABLE"
    })
    .await;

    let mut other = take_write_lock(&app).await;
    let locked_at = Instant::now();
    // A create during the lock waits for it instead of failing.
    let create = {
        let client = app.client.clone();
        let url = app.url("/quality-on-demand/v1/sessions");
        tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&session_body("+33610000021", "198.51.100.1", 60))
                .send()
                .await
                .unwrap();
            common::split(r).await
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let released_at = Instant::now();
    assert!(released_at - locked_at >= Duration::from_secs(10));

    let (code, late) = create.await.unwrap();
    assert_eq!(code, 201, "{late}");
    let late = late["sessionId"].as_str().unwrap().to_owned();
    // The expiry that fell due under the lock fires at once; the new session is provisioned.
    app.wait_for_session(&early, Duration::from_secs(2), |_, b| {
        status(b) == "UNAVAILABLE"
    })
    .await;
    app.wait_for_session(&late, Duration::from_secs(2), |_, b| {
        status(b) == "AVAILABLE"
    })
    .await;
    // Workers are still alive for new work.
    new_sessions_still_become_available(&app, "+33610000022", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn workers_that_fail_on_a_lock_beyond_the_busy_timeout_are_restarted() {
    if common::sqlite_only("workers_that_fail_on_a_lock_beyond_the_busy_timeout_are_restarted") {
        return;
    }
    let app = TestApp::spawn_with(|s| s.busy_timeout = Duration::from_millis(200)).await;
    let (_, created) = app
        .create(&session_body("+33610000030", "198.51.100.1", 1))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;

    let mut other = take_write_lock(&app).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();

    app.wait_for_session(&id, Duration::from_secs(5), |_, b| {
        status(b) == "UNAVAILABLE"
    })
    .await;
    new_sessions_still_become_available(&app, "+33610000031", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_restarted_server_resumes_work_at_once_including_expiries_due_while_it_was_down() {
    let app = TestApp::spawn().await;
    let (_, created) = app
        .create(&session_body("+33610000040", "198.51.100.1", 1))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    let dir = app.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let restarted = Instant::now();
    let settings = common::settings_in(dir.path());
    let app = TestApp::spawn_in(dir, settings).await;
    app.wait_for_session(&id, Duration::from_secs(2), |_, b| {
        status(b) == "UNAVAILABLE"
    })
    .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(1),
        "expiry fired {:?} after restart",
        restarted.elapsed()
    );
    // Restart again at once: worker names must not collide with the previous run's.
    let dir = app.stop().await;
    let settings = common::settings_in(dir.path());
    let app = TestApp::spawn_in(dir, settings).await;
    new_sessions_still_become_available(&app, "+33610000041", Duration::from_secs(2)).await;
}

async fn pragmas_of_every_connection(app: &TestApp) -> Vec<(i64, String, i64)> {
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(app.db.sqlite().acquire().await.unwrap());
    }
    let mut out = Vec::new();
    for conn in &mut held {
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        out.push((sync, journal, busy));
    }
    // The writer's own connection, which does all the writing.
    let writer = app
        .writer
        .as_ref()
        .expect("the SQLite store's writer")
        .run(|tx| {
            let sync: i64 = tx.pragma_query_value(None, "synchronous", |r| r.get(0))?;
            let journal: String = tx.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            let busy: i64 = tx.pragma_query_value(None, "busy_timeout", |r| r.get(0))?;
            Ok((sync, journal, busy))
        })
        .await
        .unwrap();
    out.push(writer);
    out
}

#[tokio::test]
async fn every_connection_has_the_configured_durability() {
    if common::sqlite_only("every_connection_has_the_configured_durability") {
        return;
    }
    let normal = TestApp::spawn().await;
    for p in pragmas_of_every_connection(&normal).await {
        assert_eq!(p, (1, "wal".to_owned(), 30_000));
    }
    let full = TestApp::spawn_with(|s| s.durability = Durability::Full).await;
    for p in pragmas_of_every_connection(&full).await {
        assert_eq!(p, (2, "wal".to_owned(), 30_000));
    }
}

#[tokio::test]
async fn finished_jobs_leave_the_table_and_nothing_stays_claimed() {
    let app = TestApp::spawn_with(|s| {
        s.retention = Duration::from_millis(200);
        // The provisioning deadline is a job too; let it fall due within the test.
        s.provision_timeout = Duration::from_millis(500);
    })
    .await;
    let (_, created) = app
        .create(&session_body("+33610000050", "198.51.100.1", 1))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let gone = poll_until(Duration::from_secs(6), || async {
        let n = app
            .db
            .int("SELECT COUNT(*) FROM sessions WHERE id = ?", &[&id])
            .await;
        (n == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "session {id} was never purged");
    // Acknowledgements are batched: the purge job's own row goes with a later round.
    let left = poll_until(Duration::from_secs(2), || async {
        let n = app.scalar("SELECT COUNT(*) FROM job_queue").await;
        (n == 0).then_some(())
    })
    .await;
    let rows = app
        .db
        .rows("SELECT queue, claimed_by FROM job_queue", &[])
        .await;
    assert!(left.is_some(), "jobs left behind: {rows:?}");
}

#[tokio::test]
async fn jobs_written_by_another_process_are_found_by_the_poll() {
    let app = TestApp::spawn().await;
    let (_, created) = app
        .create(&session_body("+33610000060", "198.51.100.1", 3600))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    // Nobody tells this process about the row: only its poll can find it. The expiry job is
    // harmless (not yet due by the session), so a well-formed foreign job is one that runs.
    app.db
        .execute(
            &format!(
                "INSERT INTO job_queue (queue, payload, attempt, due_at_ms) \
                 VALUES ('expire_session', ?, 0, {})",
                Utc::now().timestamp_millis()
            ),
            &[&serde_json::json!({ "session_id": id }).to_string()],
        )
        .await;
    // The newest row of the queue (the session's own expiry was written before).
    let foreign = app
        .scalar("SELECT MAX(id) FROM job_queue WHERE queue = 'expire_session'")
        .await;
    let ran = poll_until(Duration::from_secs(2), || async {
        let n = app
            .db
            .int(
                &format!("SELECT COUNT(*) FROM job_queue WHERE id = {foreign}"),
                &[],
            )
            .await;
        (n == 0).then_some(())
    })
    .await;
    assert!(ran.is_some(), "the foreign job was never run");
}

#[tokio::test]
async fn an_undecodable_job_is_dropped_and_the_queue_keeps_working() {
    let app = TestApp::spawn().await;
    app.db
        .execute(
            "INSERT INTO job_queue (queue, payload, attempt, due_at_ms) VALUES ('provision_session', '{\"nonsense\": 1}', 0, 0)",
            &[],
        )
        .await;
    let dropped = poll_until(Duration::from_secs(2), || async {
        let n = app
            .scalar("SELECT COUNT(*) FROM job_queue WHERE payload LIKE '%nonsense%'")
            .await;
        (n == 0).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "the undecodable job is still there");
    new_sessions_still_become_available(&app, "+33610000070", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn jobs_left_in_the_previous_versions_queue_table_are_adopted_at_start() {
    if common::sqlite_only("jobs_left_in_the_previous_versions_queue_table_are_adopted_at_start") {
        return;
    }
    let app = TestApp::spawn().await;
    let (_, created) = app
        .create(&session_body("+33610000080", "198.51.100.1", 3600))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    let dir = app.stop().await;

    // As an earlier version left it: the session's expiry, already due, queued in apalis's
    // `Jobs` table (payload with attempt and due time) and not in ours.
    let db = dir.path().join("qod.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let due_ms = Utc::now().timestamp_millis() - 1000;
    sqlx::query("UPDATE sessions SET expires_at_ms = ? WHERE id = ?")
        .bind(due_ms)
        .bind(&id)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM job_queue WHERE queue = 'expire_session'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE Jobs (job BLOB NOT NULL, id TEXT NOT NULL, job_type TEXT NOT NULL, \
         status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, run_at INTEGER NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let envelope = serde_json::json!({ "session_id": id, "attempt": 0, "due_at_ms": due_ms });
    for (status, ulid) in [
        ("Pending", "01JDQ0000000000000000000P1"),
        ("Done", "01JDQ0000000000000000000D1"),
    ] {
        sqlx::query("INSERT INTO Jobs (job, id, job_type, status, run_at) VALUES (?, ?, 'expire_session', ?, ?)")
            .bind(serde_json::to_vec(&envelope).unwrap())
            .bind(ulid)
            .bind(status)
            .bind(due_ms / 1000)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();

    let settings = common::settings_in(dir.path());
    let app = TestApp::spawn_in(dir, settings).await;
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(3), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "DURATION_EXPIRED");
    let old_table = app
        .scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'Jobs'")
        .await;
    assert_eq!(old_table, 0, "the old queue table is gone once adopted");
}
