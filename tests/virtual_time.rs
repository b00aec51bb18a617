//! The time and randomness ports: a session of one hour lives and ends on a virtual clock
//! without waiting for it, and a seed reproduces the ids a server generates.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{TestApp, session_body, settings_in, status};
use qod::Ports;
use qod::clock::ManualClock;
use qod::random::Random;

/// Now, to the millisecond (the store keeps milliseconds, so times compare exactly).
fn whole_millis_now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

async fn events(app: &TestApp, id: &str) -> Vec<(String, String, i64)> {
    app.db
        .rows(
            "SELECT to_status, reason, at_ms FROM session_events WHERE session_id = ? ORDER BY id",
            &[id],
        )
        .await
        .iter()
        .map(|r| {
            (
                r["to_status"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
                r["at_ms"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_long_session_is_created_expired_and_purged_in_virtual_time() {
    let wall = Instant::now();
    let t0 = whole_millis_now();
    let clock = ManualClock::new(t0);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_in(dir.path());
    // One grant covers the session: the clock jumps to its end without stepping through
    // renewals (stepping from timer to timer is the replay driver's work).
    settings.grant_lifetime = Duration::from_secs(7200);
    let retention = settings.retention;
    let ports = Ports::new(clock.clone(), Random::seeded(1));
    let app = TestApp::spawn_on(dir, settings, ports).await;

    let (code, created) = app
        .create(&session_body("+33612345678", "198.51.100.10", 3600))
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, available) = app
        .wait_for_session(&id, Duration::from_secs(5), |_, b| status(b) == "AVAILABLE")
        .await;
    let expires: DateTime<Utc> = available["expiresAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires, t0 + chrono::Duration::hours(1), "{available}");

    // A millisecond before its end nothing happens; at its end it expires, at that instant.
    clock.set(expires - chrono::Duration::milliseconds(1));
    clock.set(expires);
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(5), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "DURATION_EXPIRED");
    common::poll_until(Duration::from_secs(5), || async {
        (app.active_grants().await == 0).then_some(())
    })
    .await
    .expect("the grant is released at the expiry instant");

    clock.advance(retention);
    app.wait_for_session(&id, Duration::from_secs(5), |code, _| code == 404)
        .await;

    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    assert_eq!(
        events(&app, &id).await,
        vec![
            ("REQUESTED".into(), "CREATED".into(), ms(t0)),
            ("AVAILABLE".into(), "NETWORK_GRANTED".into(), ms(t0)),
            ("UNAVAILABLE".into(), "DURATION_EXPIRED".into(), ms(expires)),
            (
                "PURGED".into(),
                "RETENTION_ELAPSED".into(),
                ms(expires + chrono::Duration::from_std(retention).unwrap())
            ),
        ]
    );
    let took = wall.elapsed();
    eprintln!("one virtual hour and {retention:?} of retention took {took:?} of wall time");
    assert!(
        took < Duration::from_secs(30),
        "virtual time waited: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_session_and_event_ids() {
    async fn run(seed: u64) -> (String, Vec<(String, String, i64)>) {
        let t0 = DateTime::from_timestamp_millis(1_900_000_000_000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        let ports = Ports::new(ManualClock::new(t0), Random::seeded(seed));
        let app = TestApp::spawn_on(dir, settings, ports).await;
        let (code, created) = app
            .create(&session_body("+33612345678", "198.51.100.10", 60))
            .await;
        assert_eq!(code, 201, "{created}");
        let id = created["sessionId"].as_str().unwrap().to_owned();
        app.wait_for_session(&id, Duration::from_secs(5), |_, b| status(b) == "AVAILABLE")
            .await;
        let history = events(&app, &id).await;
        (id, history)
    }
    let (a, b, c) = (run(7).await, run(7).await, run(8).await);
    assert_eq!(a, b, "the same seed and clock reproduce the run");
    assert_ne!(a.0, c.0, "another seed draws another session id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_that_runs_late_keeps_expires_at_and_duration_and_records_when_it_ran() {
    let t0 = whole_millis_now();
    let clock = ManualClock::new(t0);
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_in(dir.path());
    let ports = Ports::new(clock.clone(), Random::seeded(3));
    let app = TestApp::spawn_on(dir, settings, ports).await;
    let (_, created) = app
        .create(&session_body("+33612345678", "198.51.100.10", 60))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, available) = app
        .wait_for_session(&id, Duration::from_secs(5), |_, b| status(b) == "AVAILABLE")
        .await;
    let expires: DateTime<Utc> = available["expiresAt"].as_str().unwrap().parse().unwrap();
    // As after a restart: the expiry runs 2.2 s after its due time.
    let late = expires + chrono::Duration::milliseconds(2200);
    clock.set(late);
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(5), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "DURATION_EXPIRED");
    let ended_at: DateTime<Utc> = ended["expiresAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(ended_at, expires, "{ended}");
    assert_eq!(ended["duration"], 60, "{ended}");
    let expired_event = events(&app, &id)
        .await
        .into_iter()
        .find(|(to, _, _)| to == "UNAVAILABLE")
        .unwrap();
    assert_eq!(
        expired_event.2,
        late.timestamp_millis(),
        "the event says when it ran"
    );
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    app.scalar(sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_past_its_retention_is_deleted_and_counted() {
    let t0 = whole_millis_now();
    let clock = ManualClock::new(t0);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_in(dir.path());
    settings.notify.allow_insecure_sinks = true;
    settings.notify.allow_private_sinks = true;
    settings.history_retention = Duration::from_secs(3600);
    // One grant covers the long session: the clock's jumps must not make its lease lapse.
    settings.grant_lifetime = Duration::from_secs(2 * 86_400);
    let ports = Ports::new(clock.clone(), Random::seeded(5));
    let app = TestApp::spawn_on(dir, settings, ports).await;
    let sink = common::sink::TestSink::start().await;
    let mut body = session_body("+33612345678", "198.51.100.10", 60);
    body["sink"] = serde_json::json!(sink.url("events", common::sink::Behaviour::Accept));
    let (_, created) = app.create(&body).await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let live = session_body("+33612345679", "198.51.100.10", 86_400);
    let (_, kept) = app.create(&live).await;
    let kept = kept["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(5), |_, b| status(b) == "AVAILABLE")
        .await;
    app.wait_for_session(&kept, Duration::from_secs(5), |_, b| {
        status(b) == "AVAILABLE"
    })
    .await;
    // Expired, notified, released and purged.
    clock.advance(Duration::from_secs(61));
    sink.wait_delivered("events", 2, Duration::from_secs(5))
        .await;
    // The release runs right after the expiry, and a purge that finds it still running waits
    // for it on the clock, which moves only when this test says: let it finish first.
    common::poll_until(Duration::from_secs(5), || async {
        let sql = "SELECT COUNT(*) FROM sessions WHERE id = ? AND grant_state = 'released'";
        (app.db.int(sql, &[&id]).await == 1).then_some(())
    })
    .await
    .expect("the expired session's grant is released");
    clock.advance(Duration::from_secs(61));
    app.wait_for_session(&id, Duration::from_secs(5), |code, _| code == 404)
        .await;
    let notifications = "SELECT COUNT(*) FROM notifications";
    let grants = "SELECT COUNT(*) FROM sim_grants";
    assert_eq!(count(&app, notifications).await, 2);
    assert_eq!(count(&app, grants).await, 2);
    // A session's rows in one of the history's tables.
    let rows_of = |table: &'static str, id: String| {
        let db = app.db.clone();
        async move {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE session_id = ?");
            db.int(&sql, &[&id]).await
        }
    };
    let events_of = |id: String| rows_of("session_events", id);
    assert_eq!(events_of(id.clone()).await, 4);

    // Within the retention nothing goes; past it, the purged session's history goes and the
    // live session's stays.
    clock.advance(Duration::from_secs(1800));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        count(&app, notifications).await,
        2,
        "kept within the retention"
    );
    clock.advance(Duration::from_secs(1800) + qod::retention::EVERY);
    let gone = common::poll_until(Duration::from_secs(5), || async {
        (count(&app, notifications).await == 0).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "settled notifications past the retention stay"
    );
    common::poll_until(Duration::from_secs(5), || async {
        (events_of(id.clone()).await == 0).then_some(())
    })
    .await
    .expect("the purged session's events are deleted");
    assert_eq!(
        events_of(kept.clone()).await,
        2,
        "the live session's events are kept"
    );
    let inputs_of = |id: String| rows_of("history_inputs", id);
    assert_eq!(
        inputs_of(id.clone()).await,
        0,
        "the purged session's inputs go"
    );
    assert!(
        inputs_of(kept.clone()).await >= 2,
        "the live session's create and grant are kept"
    );
    let (_, still) = app.session(&kept).await;
    assert_eq!(status(&still), "AVAILABLE", "{still}");
    assert_eq!(
        count(&app, grants).await,
        1,
        "only the live session's grant is left"
    );
    let metrics = app.metrics().await;
    for line in [
        r#"qod_history_purged_rows_total{table="notifications"} 2"#,
        r#"qod_history_purged_rows_total{table="session_events"} 4"#,
        r#"qod_history_purged_rows_total{table="sim_grants"} 1"#,
        // The clock's jumps are not a stalled node: no write was refused...
        "qod_queue_fenced_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    // ...and no lease lapsed.
    let reclaims: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("qod_queue_lease_reclaims_total{"))
        .collect();
    assert_eq!(reclaims.len(), qod::jobs::QUEUES.len(), "{metrics}");
    assert!(reclaims.iter().all(|l| l.ends_with(" 0")), "{reclaims:?}");
}
