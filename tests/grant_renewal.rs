//! Grant leases: a session longer than the grant lifetime has its grant renewed before each
//! lease ends and lives to its own end; an extension past the lease gets a renewal; a grant the
//! network stops renewing ends the session NETWORK_TERMINATED by its lease end.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, poll_until, session_body, status};

async fn renewals(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM session_events WHERE session_id = ? AND reason = 'GRANT_RENEWED'",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn lease_until_ms(app: &TestApp, id: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT lease_until_ms FROM sessions WHERE id = ?")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_session_longer_than_the_grant_lifetime_is_renewed_until_its_end() {
    let app = TestApp::spawn_with(|s| s.grant_lifetime = Duration::from_secs(2)).await;
    let (_, created) = app
        .create(&session_body("+33640000001", "198.51.100.30", 5))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, available) = app
        .wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    let started = chrono::DateTime::parse_from_rfc3339(available["startedAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let first_lease = lease_until_ms(&app, &id).await.expect("a lease");
    assert!(
        (first_lease - started - 2000).abs() < 50,
        "first lease is the grant lifetime: {}",
        first_lease - started
    );
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(8), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(
        ended["statusInfo"], "DURATION_EXPIRED",
        "lived to its own end"
    );
    // 5 s on 2 s leases renewed 0.5 s before they end: at about 1.5 s and 3.5 s.
    assert_eq!(renewals(&app, &id).await, 2);
    let (_, last) = app.session(&id).await;
    assert_eq!(last["statusInfo"], "DURATION_EXPIRED");
}

#[tokio::test]
async fn a_lease_the_network_stops_renewing_ends_the_session_by_its_end() {
    let app = TestApp::spawn_with(|s| s.grant_lifetime = Duration::from_secs(2)).await;
    let (_, created) = app
        .create(&session_body("+33640000002", "198.51.100.31", 60))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    app.network.refuse_renewals(true);
    let lease = lease_until_ms(&app, &id).await.expect("a lease");
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(5), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    let ended_ms = chrono::DateTime::parse_from_rfc3339(ended["expiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(
        ended_ms <= lease + 100,
        "ended {} ms after the lease",
        ended_ms - lease
    );
    assert_eq!(renewals(&app, &id).await, 0);
}

#[tokio::test]
async fn extending_a_session_past_its_lease_schedules_a_renewal() {
    let app = TestApp::spawn_with(|s| s.grant_lifetime = Duration::from_secs(3)).await;
    let (_, created) = app
        .create(&session_body("+33640000003", "198.51.100.32", 2))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    // The 2 s session fits its first lease: no renewal planned.
    let (code, extended) = app
        .post(
            &format!("/quality-on-demand/v1/sessions/{id}/extend"),
            &serde_json::json!({"requestedAdditionalDuration": 3}),
        )
        .await;
    assert_eq!(code, 200, "{extended}");
    let started = Instant::now();
    let renewed = poll_until(Duration::from_secs(4), || async {
        (renewals(&app, &id).await > 0).then_some(())
    })
    .await;
    assert!(
        renewed.is_some(),
        "no renewal after {:?}",
        started.elapsed()
    );
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(6), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "DURATION_EXPIRED");
}

#[tokio::test]
async fn renewals_that_keep_failing_end_the_session_when_its_lease_lapses_not_before() {
    let app = TestApp::spawn_with(|s| s.grant_lifetime = Duration::from_secs(2)).await;
    let (_, created) = app
        .create(&session_body("+33640000004", "198.51.100.33", 60))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    app.network.fail_renewals(true);
    let lease = lease_until_ms(&app, &id).await.expect("a lease");
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(5), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    let ended_ms = chrono::DateTime::parse_from_rfc3339(ended["expiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    // Retried while the lease held; ended once it lapsed, within the queue's second.
    assert!(
        ended_ms >= lease,
        "ended {} ms before the lease",
        lease - ended_ms
    );
    assert!(
        ended_ms <= lease + 1000,
        "ended {} ms after the lease",
        ended_ms - lease
    );
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM session_events WHERE session_id = ?")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        events, 3,
        "REQUESTED, AVAILABLE, UNAVAILABLE: no renewal recorded"
    );
}
