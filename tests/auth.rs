//! Who may do what: bearer tokens on both facades (401 paths with their challenges), scopes per
//! operation (403), tenant isolation on every session endpoint, device binding of three-legged
//! tokens, per-client rate limits and session quotas, the metrics token, and JWKS keys (file and
//! URL, RS256 and ES256, rotation).

mod common;

use std::sync::{Arc, Mutex};

use axum::routing::get;
use common::{TestApp, session_body, split};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use qod::auth::scopes;
use serde_json::{Value, json};

const V1: &str = "/quality-on-demand/v1";
const V0: &str = "/qod/v0";

/// A request with exactly this `Authorization` header (or none).
/// `method path` with a token that lacks the operation's scope: 403, and the refusal's body.
async fn refused(
    app: &TestApp,
    token: &str,
    method: &reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Value {
    let (code, answer, _) = call(app, method.clone(), path, Some(token), body).await;
    assert_eq!(code, 403, "{method} {path} without its scope: {answer}");
    answer
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.expect("request sent");
    let headers = r.headers().clone();
    let (code, body) = split(r).await;
    (code, body, headers)
}

async fn post(app: &TestApp, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let (c, b, _) = call(app, reqwest::Method::POST, path, Some(token), Some(body)).await;
    (c, b)
}

async fn get_(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let (c, b, _) = call(app, reqwest::Method::GET, path, Some(token), None).await;
    (c, b)
}

async fn delete(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let (c, b, _) = call(app, reqwest::Method::DELETE, path, Some(token), None).await;
    (c, b)
}

fn v0_body(phone: &str) -> Value {
    json!({
        "device": {"phoneNumber": phone},
        "applicationServer": {"ipv4Address": "198.51.100.20"},
        "qosProfile": "QOS_E",
        "duration": 60,
    })
}

fn www_authenticate(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A token signed with a key the server does not know, otherwise valid.
fn foreign_token() -> String {
    let claims = json!({"client_id": "intruder", "exp": chrono::Utc::now().timestamp() + 600,
        "scope": scopes::ALL.join(" ")});
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(&[7u8; 32]),
    )
    .unwrap()
}

/// A token of the server's development key, with claims as given (no defaults added).
fn raw_token(app: &TestApp, claims: &Value) -> String {
    let key = qod::secrets::key_file(&app.dir.path().join("qod.dev-signing.key"), "test").unwrap();
    jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(&key)).unwrap()
}

#[tokio::test]
async fn v1_requests_without_a_valid_token_get_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let body = session_body("+33610000001", "198.51.100.1", 60);
    let now = chrono::Utc::now().timestamp();
    let expired = raw_token(
        &app,
        &json!({"client_id": "a", "exp": now - 3600, "scope": scopes::V1_CREATE}),
    );
    let string_exp = raw_token(
        &app,
        &json!({"client_id": "a", "exp": "99999999999", "scope": scopes::V1_CREATE}),
    );
    let future_nbf = raw_token(
        &app,
        &json!({"client_id": "a", "exp": now + 7200, "nbf": now + 3600, "scope": scopes::V1_CREATE}),
    );
    let no_exp = raw_token(&app, &json!({"client_id": "a", "scope": scopes::V1_CREATE}));
    let cases: [(Option<&str>, &str); 7] = [
        (None, "Bearer realm=\"qod\""),
        (Some("not-a-jwt"), "invalid_token"),
        (Some(&foreign_token()), "invalid_token"),
        (Some(&expired), "expired"),
        (Some(&string_exp), "invalid_token"),
        (Some(&future_nbf), "invalid_token"),
        (Some(&no_exp), "invalid_token"),
    ];
    for (token, challenge) in cases {
        let (code, body, headers) = call(
            &app,
            reqwest::Method::POST,
            &format!("{V1}/sessions"),
            token,
            Some(&body),
        )
        .await;
        assert_eq!(code, 401, "{token:?}: {body}");
        assert_eq!(body["code"], "UNAUTHENTICATED", "{body}");
        assert_eq!(body["status"], 401);
        let header = www_authenticate(&headers);
        assert!(header.contains(challenge), "{token:?}: {header}");
    }
    // Nothing was created by any of them.
    assert_eq!(app.scalar("SELECT COUNT(*) FROM sessions").await, 0);
    // A token with `alg: none` is never accepted.
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64url(
            &json!({"client_id": "a", "exp": now + 600, "scope": scopes::V1_READ}).to_string()
        )
    );
    let (code, _, _) = call(
        &app,
        reqwest::Method::GET,
        &format!("{V1}/sessions/{}", uuid::Uuid::new_v4()),
        Some(&unsigned),
        None,
    )
    .await;
    assert_eq!(code, 401);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("qod_auth_refusals_total{reason=\"expired\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("qod_auth_refusals_total{reason=\"missing\"} 1"));
    // Health stays open.
    let (code, _, _) = call(&app, reqwest::Method::GET, "/health/ready", None, None).await;
    assert_eq!(code, 204);
}

