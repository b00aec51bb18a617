//! The v0 facade (Orange QoD 0.10.1) against its contract: every v0 body is validated against
//! the 0.10.1 OpenAPI file (errors against the seed's model), the seed's error codes case by
//! case, v0 semantics (extension cap, retention), notifications, and v0/v1 interplay.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::contract::{V0Contract, assert_seed_error};
use common::sink::{Behaviour, TestSink};
use common::{TestApp, poll_until, split, status};
use serde_json::{Value, json};

const V0: &str = "/qod/v0";

fn v0_body(phone: &str, duration: Option<i64>) -> Value {
    let mut body = json!({
        "device": {"phoneNumber": phone},
        "applicationServer": {"ipv4Address": "198.51.100.20"},
        "qosProfile": "QOS_E",
    });
    if let Some(d) = duration {
        body["duration"] = json!(d);
    }
    body
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
    })
    .await
}

/// Sends `body` as raw bytes with the given content type.
async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    split(r).await
}

async fn wait_v0(app: &TestApp, id: &str, want: &str) -> Value {
    let found = poll_until(Duration::from_secs(5), || async {
        let (code, body) = app.get(&format!("{V0}/sessions/{id}")).await;
        (code == 200 && body["qosStatus"] == want).then_some(body)
    })
    .await;
    found.unwrap_or_else(|| panic!("session {id} never became {want}"))
}

#[tokio::test]
async fn a_v0_client_creates_reads_extends_and_deletes_a_session() {
    let app = spawn().await;
    let contract = V0Contract::load();

    let (code, created) = app
        .post(&format!("{V0}/sessions"), &v0_body("+33630000001", None))
        .await;
    assert_eq!(code, 201, "{created}");
    contract.assert_schema("SessionInfo", &created);
    assert_eq!(created["duration"], 86_400, "the default duration");
    assert_eq!(created["qosStatus"], "REQUESTED");
    let id = created["sessionId"].as_str().unwrap().to_owned();

    let available = wait_v0(&app, &id, "AVAILABLE").await;
    contract.assert_schema("SessionInfo", &available);
    let (started, expires) = (
        available["startedAt"].as_i64().expect("Unix seconds"),
        available["expiresAt"].as_i64().expect("Unix seconds"),
    );
    assert_eq!(expires - started, 86_400);
    assert!(
        (started - Utc::now().timestamp()).abs() <= 5,
        "{started} is Unix seconds"
    );

    // The remaining time is capped at 86,400 s: extending by 600 s adds only what the
    // few seconds already elapsed allow.
    let (code, extended) = app
        .post(
            &format!("{V0}/sessions/{id}/extend"),
            &json!({"requestedAdditionalDuration": 600}),
        )
        .await;
    assert_eq!(code, 200, "{extended}");
    contract.assert_schema("SessionInfo", &extended);
    let remaining = extended["expiresAt"].as_i64().unwrap() - Utc::now().timestamp();
    assert!(
        (86_395..=86_400).contains(&remaining),
        "remaining {remaining} s"
    );
    assert!(extended["duration"].as_i64().unwrap() < 86_400 + 600);

    let (code, _) = app.delete(&format!("{V0}/sessions/{id}")).await;
    assert_eq!(code, 204);
    let (code, gone) = app.get(&format!("{V0}/sessions/{id}")).await;
    assert_eq!(code, 404);
    assert_seed_error(&gone, 60);
}

