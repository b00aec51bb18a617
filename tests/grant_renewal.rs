//! Grant leases: a session longer than the grant lifetime has its grant renewed before each
//! lease ends and lives to its own end; an extension past the lease gets a renewal; a grant the
//! network stops renewing ends the session NETWORK_TERMINATED by its lease end.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, poll_until, session_body, status};
use qod::network::simulated::Renewals;
use serde_json::Value;

async fn renewals(app: &TestApp, id: &str) -> i64 {
    app.db
        .int(
            "SELECT COUNT(*) FROM session_events WHERE session_id = ? AND reason = 'GRANT_RENEWED'",
            &[id],
        )
        .await
}

async fn lease_until_ms(app: &TestApp, id: &str) -> Option<i64> {
    app.db
        .value("SELECT lease_until_ms FROM sessions WHERE id = ?", &[id])
        .await
        .expect("the session's row")
        .as_i64()
}

/// Spawns a server with this grant lifetime and a session of `duration` s, once AVAILABLE.
async fn available_session(
    lifetime_secs: u64,
    phone: &str,
    duration: i64,
) -> (TestApp, String, Value) {
    let app = TestApp::spawn_with(|s| s.grant_lifetime = Duration::from_secs(lifetime_secs)).await;
    let (_, created) = app
        .create(&session_body(phone, "198.51.100.30", duration))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, available) = app
        .wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    (app, id, available)
}

/// Waits for UNAVAILABLE; returns its statusInfo and when it ended (ms).
async fn ended(app: &TestApp, id: &str, within: Duration) -> (String, i64) {
    let (_, body) = app
        .wait_for_session(id, within, |_, b| status(b) == "UNAVAILABLE")
        .await;
    let at = chrono::DateTime::parse_from_rfc3339(body["expiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    (
        body["statusInfo"].as_str().unwrap_or_default().to_owned(),
        at,
    )
}

#[tokio::test]
async fn a_session_longer_than_the_grant_lifetime_is_renewed_until_its_end() {
    let (app, id, available) = available_session(2, "+33640000001", 4).await;
    let started = chrono::DateTime::parse_from_rfc3339(available["startedAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let first_lease = lease_until_ms(&app, &id).await.expect("a lease");
    assert!(
        (first_lease - started - 2000).abs() < 50,
        "first lease is the grant lifetime: {}",
        first_lease - started
    );
    let (info, _) = ended(&app, &id, Duration::from_secs(8)).await;
    assert_eq!(info, "DURATION_EXPIRED", "lived to its own end");
    // 4 s on 2 s leases renewed 0.5 s before they end: at about 1.5 s (to 3.5 s) and 3 s (to the
    // end). Not 5 s: the second renewal would reach the end only to the millisecond, and the
    // first lease counts from the provisioning request, a few ms before startedAt.
    assert_eq!(renewals(&app, &id).await, 2);
    let (_, last) = app.session(&id).await;
    assert_eq!(last["statusInfo"], "DURATION_EXPIRED");
}

#[tokio::test]
async fn a_lease_the_network_stops_renewing_ends_the_session_by_its_end() {
    let (app, id, _) = available_session(2, "+33640000002", 60).await;
    app.network.set_renewals(Renewals::Refused);
    let lease = lease_until_ms(&app, &id).await.expect("a lease");
    let (info, ended_ms) = ended(&app, &id, Duration::from_secs(5)).await;
    assert_eq!(info, "NETWORK_TERMINATED");
    assert!(
        ended_ms <= lease + 100,
        "ended {} ms after the lease",
        ended_ms - lease
    );
    assert_eq!(renewals(&app, &id).await, 0);
}

#[tokio::test]
async fn extending_a_session_past_its_lease_schedules_a_renewal() {
    // The 2 s session fits its first 3 s lease: no renewal planned.
    let (app, id, _) = available_session(3, "+33640000003", 2).await;
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
    let (info, _) = ended(&app, &id, Duration::from_secs(6)).await;
    assert_eq!(info, "DURATION_EXPIRED");
}

#[tokio::test]
async fn renewals_that_keep_failing_end_the_session_when_its_lease_lapses_not_before() {
    let (app, id, _) = available_session(2, "+33640000004", 60).await;
    app.network.set_renewals(Renewals::Failing);
    let lease = lease_until_ms(&app, &id).await.expect("a lease");
    let (info, ended_ms) = ended(&app, &id, Duration::from_secs(5)).await;
    assert_eq!(info, "NETWORK_TERMINATED");
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
    let events: i64 = app
        .db
        .int(
            "SELECT COUNT(*) FROM session_events WHERE session_id = ?",
            &[&id],
        )
        .await;
    assert_eq!(
        events, 3,
        "REQUESTED, AVAILABLE, UNAVAILABLE: no renewal recorded"
    );
}