fn base64url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn v0_requests_without_a_valid_token_get_the_seed_codes_40_41_42() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let expired = raw_token(
        &app,
        &json!({"client_id": "a", "exp": now - 3600, "scope": scopes::V0_WRITE}),
    );
    for (token, code_expected) in [(None, 40), (Some(foreign_token()), 41), (Some(expired), 42)] {
        let (code, body, headers) = call(
            &app,
            reqwest::Method::POST,
            &format!("{V0}/sessions"),
            token.as_deref(),
            Some(&v0_body("+33610000002")),
        )
        .await;
        assert_eq!(code, 401, "{body}");
        assert_eq!(body["code"], code_expected, "{body}");
        assert!(www_authenticate(&headers).starts_with("Bearer"));
    }
    // v0 profiles need a valid token, and any valid token will do.
    let (code, _, _) = call(
        &app,
        reqwest::Method::GET,
        &format!("{V0}/qos-profiles"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 401);
    let no_scope = app.mint("a", &[], None);
    let (code, _) = get_(&app, &format!("{V0}/qos-profiles"), &no_scope).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn each_operation_needs_its_own_scope() {
    let app = TestApp::spawn().await;
    let owner = app.mint("a", &scopes::ALL, None);
    let (_, created) = post(
        &app,
        &format!("{V1}/sessions"),
        &owner,
        &session_body("+33610000003", "198.51.100.1", 60),
    )
    .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, v0_created) = post(
        &app,
        &format!("{V0}/sessions"),
        &owner,
        &v0_body("+33610000004"),
    )
    .await;
    let v0_id = v0_created["sessionId"].as_str().unwrap().to_owned();

    // Every scope but the one the operation needs.
    let all_but = |scope: &str| -> String {
        let rest: Vec<&str> = scopes::ALL
            .iter()
            .copied()
            .filter(|s| *s != scope)
            .collect();
        app.mint("a", &rest, None)
    };
    let retrieve = json!({"device": {"phoneNumber": "+33610000003"}});
    let extend = json!({"requestedAdditionalDuration": 10});
    let v1_cases = [
        (
            scopes::V1_CREATE,
            reqwest::Method::POST,
            format!("{V1}/sessions"),
            Some(session_body("+33610000005", "198.51.100.1", 60)),
        ),
        (
            scopes::V1_READ,
            reqwest::Method::GET,
            format!("{V1}/sessions/{id}"),
            None,
        ),
        (
            scopes::V1_UPDATE,
            reqwest::Method::POST,
            format!("{V1}/sessions/{id}/extend"),
            Some(extend.clone()),
        ),
        (
            scopes::V1_RETRIEVE_BY_DEVICE,
            reqwest::Method::POST,
            format!("{V1}/retrieve-sessions"),
            Some(retrieve),
        ),
        (
            scopes::V1_DELETE,
            reqwest::Method::DELETE,
            format!("{V1}/sessions/{id}"),
            None,
        ),
        (
            scopes::PROFILES_READ,
            reqwest::Method::GET,
            "/qos-profiles/v1/qos-profiles/QOS_E".to_owned(),
            None,
        ),
        (
            scopes::PROFILES_READ,
            reqwest::Method::POST,
            "/qos-profiles/v1/retrieve-qos-profiles".to_owned(),
            Some(json!({})),
        ),
    ];
    for (scope, method, path, body) in v1_cases {
        let answer = refused(&app, &all_but(scope), &method, &path, body.as_ref()).await;
        assert_eq!(answer["code"], "PERMISSION_DENIED");
        // The same call with the scope passes the check.
        let (code, answer, _) = call(
            &app,
            method.clone(),
            &path,
            Some(&app.mint("a", &[scope], None)),
            body.as_ref(),
        )
        .await;
        assert_ne!(code, 403, "{method} {path} with {scope}: {answer}");
    }
    let v0_cases = [
        (
            scopes::V0_WRITE,
            reqwest::Method::POST,
            format!("{V0}/sessions"),
            Some(v0_body("+33610000006")),
        ),
        (
            scopes::V0_READ,
            reqwest::Method::GET,
            format!("{V0}/sessions/{v0_id}"),
            None,
        ),
        (
            scopes::V0_WRITE,
            reqwest::Method::POST,
            format!("{V0}/sessions/{v0_id}/extend"),
            Some(extend),
        ),
        (
            scopes::V0_DELETE,
            reqwest::Method::DELETE,
            format!("{V0}/sessions/{v0_id}"),
            None,
        ),
    ];
    for (scope, method, path, body) in v0_cases {
        let answer = refused(&app, &all_but(scope), &method, &path, body.as_ref()).await;
        assert_eq!(answer["code"], 50, "{answer}");
    }
    // Only the creates with the right scopes happened: the two above and the v1 create that
    // had its scope. Counted from the event log, since the deleted session's row may be purged
    // already.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM session_events WHERE reason = 'CREATED'")
            .await,
        3
    );
}

