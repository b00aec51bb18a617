//! Which devices the service serves, from the config file alone: unknown devices (404),
//! devices the service is not offered to (422), profiles restricted to some devices, through
//! v1, v0 and three-legged tokens.

mod common;

use common::TestApp;
use qod::auth::scopes;
use qod::config::{ServeArgs, Settings};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[devices]
known = ["+34600000*", "203.0.113.0/24"]
not_applicable = ["+346000009*"]

[[qos_profiles]]
name = "QOS_E"
status = "ACTIVE"
minDuration = { value = 1, unit = "Seconds" }
maxDuration = { value = 3600, unit = "Seconds" }

[[qos_profiles]]
name = "QOS_VIP"
status = "ACTIVE"
minDuration = { value = 1, unit = "Seconds" }
maxDuration = { value = 3600, unit = "Seconds" }
devices = ["+34600000002", "+346000001*"]
"#;

async fn app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("qod.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut settings = Settings::load(&ServeArgs {
        config: Some(config),
        database_url: Some(format!("sqlite://{}", dir.path().join("qod.db").display())),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        client_rate_limit: Some(0),
        ..ServeArgs::default()
    })
    .expect("the example configuration loads");
    settings.auth.rate_per_second = 0;
    TestApp::spawn_in(dir, settings).await
}

fn create_body(device: Value, profile: &str) -> Value {
    json!({
        "device": device,
        "applicationServer": {"ipv4Address": "198.51.100.10"},
        "qosProfile": profile,
        "duration": 60,
    })
}

fn phone(p: &str) -> Value {
    json!({"phoneNumber": p})
}

