//! The v1 API's contract: validation, status codes and the `{status, code, message}` error
//! body on every failure path, x-correlator handling, the QoS profiles API, the served specs.

mod common;

use common::{TestApp, session_body};
use serde_json::{Value, json};

const SESSIONS: &str = "/quality-on-demand/v1/sessions";

fn assert_error(code: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(code, want_status, "{body}");
    assert_eq!(body["status"], want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn stored_sessions(app: &TestApp) -> i64 {
    app.scalar("SELECT COUNT(*) FROM sessions").await
}

#[tokio::test]
async fn invalid_create_requests_get_the_precise_error_and_store_nothing() {
    let app = TestApp::spawn().await;
    let base = session_body("+33612345678", "198.51.100.10", 60);
    let with = |path: &[&str], value: Value| {
        let mut b = base.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = value;
        b
    };
    let without = |field: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(field);
        b
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("no duration", without("duration"), 400, "INVALID_ARGUMENT"),
        (
            "no qosProfile",
            without("qosProfile"),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "no applicationServer",
            without("applicationServer"),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "zero duration",
            with(&["duration"], json!(0)),
            400,
            "OUT_OF_RANGE",
        ),
        (
            "string duration",
            with(&["duration"], json!("60")),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "duration above profile",
            with(&["duration"], json!(86_401)),
            400,
            "QUALITY_ON_DEMAND.DURATION_OUT_OF_RANGE",
        ),
        (
            "bad phone",
            with(&["device", "phoneNumber"], json!("0612345678")),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "empty device",
            with(&["device"], json!({})),
            400,
            "INVALID_ARGUMENT",
        ),
        ("no device", without("device"), 422, "MISSING_IDENTIFIER"),
        (
            "nai only",
            with(
                &["device"],
                json!({"networkAccessIdentifier": "a@example.com"}),
            ),
            422,
            "UNSUPPORTED_IDENTIFIER",
        ),
        (
            "ipv4 without port or private",
            with(
                &["device"],
                json!({"ipv4Address": {"publicAddress": "203.0.113.1"}}),
            ),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "bad server mask",
            with(&["applicationServer", "ipv4Address"], json!("10.0.0.0/40")),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "empty server",
            with(&["applicationServer"], json!({})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "port too big",
            with(&["devicePorts"], json!({"ports": [70000]})),
            400,
            "OUT_OF_RANGE",
        ),
        (
            "reversed range",
            with(
                &["applicationServerPorts"],
                json!({"ranges": [{"from": 9, "to": 1}]}),
            ),
            400,
            "OUT_OF_RANGE",
        ),
        (
            "empty ports spec",
            with(&["devicePorts"], json!({})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "bad profile name",
            with(&["qosProfile"], json!("a b")),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown profile",
            with(&["qosProfile"], json!("QOS_UNKNOWN")),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "http sink",
            with(&["sink"], json!("http://example.com/cb")),
            400,
            "INVALID_SINK",
        ),
        (
            "plain credential",
            with(
                &["sinkCredential"],
                json!({"credentialType": "PLAIN", "identifier": "a", "secret": "b"}),
            ),
            400,
            "INVALID_CREDENTIAL",
        ),
        (
            "non-bearer token",
            with(
                &["sinkCredential"],
                json!({"credentialType": "ACCESSTOKEN", "accessToken": "t", "accessTokenExpiresUtc": "2030-01-01T00:00:00Z", "accessTokenType": "mac"}),
            ),
            400,
            "INVALID_TOKEN",
        ),
    ];
    for (name, body, want_status, want_code) in cases {
        let (code, resp) = app.create(&body).await;
        assert_eq!(code, want_status, "{name}: {resp}");
        assert_error(code, &resp, want_status, want_code);
    }
    assert_eq!(stored_sessions(&app).await, 0);
}

#[tokio::test]
async fn an_inactive_profile_is_not_applicable() {
    let app = TestApp::spawn_with(|s| {
        let mut profiles = s.catalogue.all().to_vec();
        profiles[0].status = qod::domain::ProfileStatus::Deprecated;
        s.catalogue = qod::domain::Catalogue::new(profiles).unwrap();
    })
    .await;
    let (code, body) = app
        .create(&session_body("+33612345678", "198.51.100.10", 60))
        .await;
    assert_error(
        code,
        &body,
        422,
        "QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE",
    );
}

#[tokio::test]
async fn malformed_bodies_media_types_paths_and_methods_answer_in_the_error_format() {
    let app = TestApp::spawn().await;
    let url = app.url(SESSIONS);
    let send = |req: reqwest::RequestBuilder| async move {
        common::split(req.send().await.unwrap()).await
    };

    // JSON nested far deeper than any QoD body: refused, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let (code, body) = send(
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .body(deep),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["code"], "INVALID_ARGUMENT");

    let long = format!("{url}/{}", "a".repeat(3000));
    let (code, body) = send(app.client.get(&long)).await;
    assert_eq!(code, 414, "{body}");
    assert_eq!(body["code"], "URI_TOO_LONG");

    let (code, body) = send(
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"duration\":"),
    )
    .await;
    assert_error(code, &body, 400, "INVALID_ARGUMENT");
    let (code, body) = send(
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .body(""),
    )
    .await;
    assert_error(code, &body, 400, "INVALID_ARGUMENT");
    let (code, body) = send(
        app.client
            .post(&url)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_error(code, &body, 415, "UNSUPPORTED_MEDIA_TYPE");
    let (code, body) = send(
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .body(vec![b' '; 100_000]),
    )
    .await;
    assert_error(code, &body, 413, "PAYLOAD_TOO_LARGE");
    let (code, body) = send(app.client.get(app.url("/quality-on-demand/v1/nowhere"))).await;
    assert_error(code, &body, 404, "NOT_FOUND");
    let (code, body) = send(app.client.put(&url)).await;
    assert_error(code, &body, 405, "METHOD_NOT_ALLOWED");
    let (code, body) = send(
        app.client
            .get(app.url("/quality-on-demand/v1/sessions/not-a-uuid")),
    )
    .await;
    assert_error(code, &body, 400, "INVALID_ARGUMENT");
    let (code, body) = send(
        app.client
            .get(app.url("/quality-on-demand/v1/sessions/6f1c2a52-3a2b-4c1d-9e8f-0a1b2c3d4e5f")),
    )
    .await;
    assert_error(code, &body, 404, "NOT_FOUND");
    let (code, body) = send(
        app.client
            .delete(app.url("/quality-on-demand/v1/sessions/6f1c2a52-3a2b-4c1d-9e8f-0a1b2c3d4e5f")),
    )
    .await;
    assert_error(code, &body, 404, "NOT_FOUND");
    assert_eq!(stored_sessions(&app).await, 0);
}

#[tokio::test]
async fn x_correlator_is_echoed_when_valid_and_refused_when_not() {
    let app = TestApp::spawn().await;
    let body = session_body("+33612345678", "198.51.100.10", 60);
    let r = app
        .client
        .post(app.url(SESSIONS))
        .header("x-correlator", "abc-123:{x}")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-correlator"], "abc-123:{x}");
    // Echoed on errors too.
    let r = app
        .client
        .get(app.url("/nowhere"))
        .header("x-correlator", "c-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-correlator"], "c-2");

    let r = app
        .client
        .post(app.url(SESSIONS))
        .header("x-correlator", "bad value!")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-correlator").is_none());
    let (code, resp) = common::split(r).await;
    assert_error(code, &resp, 400, "INVALID_ARGUMENT");
    assert_eq!(
        stored_sessions(&app).await,
        1,
        "the refused request must not create a session"
    );
}

#[tokio::test]
async fn extend_validates_its_input() {
    let app = TestApp::spawn().await;
    let (_, created) = app
        .create(&session_body("+33612345678", "198.51.100.10", 60))
        .await;
    let id = created["sessionId"].as_str().unwrap();
    let path = format!("{SESSIONS}/{id}/extend");
    let (code, body) = app
        .post(&path, &json!({"requestedAdditionalDuration": 0}))
        .await;
    assert_error(code, &body, 400, "OUT_OF_RANGE");
    let (code, body) = app.post(&path, &json!({})).await;
    assert_error(code, &body, 400, "INVALID_ARGUMENT");
    let missing = format!("{SESSIONS}/6f1c2a52-3a2b-4c1d-9e8f-0a1b2c3d4e5f/extend");
    let (code, body) = app
        .post(&missing, &json!({"requestedAdditionalDuration": 10}))
        .await;
    assert_error(code, &body, 404, "NOT_FOUND");
}

#[tokio::test]
async fn session_info_echoes_the_request_and_never_the_sink_credential() {
    let app = TestApp::spawn().await;
    let mut body = session_body("+33612345678", "198.51.100.0/24", 60);
    body["device"]["ipv6Address"] = json!("2001:db8::1");
    body["devicePorts"] = json!({"ports": [5060]});
    body["applicationServerPorts"] = json!({"ranges": [{"from": 10, "to": 20}], "ports": [80]});
    body["sink"] = json!("https://consumer.example.com/notify");
    body["sinkCredential"] = json!({
        "credentialType": "ACCESSTOKEN", "accessToken": "s3cr3t-token-value",
        "accessTokenExpiresUtc": "2030-01-01T00:00:00Z", "accessTokenType": "bearer"
    });
    let (code, created) = app.create(&body).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["device"],
        json!({"phoneNumber": "+33612345678"}),
        "one identifier is selected"
    );
    assert_eq!(
        created["applicationServer"],
        json!({"ipv4Address": "198.51.100.0/24"})
    );
    assert_eq!(created["devicePorts"], json!({"ports": [5060]}));
    assert_eq!(
        created["applicationServerPorts"],
        body["applicationServerPorts"]
    );
    assert_eq!(created["sink"], body["sink"]);
    assert_eq!(created["qosProfile"], "QOS_E");
    assert_eq!(created["duration"], 60);
    let (_, read) = app.session(created["sessionId"].as_str().unwrap()).await;
    for v in [&created, &read] {
        assert!(v.get("sinkCredential").is_none());
        assert!(!v.to_string().contains("s3cr3t-token-value"));
    }
}