#[tokio::test]
async fn another_client_can_neither_see_nor_change_nor_learn_of_a_session() {
    let app = TestApp::spawn().await;
    let a = app.mint("client-a", &scopes::ALL, None);
    let b = app.mint("client-b", &scopes::ALL, None);
    let phone = "+33610000010";
    let (code, created) = post(
        &app,
        &format!("{V1}/sessions"),
        &a,
        &session_body(phone, "198.51.100.1", 60),
    )
    .await;
    assert_eq!(code, 201);
    let id = created["sessionId"].as_str().unwrap().to_owned();
    common::poll_until(std::time::Duration::from_secs(5), || async {
        let (_, s) = get_(&app, &format!("{V1}/sessions/{id}"), &a).await;
        (s["qosStatus"] == "AVAILABLE").then_some(())
    })
    .await
    .expect("the session becomes AVAILABLE");

    let (code, body) = get_(&app, &format!("{V1}/sessions/{id}"), &b).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    let (code, _) = post(
        &app,
        &format!("{V1}/sessions/{id}/extend"),
        &b,
        &json!({"requestedAdditionalDuration": 30}),
    )
    .await;
    assert_eq!(code, 403);
    let (code, _) = delete(&app, &format!("{V1}/sessions/{id}"), &b).await;
    assert_eq!(code, 403);
    let (code, listed) = post(
        &app,
        &format!("{V1}/retrieve-sessions"),
        &b,
        &json!({"device": {"phoneNumber": phone}}),
    )
    .await;
    assert_eq!((code, listed.clone()), (200, json!([])));
    // Another client's session neither conflicts nor shows: the overlap check is per client,
    // so probing with creates learns nothing of other tenants' flows and blocks nobody.
    let (code, own) = post(
        &app,
        &format!("{V1}/sessions"),
        &b,
        &session_body(phone, "198.51.100.1", 60),
    )
    .await;
    assert_eq!(code, 201, "{own}");
    assert_ne!(own["sessionId"], id.as_str());

    // v0 answers the same way in its own format.
    let (code, body) = get_(&app, &format!("{V0}/sessions/{id}"), &b).await;
    assert_eq!((code, body["code"].as_i64()), (403, Some(51)), "{body}");
    let (code, _) = delete(&app, &format!("{V0}/sessions/{id}"), &b).await;
    assert_eq!(code, 403);

    // The owner still has it, unchanged.
    let (code, mine) = get_(&app, &format!("{V1}/sessions/{id}"), &a).await;
    assert_eq!(code, 200);
    assert_eq!(mine["expiresAt"], created_expiry(&app, &id, &a).await);
    assert_eq!(mine["duration"], 60);
    let (code, listed) = post(
        &app,
        &format!("{V1}/retrieve-sessions"),
        &a,
        &json!({"device": {"phoneNumber": phone}}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn creates_tell_a_client_nothing_of_another_clients_flows_and_cannot_block_them() {
    let app = TestApp::spawn().await;
    let a = app.mint("client-a", &scopes::ALL, None);
    let b = app.mint("client-b", &scopes::ALL, None);
    let phone = "+33612349900";
    let mut secret = session_body(phone, "198.51.100.0/24", 3600);
    secret["applicationServerPorts"] = json!({"ranges": [{"from": 5000, "to": 5010}]});
    let (code, _) = post(&app, &format!("{V1}/sessions"), &a, &secret).await;
    assert_eq!(code, 201);
    // A binary search by the other client over addresses and ports: every probe is answered
    // alike, so it converges on nothing. (Each probe is a session of its own; delete it.)
    for (server, port) in [
        ("0.0.0.0/0", 5005),
        ("198.51.100.0/25", 5005),
        ("198.51.100.128/25", 5005),
        ("198.51.100.7", 6000),
        ("203.0.113.0/24", 5005),
    ] {
        let mut probe = session_body(phone, server, 60);
        probe["applicationServerPorts"] = json!({"ports": [port]});
        let (code, body) = post(&app, &format!("{V1}/sessions"), &b, &probe).await;
        assert_eq!(code, 201, "{server} {port}: {body}");
        let id = body["sessionId"].as_str().unwrap();
        assert_eq!(
            delete(&app, &format!("{V1}/sessions/{id}"), &b).await.0,
            204
        );
    }
    // Nor can one client block the device for another with the widest flow.
    let mut everything = session_body(phone, "0.0.0.0/0", 86_400);
    everything["applicationServer"]["ipv6Address"] = json!("::/0");
    assert_eq!(
        post(&app, &format!("{V1}/sessions"), &b, &everything)
            .await
            .0,
        201
    );
    let second = session_body(phone, "203.0.113.9", 60);
    assert_eq!(
        post(&app, &format!("{V1}/sessions"), &a, &second).await.0,
        201
    );
    // Each client's own overlaps are still refused.
    assert_eq!(
        post(&app, &format!("{V1}/sessions"), &a, &secret).await.0,
        409
    );
}

async fn created_expiry(app: &TestApp, id: &str, token: &str) -> Value {
    get_(app, &format!("{V1}/sessions/{id}"), token).await.1["expiresAt"].clone()
}

#[tokio::test]
async fn a_three_legged_token_binds_the_session_to_its_device() {
    let app = TestApp::spawn().await;
    let phone = "+33610000020";
    let bound = app.mint("client-a", &scopes::ALL, Some(phone));
    let two_legged = app.mint("client-a", &scopes::ALL, None);

    // Naming a device with a three-legged token is refused, even the same one.
    let (code, body) = post(
        &app,
        &format!("{V1}/sessions"),
        &bound,
        &session_body(phone, "198.51.100.1", 60),
    )
    .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (422, Some("UNNECESSARY_IDENTIFIER")),
        "{body}"
    );
    // Without a device, the token's device is used.
    let mut body = session_body(phone, "198.51.100.1", 60);
    body.as_object_mut().unwrap().remove("device");
    let (code, created) = post(&app, &format!("{V1}/sessions"), &bound, &body).await;
    assert_eq!(code, 201, "{created}");
    assert!(
        created.get("device").is_none(),
        "the request named no device: {created}"
    );
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let (_, seen) = get_(&app, &format!("{V1}/sessions/{id}"), &two_legged).await;
    assert_eq!(seen["device"], json!({"phoneNumber": phone}));
    // A two-legged token must name the device.
    let (code, missing) = post(&app, &format!("{V1}/sessions"), &two_legged, &body).await;
    assert_eq!(
        (code, missing["code"].as_str()),
        (422, Some("MISSING_IDENTIFIER"))
    );

    // retrieve-sessions follows the same rules.
    let (code, listed) = post(&app, &format!("{V1}/retrieve-sessions"), &bound, &json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(listed[0]["sessionId"], id.as_str());
    let (code, body) = post(
        &app,
        &format!("{V1}/retrieve-sessions"),
        &bound,
        &json!({"device": {"phoneNumber": phone}}),
    )
    .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (422, Some("UNNECESSARY_IDENTIFIER"))
    );
    let (code, body) = post(
        &app,
        &format!("{V1}/retrieve-sessions"),
        &two_legged,
        &json!({}),
    )
    .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (422, Some("MISSING_IDENTIFIER"))
    );

    // A token bound to another device of the same client reaches none of this device's sessions.
    let other = app.mint("client-a", &scopes::ALL, Some("+33610000021"));
    assert_eq!(
        get_(&app, &format!("{V1}/sessions/{id}"), &other).await.0,
        403
    );
    assert_eq!(
        delete(&app, &format!("{V1}/sessions/{id}"), &other).await.0,
        403
    );
    // v0 tells "another device" (52, forbidden user) from "another client" (51).
    let (code, body) = get_(&app, &format!("{V0}/sessions/{id}"), &other).await;
    assert_eq!((code, body["code"].as_i64()), (403, Some(52)), "{body}");
    // v0 names the device always: only the token's own.
    let (code, body) = post(&app, &format!("{V0}/sessions"), &other, &v0_body(phone)).await;
    assert_eq!((code, body["code"].as_i64()), (403, Some(52)), "{body}");
    // The bound token may delete its own session.
    assert_eq!(
        delete(&app, &format!("{V1}/sessions/{id}"), &bound).await.0,
        204
    );
}

#[tokio::test]
async fn a_client_over_its_request_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = TestApp::spawn_with(|s| {
        s.auth.rate_per_second = 1;
        s.auth.burst = 3;
    })
    .await;
    let a = app.mint("client-a", &scopes::ALL, None);
    let b = app.mint("client-b", &scopes::ALL, None);
    let path = "/qos-profiles/v1/qos-profiles/QOS_E";
    for _ in 0..3 {
        assert_eq!(get_(&app, path, &a).await.0, 200);
    }
    let (code, body, headers) = call(&app, reqwest::Method::GET, path, Some(&a), None).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (429, Some("TOO_MANY_REQUESTS")),
        "{body}"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry, 1, "a token returns within a second at 1/s");
    let (code, body, headers) = call(
        &app,
        reqwest::Method::GET,
        &format!("{V0}/qos-profiles"),
        Some(&a),
        None,
    )
    .await;
    assert_eq!((code, body["code"].as_i64()), (429, Some(53)));
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        get_(&app, path, &b).await.0,
        200,
        "another client has its own bucket"
    );
    assert!(
        app.metrics()
            .await
            .contains("qod_client_limited_total{limit=\"rate\"} 2")
    );
}