fn names(profiles: &Value) -> Vec<&str> {
    profiles
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn v1_answers_unknown_devices_not_applicable_ones_and_restricted_profiles() {
    let app = app().await;
    let sessions = "/quality-on-demand/v1/sessions";
    let retrieve = "/quality-on-demand/v1/retrieve-sessions";
    let profiles = "/qos-profiles/v1/retrieve-qos-profiles";

    for path in [sessions, retrieve, profiles] {
        let body = if path == sessions {
            create_body(phone("+33612345678"), "QOS_E")
        } else {
            json!({"device": phone("+33612345678")})
        };
        let (code, answer) = app.post(path, &body).await;
        assert_eq!(
            (code, answer["code"].as_str()),
            (404, Some("IDENTIFIER_NOT_FOUND")),
            "{path}: {answer}"
        );
        let body = if path == sessions {
            create_body(phone("+34600000901"), "QOS_E")
        } else {
            json!({"device": phone("+34600000901")})
        };
        let (code, answer) = app.post(path, &body).await;
        assert_eq!(
            (code, answer["code"].as_str()),
            (422, Some("SERVICE_NOT_APPLICABLE")),
            "{path}: {answer}"
        );
    }
    // Addresses match by network.
    let ipv4 = json!({"ipv4Address": {"publicAddress": "198.51.100.7", "publicPort": 5000}});
    assert_eq!(app.post(sessions, &create_body(ipv4, "QOS_E")).await.0, 404);
    let ipv4 = json!({"ipv4Address": {"publicAddress": "203.0.113.7", "publicPort": 5000}});
    assert_eq!(app.post(sessions, &create_body(ipv4, "QOS_E")).await.0, 201);

    // A restricted profile: offered to its devices, left out for others and without a device.
    let (_, all) = app.post(profiles, &json!({})).await;
    assert_eq!(names(&all), ["QOS_E"]);
    let (_, vip) = app
        .post(profiles, &json!({"device": phone("+34600000123")}))
        .await;
    assert_eq!(names(&vip), ["QOS_E", "QOS_VIP"]);
    let (_, other) = app
        .post(profiles, &json!({"device": phone("+34600000555")}))
        .await;
    assert_eq!(names(&other), ["QOS_E"]);
    let (code, none) = app
        .post(
            profiles,
            &json!({"device": phone("+34600000555"), "name": "QOS_VIP"}),
        )
        .await;
    assert_eq!(
        (code, none),
        (200, json!([])),
        "an eligible device offered no such profile"
    );
    let (code, answer) = app
        .post(sessions, &create_body(phone("+34600000555"), "QOS_VIP"))
        .await;
    assert_eq!(
        (code, answer["code"].as_str()),
        (422, Some("QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE")),
        "{answer}"
    );
    assert_eq!(
        app.post(sessions, &create_body(phone("+34600000002"), "QOS_VIP"))
            .await
            .0,
        201
    );
    assert_eq!(
        app.get("/qos-profiles/v1/qos-profiles/QOS_VIP").await.0,
        404,
        "not without a device"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions").await,
        2,
        "only the two eligible creates were stored"
    );
}

#[tokio::test]
async fn v0_and_three_legged_tokens_get_the_same_rules() {
    let app = app().await;
    let v0 = |p: &str, profile: &str| {
        json!({
            "device": {"phoneNumber": p},
            "applicationServer": {"ipv4Address": "198.51.100.10"},
            "qosProfile": profile,
            "duration": 60,
        })
    };
    let (code, answer) = app
        .post("/qod/v0/sessions", &v0("+33612345678", "QOS_E"))
        .await;
    assert_eq!((code, answer["code"].as_i64()), (404, Some(60)), "{answer}");
    let (code, answer) = app
        .post("/qod/v0/sessions", &v0("+34600000901", "QOS_E"))
        .await;
    assert_eq!(
        (code, answer["code"].as_i64()),
        (400, Some(24)),
        "v0 has no 422: {answer}"
    );
    let (code, answer) = app
        .post("/qod/v0/sessions", &v0("+34600000555", "QOS_VIP"))
        .await;
    assert_eq!((code, answer["code"].as_i64()), (400, Some(24)), "{answer}");
    assert_eq!(
        app.post("/qod/v0/sessions", &v0("+34600000101", "QOS_VIP"))
            .await
            .0,
        201
    );

    // A three-legged token: its device decides, also for the profiles it sees.
    let client = reqwest::Client::new();
    let as_device = |p: &str| app.mint("shop", &scopes::ALL, Some(p));
    let call = |token: String, path: &str, body: Value| {
        let req = client.post(app.url(path)).bearer_auth(token).json(&body);
        async move { common::split(req.send().await.unwrap()).await }
    };
    let body = json!({
        "applicationServer": {"ipv4Address": "198.51.100.10"},
        "qosProfile": "QOS_E",
        "duration": 60,
    });
    let (code, answer) = call(
        as_device("+33612345678"),
        "/quality-on-demand/v1/sessions",
        body.clone(),
    )
    .await;
    assert_eq!(
        (code, answer["code"].as_str()),
        (404, Some("IDENTIFIER_NOT_FOUND")),
        "{answer}"
    );
    let (code, answer) = call(
        as_device("+34600000901"),
        "/quality-on-demand/v1/sessions",
        body,
    )
    .await;
    assert_eq!(
        (code, answer["code"].as_str()),
        (422, Some("SERVICE_NOT_APPLICABLE")),
        "{answer}"
    );
    let (_, seen) = call(
        as_device("+34600000002"),
        "/qos-profiles/v1/retrieve-qos-profiles",
        json!({}),
    )
    .await;
    assert_eq!(names(&seen), ["QOS_E", "QOS_VIP"]);
    let listed = client
        .get(app.url("/qod/v0/qos-profiles"))
        .bearer_auth(as_device("+34600000002"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(names(&listed), ["QOS_E", "QOS_VIP"]);
}

#[tokio::test]
async fn v1_delete_answers_204_with_the_json_media_type() {
    let app = app().await;
    let (code, created) = app
        .post(
            "/quality-on-demand/v1/sessions",
            &create_body(phone("+34600000101"), "QOS_E"),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap();
    let answer = app
        .client
        .delete(app.url(&format!("/quality-on-demand/v1/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 204);
    assert_eq!(answer.headers()["content-type"], "application/json");
}
