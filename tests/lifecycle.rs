//! A session's life through the real server: provisioning, expiry, deletion, extension,
//! refusal, timeouts, overlap conflicts, and no leaked network grant at the end.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{TestApp, poll_until, session_body, status};
use serde_json::{Value, json};

fn time(v: &serde_json::Value, field: &str) -> DateTime<Utc> {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_session_becomes_available_then_expires_then_is_purged() {
    let app = TestApp::spawn_with(|s| s.retention = Duration::from_secs(1)).await;
    let (code, created) = app
        .create(&session_body("+33612345678", "198.51.100.10", 2))
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(status(&created), "REQUESTED");
    assert!(created.get("startedAt").is_none() && created.get("expiresAt").is_none());
    let id = created["sessionId"].as_str().unwrap().to_owned();

    let (_, available) = app
        .wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    let started = time(&available, "startedAt");
    let expires = time(&available, "expiresAt");
    assert_eq!((expires - started).num_seconds(), 2);
    assert_eq!(app.active_grants().await, 1);

    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(5), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "DURATION_EXPIRED");
    // A session that ran its course ended at its expiresAt, after its whole duration.
    assert_eq!(time(&ended, "expiresAt"), expires, "{ended}");
    assert_eq!(ended["duration"], 2, "{ended}");

    app.wait_for_session(&id, Duration::from_secs(5), |code, _| code == 404)
        .await;
    assert_eq!(app.active_grants().await, 0);
    let history: Vec<(String, String)> = app
        .db
        .rows(
            "SELECT to_status, reason FROM session_events WHERE session_id = ? ORDER BY id",
            &[&id],
        )
        .await
        .iter()
        .map(|r| {
            (
                r["to_status"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("REQUESTED", "CREATED"),
        ("AVAILABLE", "NETWORK_GRANTED"),
        ("UNAVAILABLE", "DURATION_EXPIRED"),
        ("PURGED", "RETENTION_ELAPSED"),
    ];
    let got: Vec<(&str, &str)> = history
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn deleting_a_session_releases_its_grant_and_hides_it() {
    let app = TestApp::spawn().await;
    let (_, created) = app
        .create(&session_body("+33612345679", "198.51.100.11", 60))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    assert_eq!(app.active_grants().await, 1);

    let (code, _) = app
        .delete(&format!("/quality-on-demand/v1/sessions/{id}"))
        .await;
    assert_eq!(code, 204);
    let (code, body) = app.session(&id).await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = app
        .delete(&format!("/quality-on-demand/v1/sessions/{id}"))
        .await;
    assert_eq!(code, 404);
    let released = poll_until(Duration::from_secs(5), || async {
        (app.active_grants().await == 0).then_some(())
    })
    .await;
    assert!(released.is_some(), "grant not released after DELETE");
    let reason = app
        .db
        .text(
            "SELECT reason FROM session_events WHERE session_id = ? AND to_status = 'UNAVAILABLE'",
            &[&id],
        )
        .await;
    assert_eq!(reason.as_deref(), Some("DELETE_REQUESTED"));
    // The same flow can be requested again at once.
    let (code, again) = app
        .create(&session_body("+33612345679", "198.51.100.11", 60))
        .await;
    assert_eq!(code, 201, "{again}");
}

#[tokio::test]
async fn a_deleted_session_is_purged_once_released_and_waiting_for_the_release_is_no_failure() {
    // The release takes a while; the purge, due at once, comes first and must wait, not fail.
    let app = TestApp::spawn_with(|s| s.sim.latency = Duration::from_millis(300)).await;
    let (_, created) = app
        .create(&session_body("+33612345680", "198.51.100.11", 60))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(5), |_, b| status(b) == "AVAILABLE")
        .await;
    let (code, _) = app
        .delete(&format!("/quality-on-demand/v1/sessions/{id}"))
        .await;
    assert_eq!(code, 204);
    let purged = poll_until(Duration::from_secs(5), || async {
        let left = app
            .db
            .int("SELECT COUNT(*) FROM sessions WHERE id = ?", &[&id])
            .await;
        (left == 0).then_some(())
    })
    .await;
    assert!(purged.is_some(), "the deleted session was not purged");
    let metrics = app.metrics().await;
    let failed = metrics
        .lines()
        .find(|l| l.starts_with(r#"qod_jobs_total{outcome="failed",queue="purge_session"}"#));
    assert!(failed.is_none_or(|l| l.ends_with(" 0")), "{failed:?}");
    assert!(
        metrics.contains(r#"qod_jobs_total{outcome="succeeded",queue="release_grant"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn extending_moves_expiry_caps_at_the_profile_maximum_and_the_old_expiry_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("qod.toml");
    std::fs::write(
        &config,
        r#"
[[qos_profiles]]
name = "SHORT"
status = "ACTIVE"
minDuration = { value = 1, unit = "Seconds" }
maxDuration = { value = 4, unit = "Seconds" }
"#,
    )
    .unwrap();
    let mut settings = qod::Settings::load(&qod::config::ServeArgs {
        config: Some(config),
        ..Default::default()
    })
    .unwrap();
    settings.database_url = format!("sqlite://{}", dir.path().join("qod.db").display());
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let app = TestApp::spawn_in(dir, settings).await;

    let mut body = session_body("+33612345680", "198.51.100.12", 2);
    body["qosProfile"] = json!("SHORT");
    let (_, created) = app.create(&body).await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, available) = app
        .wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
    let started = time(&available, "startedAt");

    let (code, extended) = app
        .post(
            &format!("/quality-on-demand/v1/sessions/{id}/extend"),
            &json!({"requestedAdditionalDuration": 100}),
        )
        .await;
    assert_eq!(code, 200, "{extended}");
    assert_eq!(extended["duration"], 4, "capped at maxDuration");
    let new_expiry = time(&extended, "expiresAt");
    assert_eq!((new_expiry - started).num_seconds(), 4);

    // Past the original expiry the session is still AVAILABLE.
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + (started + chrono::Duration::milliseconds(2500) - Utc::now())
                .to_std()
                .unwrap_or_default(),
    )
    .await;
    let (_, mid) = app.session(&id).await;
    assert_eq!(
        status(&mid),
        "AVAILABLE",
        "stale expiry job ended an extended session"
    );

    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(4), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "DURATION_EXPIRED");
    // An UNAVAILABLE session's expiresAt is when it was terminated.
    let late = time(&ended, "expiresAt") - new_expiry;
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
        "expired {late} after the extended expiresAt"
    );

    let (code, refused) = app
        .post(
            &format!("/quality-on-demand/v1/sessions/{id}/extend"),
            &json!({"requestedAdditionalDuration": 1}),
        )
        .await;
    assert_eq!(code, 409);
    assert_eq!(
        refused["code"],
        "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED"
    );
    assert!(refused["message"].as_str().unwrap().contains("UNAVAILABLE"));
}

#[tokio::test]
async fn a_refused_request_becomes_network_terminated_and_stays_readable() {
    let app = TestApp::spawn_with(|s| s.sim.refuse_rate = 1.0).await;
    let (_, created) = app
        .create(&session_body("+33612345681", "198.51.100.13", 30))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(3), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    assert!(ended.get("startedAt").is_none());
    // Readable for min(360 s, remaining duration): here the whole 30 s, so still there now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.session(&id).await.0, 200);
    assert_eq!(app.active_grants().await, 0);
}

#[tokio::test]
async fn transient_network_failures_are_retried_until_the_session_is_available() {
    let app = TestApp::spawn_with(|s| {
        s.sim.failure_rate = 0.5;
        // Enough quick attempts that giving up (0.5^20 per session) does not happen by chance.
        common::override_pools(
            s,
            "[provision_session]\nretry = { max_attempts = 20, base_ms = 50, cap_ms = 400 }",
        );
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let (code, created) = app
            .create(&session_body(
                &format!("+3361234{i:04}"),
                "198.51.100.14",
                60,
            ))
            .await;
        assert_eq!(code, 201);
        ids.push(created["sessionId"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_session(id, Duration::from_secs(20), |_, b| status(b) == "AVAILABLE")
            .await;
    }
    assert_eq!(app.active_grants().await, 6);
}

#[tokio::test]
async fn a_session_the_network_never_confirms_times_out_and_its_late_grant_is_released() {
    let app = TestApp::spawn_with(|s| {
        s.provision_timeout = Duration::from_secs(1);
        s.sim.latency = Duration::from_secs(2);
    })
    .await;
    let started = Instant::now();
    let (_, created) = app
        .create(&session_body("+33612345690", "198.51.100.15", 30))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(4), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "timed out only after {:?}",
        started.elapsed()
    );
    // The network grants it later anyway; that grant must be given back.
    let granted = poll_until(Duration::from_secs(5), || async {
        let n = app.scalar("SELECT COUNT(*) FROM sim_grants").await;
        (n == 1).then_some(())
    })
    .await;
    assert!(granted.is_some(), "the slow network never answered");
    let released = poll_until(Duration::from_secs(8), || async {
        (app.active_grants().await == 0).then_some(())
    })
    .await;
    assert!(released.is_some(), "late grant leaked");
}

#[tokio::test]
async fn provisioning_retries_stop_at_the_deadline_not_after_their_backoff() {
    let app = TestApp::spawn_with(|s| {
        s.provision_timeout = Duration::from_secs(1);
        s.sim.failure_rate = 1.0;
        common::override_pools(s, "[provision_session]\nretry = { max_attempts = 0, base_ms = 5000, factor = 2.0, cap_ms = 60000, jitter = false }");
    })
    .await;
    let started = Instant::now();
    let (_, created) = app
        .create(&session_body("+33612345689", "198.51.100.16", 30))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, ended) = app
        .wait_for_session(&id, Duration::from_secs(4), |_, b| {
            status(b) == "UNAVAILABLE"
        })
        .await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    // The first retry would be 5 s away; the deadline (1 s) comes first.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "ended only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn overlapping_flows_of_one_device_conflict_and_disjoint_ones_do_not() {
    let app = TestApp::spawn().await;
    let mut first = session_body("+33612345691", "198.51.100.0/24", 60);
    first["applicationServerPorts"] = json!({"ranges": [{"from": 5000, "to": 5010}]});
    assert_eq!(app.create(&first).await.0, 201);

    let mut inside = session_body("+33612345691", "198.51.100.7", 60);
    inside["applicationServerPorts"] = json!({"ports": [5005]});
    let (code, body) = app.create(&inside).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["code"], "CONFLICT");

    let mut other_ports = inside.clone();
    other_ports["applicationServerPorts"] = json!({"ports": [6000]});
    assert_eq!(app.create(&other_ports).await.0, 201);
    let other_device = session_body("+33612345692", "198.51.100.7", 60);
    assert_eq!(app.create(&other_device).await.0, 201);
    let other_server = session_body("+33612345691", "203.0.113.9", 60);
    assert_eq!(app.create(&other_server).await.0, 201);
}

#[tokio::test]
async fn the_same_device_or_server_named_differently_still_conflicts() {
    let app = TestApp::spawn().await;
    let with_device = |device: Value, server: &str| {
        json!({
            "device": device,
            "applicationServer": if server.contains(':') {
                json!({"ipv6Address": server})
            } else {
                json!({"ipv4Address": server})
            },
            "qosProfile": "QOS_E",
            "duration": 60,
        })
    };
    let create = |device: Value, server: &'static str| {
        let body = with_device(device, server);
        let app = &app;
        async move { app.create(&body).await }
    };
    let behind_nat = json!({"publicAddress": "203.0.113.50", "privateAddress": "10.0.0.1"});
    assert_eq!(
        create(json!({"ipv4Address": behind_nat}), "198.51.100.60")
            .await
            .0,
        201
    );
    // The same device with its phone number as well (the session would keep the number).
    let (code, body) = create(
        json!({"phoneNumber": "+33612340010", "ipv4Address": behind_nat}),
        "198.51.100.60",
    )
    .await;
    assert_eq!(code, 409, "{body}");
    // With its public port as well: still the same private address behind that NAT.
    let with_port =
        json!({"publicAddress": "203.0.113.50", "privateAddress": "10.0.0.1", "publicPort": 4000});
    assert_eq!(
        create(json!({"ipv4Address": with_port}), "198.51.100.60")
            .await
            .0,
        409
    );
    // Another device behind the same NAT is another device.
    let neighbour = json!({"publicAddress": "203.0.113.50", "privateAddress": "10.0.0.2"});
    assert_eq!(
        create(json!({"ipv4Address": neighbour}), "198.51.100.60")
            .await
            .0,
        201
    );

    // Without NAT, the IPv4 address and its IPv4-mapped IPv6 form are one device.
    let no_nat = json!({"publicAddress": "203.0.113.51", "privateAddress": "203.0.113.51"});
    assert_eq!(
        create(json!({"ipv4Address": no_nat}), "198.51.100.60")
            .await
            .0,
        201
    );
    let (code, body) = create(
        json!({"ipv6Address": "::ffff:203.0.113.51"}),
        "198.51.100.60",
    )
    .await;
    assert_eq!(code, 409, "{body}");

    // An IPv4-mapped application server is its IPv4 address.
    assert_eq!(
        create(json!({"phoneNumber": "+33612340011"}), "198.51.100.61")
            .await
            .0,
        201
    );
    let (code, body) = create(
        json!({"phoneNumber": "+33612340011"}),
        "::ffff:198.51.100.61",
    )
    .await;
    assert_eq!(code, 409, "{body}");
}

#[tokio::test]
async fn racing_identical_creates_yield_exactly_one_session() {
    let app = TestApp::spawn().await;
    for round in 0..5 {
        let body = session_body(&format!("+3361299{round:04}"), "198.51.100.20", 60);
        let attempts = (0..8).map(|_| app.create(&body));
        let results = futures::future::join_all(attempts).await;
        let created = results.iter().filter(|(c, _)| *c == 201).count();
        let conflicts = results.iter().filter(|(c, _)| *c == 409).count();
        assert_eq!((created, conflicts), (1, 7), "round {round}: {results:?}");
    }
}

#[tokio::test]
async fn retrieve_sessions_lists_the_device_sessions_only() {
    let app = TestApp::spawn().await;
    app.create(&session_body("+33612345693", "198.51.100.30", 60))
        .await;
    app.create(&session_body("+33612345693", "198.51.100.31", 60))
        .await;
    app.create(&session_body("+33612345694", "198.51.100.30", 60))
        .await;
    let (code, list) = app
        .post(
            "/quality-on-demand/v1/retrieve-sessions",
            &json!({"device": {"phoneNumber": "+33612345693"}}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (_, none) = app
        .post(
            "/quality-on-demand/v1/retrieve-sessions",
            &json!({"device": {"phoneNumber": "+33600000000"}}),
        )
        .await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn metrics_count_transitions_and_jobs() {
    let app = TestApp::spawn().await;
    let (_, created) = app
        .create(&session_body("+33612345695", "198.51.100.40", 1))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(5), |_, b| {
        status(b) == "UNAVAILABLE"
    })
    .await;
    let text = app.metrics().await;
    for line in [
        r#"qod_session_transitions_total{from="REQUESTED",reason="NETWORK_GRANTED",to="AVAILABLE"} 1"#,
        r#"qod_session_transitions_total{from="AVAILABLE",reason="DURATION_EXPIRED",to="UNAVAILABLE"} 1"#,
        r#"qod_jobs_total{outcome="succeeded",queue="provision_session"} 1"#,
        r#"qod_jobs_total{outcome="enqueued",queue="release_grant"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains(&id), "metrics must not carry session ids");
}

#[tokio::test]
async fn graceful_shutdown_keeps_every_session_for_the_next_start() {
    let app = TestApp::spawn().await;
    let (_, created) = app
        .create(&session_body("+33612345696", "198.51.100.50", 60))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let dir = app.stop().await;
    let settings = common::settings_in(dir.path());
    let app = TestApp::spawn_in(dir, settings).await;
    app.wait_for_session(&id, Duration::from_secs(3), |_, b| status(b) == "AVAILABLE")
        .await;
}