#[tokio::test]
async fn a_client_at_its_session_quota_gets_429_quota_exceeded_until_one_ends() {
    let app = TestApp::spawn_with(|s| s.auth.max_active_sessions = 2).await;
    let a = app.mint("client-a", &scopes::ALL, None);
    let b = app.mint("client-b", &scopes::ALL, None);
    let mut ids = Vec::new();
    for i in 0..2 {
        let (code, created) = post(
            &app,
            &format!("{V1}/sessions"),
            &a,
            &session_body(&format!("+3361000003{i}"), "198.51.100.1", 60),
        )
        .await;
        assert_eq!(code, 201);
        ids.push(created["sessionId"].as_str().unwrap().to_owned());
    }
    let third = session_body("+33610000039", "198.51.100.1", 60);
    let (code, body) = post(&app, &format!("{V1}/sessions"), &a, &third).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (429, Some("QUOTA_EXCEEDED")),
        "{body}"
    );
    let (code, body) = post(
        &app,
        &format!("{V0}/sessions"),
        &a,
        &v0_body("+33610000038"),
    )
    .await;
    assert_eq!((code, body["code"].as_i64()), (429, Some(53)), "{body}");
    // Another client has its own quota.
    assert_eq!(
        post(
            &app,
            &format!("{V1}/sessions"),
            &b,
            &session_body("+33610000037", "198.51.100.1", 60)
        )
        .await
        .0,
        201
    );
    // Ending one session frees a place.
    assert_eq!(
        delete(&app, &format!("{V1}/sessions/{}", ids[0]), &a)
            .await
            .0,
        204
    );
    assert_eq!(
        post(&app, &format!("{V1}/sessions"), &a, &third).await.0,
        201
    );
    assert!(
        app.metrics()
            .await
            .contains("qod_client_limited_total{limit=\"quota\"} 2")
    );
}