#[tokio::test]
async fn an_extension_adds_to_a_short_session_and_inactive_sessions_cannot_be_extended() {
    let app = spawn().await;
    let (_, created) = app
        .post(
            &format!("{V0}/sessions"),
            &v0_body("+33630000002", Some(60)),
        )
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    wait_v0(&app, &id, "AVAILABLE").await;
    let (code, extended) = app
        .post(
            &format!("{V0}/sessions/{id}/extend"),
            &json!({"requestedAdditionalDuration": 120}),
        )
        .await;
    assert_eq!(code, 200, "{extended}");
    assert_eq!(extended["duration"], 180);

    let (_, other) = app
        .post(&format!("{V0}/sessions"), &v0_body("+33630000003", Some(1)))
        .await;
    let other = other["sessionId"].as_str().unwrap().to_owned();
    // A v0 session that expired is purged at once: only a v1 read could have seen it, briefly.
    let gone = poll_until(Duration::from_secs(5), || async {
        (app.get(&format!("{V0}/sessions/{other}")).await.0 == 404).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "an expired v0 session is deleted automatically"
    );
    let (code, body) = app
        .post(
            &format!("{V0}/sessions/{other}/extend"),
            &json!({"requestedAdditionalDuration": 10}),
        )
        .await;
    assert_eq!(code, 404);
    assert_seed_error(&body, 60);

    // REQUESTED (the network answers slowly): inactive, so 400.
    let slow = TestApp::spawn_with(|s| s.sim.latency = Duration::from_secs(3)).await;
    let (_, created) = slow
        .post(
            &format!("{V0}/sessions"),
            &v0_body("+33630000004", Some(60)),
        )
        .await;
    let id = created["sessionId"].as_str().unwrap();
    let (code, body) = slow
        .post(
            &format!("{V0}/sessions/{id}/extend"),
            &json!({"requestedAdditionalDuration": 10}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_seed_error(&body, 24);
    assert_eq!(body["message"], "The target session is inactive");
}

#[tokio::test]
async fn a_network_terminated_v0_session_stays_readable_for_at_least_360_seconds() {
    let app = TestApp::spawn_with(|s| {
        s.sim.refuse_rate = 1.0;
        s.retention = Duration::from_secs(1);
    })
    .await;
    let (_, created) = app
        .post(
            &format!("{V0}/sessions"),
            &v0_body("+33630000005", Some(60)),
        )
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let ended = wait_v0(&app, &id, "UNAVAILABLE").await;
    V0Contract::load().assert_schema("SessionInfo", &ended);
    let purge_due = app
        .db
        .int(
            "SELECT due_at_ms FROM job_queue WHERE queue = 'purge_session' AND payload LIKE ?",
            &[&format!("%{id}%")],
        )
        .await;
    let hold = purge_due - Utc::now().timestamp_millis();
    assert!(hold >= 355_000, "purged after {hold} ms only");
}

#[tokio::test]
async fn v0_notifications_are_v0_cloud_events_with_the_webhook_token() {
    let app = spawn().await;
    let sink = TestSink::start().await;
    let mut body = v0_body("+33630000006", Some(1));
    body["webhook"] = json!({
        "notificationUrl": sink.url("v0", Behaviour::Accept),
        "notificationAuthToken": "c8974e592c2fa383d4a3960714",
    });
    let (code, created) = app.post(&format!("{V0}/sessions"), &body).await;
    assert_eq!(code, 201, "{created}");
    V0Contract::load().assert_schema("SessionInfo", &created);
    assert!(
        created["webhook"].get("notificationAuthToken").is_none(),
        "never echoed"
    );
    let id = created["sessionId"].as_str().unwrap();
    let got = sink.wait_delivered("v0", 2, Duration::from_secs(5)).await;
    let contract = V0Contract::load();
    for (event, want) in got.iter().zip(["AVAILABLE", "UNAVAILABLE"]) {
        contract.assert_schema("EventQosStatusChanged", &event.body);
        assert_eq!(
            event.body["type"],
            "org.camaraproject.qod.v0.qos-status-changed"
        );
        assert_eq!(event.body["data"]["qosStatus"], want);
        assert!(
            event.body["source"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/qod/v0/sessions/{id}")),
            "{}",
            event.body["source"]
        );
        assert_eq!(
            event.headers["authorization"],
            "Bearer c8974e592c2fa383d4a3960714"
        );
    }
    assert_eq!(got[1].body["data"]["statusInfo"], "DURATION_EXPIRED");
}

#[tokio::test]
async fn sessions_of_either_version_are_visible_through_the_other_in_its_own_shape() {
    let app = spawn().await;
    let contract = V0Contract::load();
    let (_, v0) = app
        .post(
            &format!("{V0}/sessions"),
            &v0_body("+33630000007", Some(600)),
        )
        .await;
    let v0_id = v0["sessionId"].as_str().unwrap().to_owned();
    wait_v0(&app, &v0_id, "AVAILABLE").await;
    let (code, as_v1) = app.session(&v0_id).await;
    assert_eq!(code, 200);
    assert!(
        as_v1["startedAt"].is_string(),
        "v1 renders date-times: {as_v1}"
    );

    let (code, v1) = app
        .create(&common::session_body("+33630000008", "198.51.100.21", 600))
        .await;
    assert_eq!(code, 201);
    let v1_id = v1["sessionId"].as_str().unwrap().to_owned();
    let as_v0 = wait_v0(&app, &v1_id, "AVAILABLE").await;
    contract.assert_schema("SessionInfo", &as_v0);
    assert!(
        as_v0["startedAt"].is_i64(),
        "v0 renders Unix seconds: {as_v0}"
    );

    // Same device and flow through the other version: the overlap check is shared.
    let (code, conflict) = app
        .post(
            &format!("{V0}/sessions"),
            &json!({
                "device": {"phoneNumber": "+33630000008"},
                "applicationServer": {"ipv4Address": "198.51.100.21"},
                "qosProfile": "QOS_E",
            }),
        )
        .await;
    assert_eq!(code, 409, "{conflict}");
    assert_seed_error(&conflict, 69);
}

#[tokio::test]
async fn qos_profiles_are_listed_filtered_and_read_in_the_v0_shape() {
    let app = spawn().await;
    let contract = V0Contract::load();
    let array_of_profiles =
        json!({"type": "array", "items": {"$ref": "#/components/schemas/QosProfile"}});
    let (code, all) = app.get(&format!("{V0}/qos-profiles")).await;
    assert_eq!(code, 200);
    contract.assert_ref(&array_of_profiles, &all);
    assert_eq!(all.as_array().unwrap().len(), 4);
    let (code, one) = app
        .get(&format!("{V0}/qos-profiles?name=QOS_L&status=ACTIVE"))
        .await;
    assert_eq!(code, 200);
    contract.assert_ref(&array_of_profiles, &one);
    assert_eq!(one[0]["name"], "QOS_L");
    let (code, by_name) = app.get(&format!("{V0}/qos-profiles/QOS_M")).await;
    assert_eq!(code, 200);
    contract.assert_schema("QosProfile", &by_name);

    let (code, none) = app.get(&format!("{V0}/qos-profiles?status=INACTIVE")).await;
    assert_eq!(code, 404);
    assert_seed_error(&none, 60);
    let (code, bad) = app.get(&format!("{V0}/qos-profiles?status=SLEEPING")).await;
    assert_eq!(code, 400);
    assert_seed_error(&bad, 28);
    let (code, unknown) = app.get(&format!("{V0}/qos-profiles/QOS_Z")).await;
    assert_eq!(code, 404);
    assert_seed_error(&unknown, 60);
    let (code, malformed) = app.get(&format!("{V0}/qos-profiles/a%20b")).await;
    assert_eq!(code, 400);
    assert_seed_error(&malformed, 20);
}

#[tokio::test]
async fn every_v0_error_carries_the_seeds_code() {
    let app = spawn().await;
    let sessions = format!("{V0}/sessions");
    let mut cases: Vec<(&str, u16, Value)> = Vec::new();

    let (c, b) = post_raw(&app, &sessions, "application/json", Vec::new()).await;
    cases.push(("empty body", c, b));
    let (c, b) = post_raw(
        &app,
        &sessions,
        "application/json",
        b"{\"device\":".to_vec(),
    )
    .await;
    cases.push(("malformed JSON", c, b));
    let (c, b) = post_raw(&app, &sessions, "text/plain", b"{}".to_vec()).await;
    cases.push(("text body", c, b));
    let (c, b) = post_raw(&app, &sessions, "application/json", vec![b' '; 70_000]).await;
    cases.push(("huge body", c, b));
    let mut no_profile = v0_body("+33630000010", None);
    no_profile.as_object_mut().unwrap().remove("qosProfile");
    let (c, b) = app.post(&sessions, &no_profile).await;
    cases.push(("missing qosProfile", c, b));
    let mut no_device = v0_body("+33630000010", None);
    no_device.as_object_mut().unwrap().remove("device");
    let (c, b) = app.post(&sessions, &no_device).await;
    cases.push(("missing device", c, b));
    let (c, b) = app.post(&sessions, &v0_body("+33630000010", Some(0))).await;
    cases.push(("duration 0", c, b));
    let (c, b) = app
        .post(&sessions, &v0_body("+33630000010", Some(86_401)))
        .await;
    cases.push(("duration 86401", c, b));
    let mut text_duration = v0_body("+33630000010", None);
    text_duration["duration"] = json!("long");
    let (c, b) = app.post(&sessions, &text_duration).await;
    cases.push(("duration as text", c, b));
    let mut short_token = v0_body("+33630000010", None);
    short_token["webhook"] =
        json!({"notificationUrl": "https://example.com/cb", "notificationAuthToken": "short"});
    let (c, b) = app.post(&sessions, &short_token).await;
    cases.push(("short token", c, b));
    let mut bad_phone = v0_body("not-a-number", None);
    bad_phone["device"]["phoneNumber"] = json!("12");
    let (c, b) = app.post(&sessions, &bad_phone).await;
    cases.push(("bad phone number", c, b));
    let (c, b) = app.get(&format!("{sessions}/not-a-uuid")).await;
    cases.push(("bad session id", c, b));
    let (c, b) = app
        .get(&format!("{sessions}/{}", uuid::Uuid::new_v4()))
        .await;
    cases.push(("unknown session", c, b));
    let (c, b) = app.get(&format!("{V0}/nothing-here")).await;
    cases.push(("unknown path", c, b));
    let (c, b) = app
        .post(
            &format!("{sessions}/{}/extend", uuid::Uuid::new_v4()),
            &json!({"requestedAdditionalDuration": 86_400}),
        )
        .await;
    cases.push(("extension too long", c, b));
    let (c, b) = app
        .post(
            &format!("{sessions}/{}/extend", uuid::Uuid::new_v4()),
            &json!({}),
        )
        .await;
    cases.push(("extension missing", c, b));
    let r = app
        .client
        .get(app.url(&format!("{sessions}/{}", uuid::Uuid::new_v4())))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let (c, b) = split(r).await;
    cases.push(("accepts no JSON", c, b));

    let (c, b) = app.get(&format!("{sessions}/{}", "a".repeat(3000))).await;
    cases.push(("URI too long", c, b));

    let expected = [
        ("empty body", 400, 21),
        ("malformed JSON", 400, 22),
        ("text body", 415, 68),
        ("huge body", 413, 66),
        ("missing qosProfile", 400, 23),
        ("missing device", 400, 23),
        ("duration 0", 400, 24),
        ("duration 86401", 400, 24),
        ("duration as text", 400, 24),
        ("short token", 400, 24),
        ("bad phone number", 400, 24),
        ("bad session id", 400, 20),
        ("unknown session", 404, 60),
        ("unknown path", 404, 60),
        ("extension too long", 400, 24),
        ("extension missing", 400, 23),
        ("accepts no JSON", 406, 62),
        ("URI too long", 414, 67),
    ];
    for ((name, code, body), (want_name, want_status, want_code)) in cases.iter().zip(expected) {
        assert_eq!(*name, want_name);
        assert_eq!(*code, want_status, "{name}: {body}");
        assert_seed_error(body, want_code);
    }

    // 405 names the allowed methods.
    let r = app.client.put(app.url(&sessions)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let (_, body) = split(r).await;
    assert_seed_error(&body, 61);
    let r = app
        .client
        .patch(app.url(&format!("{sessions}/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, DELETE");

    // Nothing was created by any of it.
    assert_eq!(app.scalar("SELECT COUNT(*) FROM sessions").await, 0);
}

#[tokio::test]
async fn the_v0_api_is_also_served_under_the_configured_public_prefix() {
    let app = TestApp::spawn_with(|s| {
        s.v0_prefix = Some("/camara/quality-on-demand/orange-lab".into());
    })
    .await;
    let base = "/camara/quality-on-demand/orange-lab/qod/v0";
    let (code, created) = app
        .post(
            &format!("{base}/sessions"),
            &v0_body("+33630000011", Some(60)),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap();
    let (code, _) = app.get(&format!("{V0}/sessions/{id}")).await;
    assert_eq!(code, 200, "the same session under the plain path");
    let (code, missing) = app.get(&format!("{base}/unknown")).await;
    assert_eq!(code, 404);
    assert_seed_error(&missing, 60);
    let _ = status(&created);
}

#[test]
fn the_contract_check_rejects_bodies_that_break_the_schema() {
    let contract = V0Contract::load();
    let good = json!({
        "sessionId": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "device": {"phoneNumber": "+33630000099"},
        "applicationServer": {"ipv4Address": "198.51.100.20"},
        "qosProfile": "QOS_E",
        "duration": 60, "startedAt": 1639479600, "expiresAt": 1639479660,
        "qosStatus": "AVAILABLE",
    });
    contract.assert_schema("SessionInfo", &good);
    let mut v1_style = good.clone();
    v1_style["startedAt"] = json!("2021-12-14T11:00:00Z");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("expiresAt");
    let mut bad_status = good.clone();
    bad_status["qosStatus"] = json!("ACTIVE");
    for body in [v1_style, missing, bad_status] {
        let failed = std::panic::catch_unwind(|| contract.assert_schema("SessionInfo", &body));
        assert!(failed.is_err(), "accepted {body}");
    }
}

#[tokio::test]
async fn v0_extend_keeps_the_profiles_maximum_duration_like_v1() {
    let app = TestApp::spawn_with(|s| {
        let mut profiles = s.catalogue.all().to_vec();
        let e = profiles.iter_mut().find(|p| p.name == "QOS_E").unwrap();
        e.max_duration = qod::domain::profile::TimeSpan::seconds(120);
        s.catalogue = qod::domain::Catalogue::new(profiles).unwrap();
    })
    .await;
    // Created through v1 for 60 s, extended through v0 by nearly a day.
    let (code, created) = app
        .create(&common::session_body("+33630000077", "198.51.100.20", 60))
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap().to_owned();
    wait_v0(&app, &id, "AVAILABLE").await;
    let (code, extended) = app
        .post(
            &format!("{V0}/sessions/{id}/extend"),
            &json!({"requestedAdditionalDuration": 86_399}),
        )
        .await;
    assert_eq!(code, 200, "{extended}");
    assert_eq!(
        extended["duration"], 120,
        "capped at QOS_E's maxDuration: {extended}"
    );
}