#[tokio::test]
async fn qos_profiles_can_be_listed_filtered_and_read() {
    let app = TestApp::spawn().await;
    let (code, all) = app
        .post("/qos-profiles/v1/retrieve-qos-profiles", &json!({}))
        .await;
    assert_eq!(code, 200);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["QOS_E", "QOS_S", "QOS_M", "QOS_L"]);
    for p in all.as_array().unwrap() {
        assert_eq!(p["status"], "ACTIVE");
        assert!(p["maxDuration"]["value"].as_u64().unwrap() > 0);
        assert!(p["minDuration"]["unit"].is_string());
    }
    let (_, one) = app
        .post(
            "/qos-profiles/v1/retrieve-qos-profiles",
            &json!({"name": "QOS_M", "status": "ACTIVE"}),
        )
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (_, none) = app
        .post(
            "/qos-profiles/v1/retrieve-qos-profiles",
            &json!({"status": "INACTIVE"}),
        )
        .await;
    assert_eq!(none, json!([]));
    let (code, body) = app
        .post(
            "/qos-profiles/v1/retrieve-qos-profiles",
            &json!({"status": "SLEEPY"}),
        )
        .await;
    assert_error(code, &body, 400, "INVALID_ARGUMENT");
    let (code, body) = app
        .post(
            "/qos-profiles/v1/retrieve-qos-profiles",
            &json!({"device": {}}),
        )
        .await;
    assert_error(code, &body, 400, "INVALID_ARGUMENT");

    let (code, e) = app.get("/qos-profiles/v1/qos-profiles/QOS_E").await;
    assert_eq!(code, 200);
    assert_eq!(e["name"], "QOS_E");
    assert!(e["packetDelayBudget"]["value"].is_number());
    let (code, body) = app.get("/qos-profiles/v1/qos-profiles/QOS_NOPE").await;
    assert_error(code, &body, 404, "NOT_FOUND");
    let (code, body) = app.get("/qos-profiles/v1/qos-profiles/x!").await;
    assert_error(code, &body, 400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn the_implemented_openapi_documents_are_served() {
    let app = TestApp::spawn().await;
    for (path, title) in [
        (
            "/openapi/quality-on-demand/v1.yaml",
            "title: Quality-On-Demand",
        ),
        ("/openapi/qos-profiles/v1.yaml", "version: 1.1.0"),
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/yaml");
        assert!(r.text().await.unwrap().contains(title));
    }
    let r = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn hostile_bodies_are_refused_cleanly_and_the_server_stays_up() {
    let app = TestApp::spawn().await;
    let url = app.url(SESSIONS);
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let hostile: Vec<(&str, String)> = vec![
        ("deep nesting", deep),
        ("huge number", r#"{"duration": 1e400}"#.to_owned()),
        (
            "wide number",
            format!(r#"{{"duration": {}}}"#, "9".repeat(5000)),
        ),
        ("not an object", "[1, 2, 3]".to_owned()),
        (
            "invalid utf-8",
            String::from_utf8_lossy(&[0x7b, 0xff, 0xfe, 0x7d]).into_owned(),
        ),
    ];
    for (name, body) in hostile {
        let r = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (code, resp) = common::split(r).await;
        assert!(code == 400 || code == 413, "{name}: {code} {resp}");
        assert!(resp["code"].is_string(), "{name}: {resp}");
    }
    let mut long = session_body("+33612345678", "198.51.100.10", 60);
    long["qosProfile"] = json!("Q".repeat(300));
    assert_error(
        app.create(&long).await.0,
        &app.create(&long).await.1,
        400,
        "INVALID_ARGUMENT",
    );
    let mut big = session_body("+33612345678", "198.51.100.10", 60);
    big["duration"] = json!(1_u64 << 40);
    let (code, body) = app.create(&big).await;
    assert_error(code, &body, 400, "OUT_OF_RANGE");
    assert_eq!(stored_sessions(&app).await, 0);
    assert_eq!(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
}

#[tokio::test]
async fn edge_cases_answer_alike_in_both_facades() {
    let app = TestApp::spawn().await;
    let send = |req: reqwest::RequestBuilder| async move {
        common::split(req.send().await.unwrap()).await
    };
    let id = "6f1c2a52-3a2b-4c1d-9e8f-0a1b2c3d4e5f";
    // Session ids only in their canonical form.
    for odd in [
        id.to_uppercase(),
        format!("{{{id}}}"),
        id.replace('-', ""),
        format!("urn:uuid:{id}"),
    ] {
        let (code, body) = send(app.client.get(app.url(&format!("{SESSIONS}/{odd}")))).await;
        assert_error(code, &body, 400, "INVALID_ARGUMENT");
        let (code, body) = send(app.client.get(app.url(&format!("/qod/v0/sessions/{odd}")))).await;
        assert_eq!(
            (code, body["code"].as_i64()),
            (400, Some(20)),
            "{odd}: {body}"
        );
    }
    // Deep nesting inside a field the parser does not know is refused too.
    let deep = format!(
        "{{\"unknown\": {}{}}}",
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let (code, body) = send(
        app.client
            .post(app.url(SESSIONS))
            .header("content-type", "application/json")
            .body(deep),
    )
    .await;
    assert_error(code, &body, 400, "INVALID_ARGUMENT");
    // v0 paths answer in v0's format, also for a bad x-correlator and the bare prefix.
    let (code, body) = send(
        app.client
            .get(app.url("/qod/v0/sessions/6f1c2a52-3a2b-4c1d-9e8f-0a1b2c3d4e5f"))
            .header("x-correlator", "bad value"),
    )
    .await;
    assert_eq!((code, body["code"].as_i64()), (400, Some(26)), "{body}");
    let (code, body) = send(app.client.get(app.url("/qod/v0/"))).await;
    assert_eq!((code, body["code"].as_i64()), (404, Some(60)), "{body}");
    // Authentication comes before the method check in both.
    let anonymous = reqwest::Client::new();
    let (code, _) = send(anonymous.put(app.url(SESSIONS))).await;
    assert_eq!(code, 401, "v1 checks the token before the method");
    let (code, _) = send(anonymous.put(app.url("/qod/v0/sessions"))).await;
    assert_eq!(code, 401);
    assert_eq!(stored_sessions(&app).await, 0);
}