#[tokio::test]
async fn metrics_can_require_their_own_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "scrape-secret-0123456789\n").unwrap();
    let mut settings = common::settings_in(dir.path());
    settings.auth.metrics_token = Some(qod::config::Redacted("scrape-secret-0123456789".into()));
    let app = TestApp::spawn_in(dir, settings).await;
    let (code, _, headers) = call(&app, reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(code, 401);
    assert!(www_authenticate(&headers).starts_with("Bearer"));
    let api_token = app.token.clone().unwrap();
    assert_eq!(
        call(
            &app,
            reqwest::Method::GET,
            "/metrics",
            Some(&api_token),
            None
        )
        .await
        .0,
        401
    );
    let r = reqwest::Client::new()
        .get(app.url("/metrics"))
        .bearer_auth("scrape-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("qod_sessions"));
}

/// A JWKS document of the given keys, each with its key id.
fn jwks(keys: &[(&EncodingKey, Algorithm, &str)]) -> String {
    let keys = keys
        .iter()
        .map(|(key, alg, kid)| {
            let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa-test-signing-key.pem")).unwrap()
}

fn ec_key() -> EncodingKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap()
}

fn signed(key: &EncodingKey, alg: Algorithm, kid: &str, client: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = json!({"client_id": client, "iss": "https://idp.example", "aud": "qod",
        "exp": chrono::Utc::now().timestamp() + 600, "scope": scopes::V1_READ});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_checked_against_a_jwks_file_with_issuer_and_audience() {
    let (rsa, ec) = (rsa_key(), ec_key());
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(
        &jwks_path,
        jwks(&[
            (&rsa, Algorithm::RS256, "r1"),
            (&ec, Algorithm::ES256, "e1"),
        ]),
    )
    .unwrap();
    let mut settings = common::settings_in(dir.path());
    settings.auth.keys = qod::config::AuthKeys::Jwks {
        file: Some(jwks_path),
        url: None,
    };
    settings.auth.rules.issuer = Some("https://idp.example".into());
    settings.auth.rules.audience = Some("qod".into());
    let app = TestApp::spawn_in(dir, settings).await;
    assert!(
        app.token.is_none(),
        "no development token outside development mode"
    );
    let path = format!("{V1}/sessions/{}", uuid::Uuid::new_v4());
    for token in [
        signed(&rsa, Algorithm::RS256, "r1", "a"),
        signed(&ec, Algorithm::ES256, "e1", "a"),
    ] {
        let (code, body) = get_(&app, &path, &token).await;
        assert_eq!(code, 404, "a verified token reaches the handler: {body}");
    }
    // The RSA key under the EC key's id, a wrong issuer, an HS256 token: refused.
    let wrong_kid = signed(&rsa, Algorithm::RS256, "e1", "a");
    let mut wrong_iss_claims = json!({"client_id": "a", "iss": "https://other.example", "aud": "qod",
        "exp": chrono::Utc::now().timestamp() + 600, "scope": scopes::V1_READ});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("r1".into());
    let wrong_iss = jsonwebtoken::encode(&header, &wrong_iss_claims, &rsa).unwrap();
    wrong_iss_claims["iss"] = json!("https://idp.example");
    wrong_iss_claims["aud"] = json!("someone-else");
    let wrong_aud = jsonwebtoken::encode(&header, &wrong_iss_claims, &rsa).unwrap();
    for token in [wrong_kid, wrong_iss, wrong_aud, foreign_token()] {
        assert_eq!(get_(&app, &path, &token).await.0, 401);
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_cached_and_refetched_when_the_provider_rotates_keys() {
    let (old, new) = (ec_key(), ec_key());
    let document = Arc::new(Mutex::new(jwks(&[(&old, Algorithm::ES256, "k1")])));
    let fetches = Arc::new(Mutex::new(0u32));
    let (doc, count) = (document.clone(), fetches.clone());
    let idp = axum::Router::new().route(
        "/jwks",
        get(move || {
            let (doc, count) = (doc.clone(), count.clone());
            async move {
                *count.lock().unwrap() += 1;
                doc.lock().unwrap().clone()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, idp).await });

    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings_in(dir.path());
    settings.auth.keys = qod::config::AuthKeys::Jwks {
        file: None,
        url: Some(format!("http://{idp_addr}/jwks")),
    };
    settings.auth.rules.issuer = Some("https://idp.example".into());
    let app = TestApp::spawn_in(dir, settings).await;
    let path = format!("{V1}/sessions/{}", uuid::Uuid::new_v4());
    for _ in 0..3 {
        assert_eq!(
            get_(&app, &path, &signed(&old, Algorithm::ES256, "k1", "a"))
                .await
                .0,
            404
        );
    }
    assert_eq!(*fetches.lock().unwrap(), 1, "the JWKS is cached");
    // The provider rotates: a token with the new key id makes the server fetch again.
    *document.lock().unwrap() = jwks(&[(&new, Algorithm::ES256, "k2")]);
    assert_eq!(
        get_(&app, &path, &signed(&new, Algorithm::ES256, "k2", "a"))
            .await
            .0,
        404
    );
    assert_eq!(*fetches.lock().unwrap(), 2);
    // Unknown key ids do not make it hammer the provider.
    for _ in 0..3 {
        assert_eq!(
            get_(&app, &path, &signed(&old, Algorithm::ES256, "k9", "a"))
                .await
                .0,
            401
        );
    }
    assert_eq!(*fetches.lock().unwrap(), 2);
}
