//! Status notifications through a real HTTP sink on loopback: what is sent, retries and their
//! delays, Retry-After, dead letters and their retry, 410 Gone, SSRF refusals, isolation of a
//! slow sink, order per session.

mod common;

use std::time::{Duration, Instant};

use common::sink::{Behaviour, TestSink};
use common::{TestApp, poll_until, session_body, status};
use serde_json::{Value, json};

/// A server that may deliver to loopback over http, with fast, deterministic retries.
async fn notifying_app(configure: impl FnOnce(&mut qod::Settings)) -> TestApp {
    TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
        s.notify.timeout = Duration::from_secs(1);
        common::override_pools(s, "[deliver_notification]\nretry = { max_attempts = 4, base_ms = 100, factor = 2.0, cap_ms = 5000, jitter = false }");
        configure(s);
    })
    .await
}

fn with_sink(phone: &str, duration: i64, sink: &str) -> Value {
    let mut body = session_body(phone, "198.51.100.1", duration);
    body["sink"] = json!(sink);
    body
}

async fn create(app: &TestApp, body: &Value) -> String {
    let (code, created) = app.create(body).await;
    assert_eq!(code, 201, "{created}");
    created["sessionId"].as_str().unwrap().to_owned()
}

async fn notification_row(
    app: &TestApp,
    session: &str,
    status: &str,
) -> Option<(String, String, i64, Option<String>)> {
    // The stored event is compact JSON (serde_json), on either backend.
    let rows = app
        .db
        .rows(
            "SELECT id, state, attempts, last_error FROM notifications \
             WHERE session_id = ? AND event LIKE ?",
            &[session, &format!("%\"qosStatus\":\"{status}\"%")],
        )
        .await;
    let row = rows.into_iter().next()?;
    Some((
        row["id"].as_str()?.to_owned(),
        row["state"].as_str()?.to_owned(),
        row["attempts"].as_i64()?,
        row["last_error"].as_str().map(str::to_owned),
    ))
}

async fn wait_settled(
    app: &TestApp,
    session: &str,
    status: &str,
) -> (String, String, i64, Option<String>) {
    poll_until(Duration::from_secs(10), || async {
        notification_row(app, session, status)
            .await
            .filter(|r| r.1 != "pending")
    })
    .await
    .unwrap_or_else(|| panic!("{status} notification of {session} never settled"))
}

#[tokio::test]
async fn each_event_arrives_once_in_order_as_a_cloudevent_with_the_bearer_token() {
    let sink = TestSink::start().await;
    let app = notifying_app(|_| {}).await;
    let mut body = with_sink("+33620000001", 1, &sink.url("ok", Behaviour::Accept));
    body["sinkCredential"] = json!({
        "credentialType": "ACCESSTOKEN", "accessToken": "tok-123",
        "accessTokenExpiresUtc": "2099-01-01T00:00:00Z", "accessTokenType": "bearer"
    });
    let id = create(&app, &body).await;
    let got = sink.wait_delivered("ok", 2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received("ok").len(), 2, "no duplicates");

    let statuses: Vec<&str> = got
        .iter()
        .map(|r| r.body["data"]["qosStatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["AVAILABLE", "UNAVAILABLE"]);
    assert_eq!(got[1].body["data"]["statusInfo"], "DURATION_EXPIRED");
    assert!(got[0].body["data"].get("statusInfo").is_none());
    for r in &got {
        assert_eq!(r.headers["content-type"], "application/cloudevents+json");
        assert_eq!(r.headers["authorization"], "Bearer tok-123");
        let e = &r.body;
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(
            e["type"],
            "org.camaraproject.quality-on-demand.v1.qos-status-changed"
        );
        assert_eq!(e["data"]["sessionId"], id.as_str());
        assert!(
            e["source"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/quality-on-demand/v1/sessions/{id}"))
        );
        chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).expect("RFC 3339 time");
    }
    assert_ne!(got[0].body["id"], got[1].body["id"]);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id_and_growing_delays() {
    let sink = TestSink::start().await;
    let app = notifying_app(|_| {}).await;
    create(
        &app,
        &with_sink(
            "+33620000002",
            60,
            &sink.url("flaky", Behaviour::FailTimes(3, 503)),
        ),
    )
    .await;
    sink.wait_delivered("flaky", 1, Duration::from_secs(5))
        .await;
    let all = sink.received("flaky");
    assert_eq!(all.len(), 4, "3 failures then success");
    assert!(
        all.iter().all(|r| r.body["id"] == all[0].body["id"]),
        "the id must not change across retries"
    );
    let gaps: Vec<u128> = all
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    for (n, gap) in gaps.iter().enumerate() {
        assert!(*gap >= 100 << n, "gap {n} was {gap} ms: {gaps:?}");
    }
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "delays must grow: {gaps:?}"
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let sink = TestSink::start().await;
    let app = notifying_app(|_| {}).await;
    create(
        &app,
        &with_sink(
            "+33620000003",
            60,
            &sink.url("busy", Behaviour::RetryAfter(1, 2)),
        ),
    )
    .await;
    sink.wait_delivered("busy", 1, Duration::from_secs(6)).await;
    let all = sink.received("busy");
    assert_eq!(all.len(), 2);
    let gap = all[1].at - all[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?} despite Retry-After: 2"
    );
    assert!(gap < Duration::from_secs(5), "retried only after {gap:?}");
}

#[tokio::test]
async fn an_event_out_of_attempts_is_dead_lettered_listed_and_can_be_retried() {
    let sink = TestSink::start().await;
    let app = notifying_app(|_| {}).await;
    let session = create(
        &app,
        &with_sink(
            "+33620000004",
            60,
            &sink.url("down", Behaviour::Always(500)),
        ),
    )
    .await;
    let (id, state, attempts, error) = wait_settled(&app, &session, "AVAILABLE").await;
    assert_eq!((state.as_str(), attempts), ("dead", 4));
    assert!(error.unwrap().contains("500"));
    assert_eq!(sink.received("down").len(), 4);
    let metrics = app.metrics().await;
    assert!(metrics.contains("qod_notifications_dead 1"), "{metrics}");
    assert!(metrics.contains(r#"qod_notification_attempts_total{outcome="dead"} 1"#));
    assert!(metrics.contains(r#"qod_notification_attempts_total{outcome="retried"} 3"#));

    // The database URL the server was given (a SQLite file, or the test's PostgreSQL one).
    let db = common::process_database_args(app.dir.path()).await[1].clone();
    // Found through the server's config file, as an operator beside it would.
    let config = app.dir.path().join("qod.toml");
    std::fs::write(&config, format!("database_url = {db:?}\n")).unwrap();
    let config = config.to_str().unwrap();
    let list = common::qod_cli(&["notifications", "list", "--dead", "--config", config]).await;
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(&id) && listed.contains("dead") && listed.contains("500"),
        "{listed}"
    );
    let cut = common::qod_cli(&["notifications", "list", "--limit", "1", "--config", config]).await;
    let note = String::from_utf8_lossy(&cut.stderr);
    assert!(note.contains("the first 1; there may be more"), "{note}");

    sink.set("down", Behaviour::Accept);
    let retry = common::qod_cli(&["notifications", "retry", &id, "--database-url", &db]).await;
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let delivered = sink.wait_delivered("down", 1, Duration::from_secs(5)).await;
    assert_eq!(
        delivered[0].body["id"],
        id.as_str(),
        "a retried dead letter keeps its id"
    );
    let again = common::qod_cli(&["notifications", "retry", &id, "--database-url", &db]).await;
    assert!(
        !again.status.success(),
        "retrying a delivered event must be refused"
    );
}

#[tokio::test]
async fn a_sink_that_answers_410_gone_gets_nothing_more() {
    let sink = TestSink::start().await;
    let app = notifying_app(|_| {}).await;
    let session = create(
        &app,
        &with_sink("+33620000005", 1, &sink.url("gone", Behaviour::Always(410))),
    )
    .await;
    let (_, state, _, error) = wait_settled(&app, &session, "AVAILABLE").await;
    assert_eq!(state, "dead");
    assert!(error.unwrap().contains("410"));
    let (_, state, attempts, error) = wait_settled(&app, &session, "UNAVAILABLE").await;
    assert_eq!((state.as_str(), attempts), ("dead", 0));
    assert!(error.unwrap().contains("410"));
    assert_eq!(
        sink.received("gone").len(),
        1,
        "only the first event reached the gone sink"
    );
}

#[tokio::test]
async fn other_client_errors_are_permanent() {
    let sink = TestSink::start().await;
    let app = notifying_app(|_| {}).await;
    let session = create(
        &app,
        &with_sink("+33620000006", 60, &sink.url("bad", Behaviour::Always(400))),
    )
    .await;
    let (_, state, attempts, _) = wait_settled(&app, &session, "AVAILABLE").await;
    assert_eq!((state.as_str(), attempts), ("dead", 1));
    assert_eq!(sink.received("bad").len(), 1);
}

#[tokio::test]
async fn private_addresses_are_refused_without_the_flag() {
    let sink = TestSink::start().await;
    let app = notifying_app(|s| s.notify.allow_private_sinks = false).await;
    // A literal address is refused at once, with the flag that would allow it.
    let (code, refused) = app
        .create(&with_sink(
            "+33620000007",
            60,
            &sink.url("private", Behaviour::Accept),
        ))
        .await;
    assert_eq!(code, 400, "{refused}");
    assert_eq!(refused["code"], "INVALID_SINK");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("loopback") && message.contains("--allow-private-sinks"),
        "{message}"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions").await,
        0,
        "a 400 stores nothing"
    );
    // A name is only known to be private once resolved: refused at delivery.
    let by_name = format!("http://localhost:{}/private", sink.addr.port());
    let named = create(&app, &with_sink("+33620000008", 60, &by_name)).await;
    let (_, state, _, error) = wait_settled(&app, &named, "AVAILABLE").await;
    let error = error.unwrap();
    assert_eq!(state, "dead");
    assert!(
        error.contains("resolves to")
            && error.contains("loopback")
            && error.contains("--allow-private-sinks"),
        "{error}"
    );
    assert!(
        sink.received("private").is_empty(),
        "a refused sink was contacted"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"qod_notification_attempts_total{outcome="refused"} 1"#));
}

#[tokio::test]
async fn a_hanging_sink_does_not_delay_deliveries_to_others() {
    let slow_sink = TestSink::start().await;
    let fast_sink = TestSink::start().await;
    let app = notifying_app(|s| {
        s.notify.per_sink_concurrency = 2;
        common::override_pools(s, "[deliver_notification]\nconcurrency = 4");
    })
    .await;
    let slow = slow_sink.url("slow", Behaviour::Hang(Duration::from_secs(3)));
    for i in 0..6 {
        create(&app, &with_sink(&format!("+3362000010{i}"), 60, &slow)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    create(
        &app,
        &with_sink(
            "+33620000200",
            60,
            &fast_sink.url("fast", Behaviour::Accept),
        ),
    )
    .await;
    fast_sink
        .wait_delivered("fast", 1, Duration::from_secs(3))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fast sink waited {:?}",
        started.elapsed()
    );
    // Attempts time out after 1 s: before that, no more than the per-sink limit may have started.
    let slow = slow_sink.received("slow");
    let first = slow[0].at;
    let early = slow
        .iter()
        .filter(|r| r.at - first < Duration::from_millis(900))
        .count();
    assert_eq!(
        early, 2,
        "deliveries in flight to one sink exceeded the limit"
    );
}

#[tokio::test]
async fn a_later_event_waits_while_an_earlier_one_is_retried() {
    let sink = TestSink::start().await;
    let app = notifying_app(|s| {
        common::override_pools(s, "[deliver_notification]\nretry = { max_attempts = 6, base_ms = 400, factor = 2.0, cap_ms = 5000, jitter = false }");
    })
    .await;
    // AVAILABLE fails until ~2.8 s (0.4 + 0.8 + 1.6); the session expires at ~1 s meanwhile.
    create(
        &app,
        &with_sink(
            "+33620000009",
            1,
            &sink.url("order", Behaviour::FailTimes(3, 503)),
        ),
    )
    .await;
    let got = sink
        .wait_delivered("order", 2, Duration::from_secs(8))
        .await;
    let statuses: Vec<&str> = got
        .iter()
        .map(|r| r.body["data"]["qosStatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["AVAILABLE", "UNAVAILABLE"]);
    let first_unavailable = sink
        .received("order")
        .iter()
        .position(|r| r.body["data"]["qosStatus"] == "UNAVAILABLE")
        .unwrap();
    assert_eq!(
        first_unavailable, 4,
        "UNAVAILABLE was sent before AVAILABLE was delivered"
    );
}

#[tokio::test]
async fn an_expired_sink_token_sends_nothing() {
    let sink = TestSink::start().await;
    let app = notifying_app(|_| {}).await;
    let mut body = with_sink("+33620000010", 60, &sink.url("expired", Behaviour::Accept));
    body["sinkCredential"] = json!({
        "credentialType": "ACCESSTOKEN", "accessToken": "old",
        "accessTokenExpiresUtc": "2020-01-01T00:00:00Z", "accessTokenType": "bearer"
    });
    let session = create(&app, &body).await;
    let (_, state, _, error) = wait_settled(&app, &session, "AVAILABLE").await;
    assert_eq!(state, "dead");
    assert!(error.unwrap().contains("expired"));
    assert!(sink.received("expired").is_empty());
}

#[tokio::test]
async fn deletion_notifies_only_sessions_that_had_been_available() {
    let sink = TestSink::start().await;
    let app = notifying_app(|s| s.sim.latency = Duration::from_millis(800)).await;
    let url = sink.url("del", Behaviour::Accept);
    let available = create(&app, &with_sink("+33620000011", 60, &url)).await;
    app.wait_for_session(&available, Duration::from_secs(3), |_, b| {
        status(b) == "AVAILABLE"
    })
    .await;
    let requested = create(&app, &with_sink("+33620000012", 60, &url)).await;
    app.delete(&format!("/quality-on-demand/v1/sessions/{requested}"))
        .await;
    app.delete(&format!("/quality-on-demand/v1/sessions/{available}"))
        .await;
    let got = sink.wait_delivered("del", 2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events: Vec<(String, String)> = sink
        .received("del")
        .iter()
        .map(|r| {
            (
                r.body["data"]["sessionId"].as_str().unwrap().to_owned(),
                r.body["data"]["qosStatus"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            (available.clone(), "AVAILABLE".to_owned()),
            (available.clone(), "UNAVAILABLE".to_owned())
        ],
        "{got:?}"
    );
    assert_eq!(
        sink.received("del")[1].body["data"]["statusInfo"],
        "DELETE_REQUESTED"
    );
}

#[tokio::test]
async fn a_sink_that_stays_down_is_retried_then_dead_lettered() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/down",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let app = notifying_app(|_| {}).await;
    let session = create(&app, &with_sink("+33620000013", 60, &url)).await;
    let (_, state, attempts, error) = wait_settled(&app, &session, "AVAILABLE").await;
    assert_eq!((state.as_str(), attempts), ("dead", 4));
    let error = error.unwrap();
    assert!(error.contains("connection failed"), "{error}");
}

#[tokio::test]
async fn sink_tokens_are_sealed_at_rest_and_still_sent_in_clear_to_the_sink() {
    let sink = TestSink::start().await;
    let app = notifying_app(|_| {}).await;
    let token = "tok-at-rest-7f3a9c1e5b";
    let mut body = with_sink("+33620000091", 1, &sink.url("sealed", Behaviour::Accept));
    body["sinkCredential"] = json!({
        "credentialType": "ACCESSTOKEN", "accessToken": token,
        "accessTokenExpiresUtc": "2099-01-01T00:00:00Z", "accessTokenType": "bearer"
    });
    create(&app, &body).await;
    let got = sink
        .wait_delivered("sealed", 2, Duration::from_secs(5))
        .await;
    assert_eq!(got[0].headers["authorization"], format!("Bearer {token}"));

    // A dump of the database files alone (main file and write-ahead log) does not reveal it.
    for file in ["qod.db", "qod.db-wal"] {
        let bytes = std::fs::read(app.dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{file} holds the token in clear"
        );
    }
    let stored: Vec<String> = app
        .db
        .texts(
            "SELECT sink_credential FROM sessions UNION ALL SELECT credential FROM notifications",
            &[],
        )
        .await;
    assert!(
        !stored.is_empty() && stored.iter().all(|c| c.contains("sealed1:")),
        "{stored:?}"
    );
    assert!(
        app.dir.path().join("qod.key").exists(),
        "the key lives beside the database"
    );
}

#[tokio::test]
async fn sinks_with_credentials_in_the_url_or_stray_characters_and_unsafe_tokens_are_refused() {
    let app = notifying_app(|_| {}).await;
    for sink in [
        "https://user:password@sink.example/cb",
        "https://sink.example/cb\r\nX-Injected: yes",
        "https://sink.example/c b",
    ] {
        let (code, body) = app.create(&with_sink("+33620000301", 60, sink)).await;
        assert_eq!(
            (code, body["code"].as_str()),
            (400, Some("INVALID_SINK")),
            "{sink:?}: {body}"
        );
    }
    for token in [
        "tok\r\nX-Injected: yes-0123456789",
        "tok\u{0}0123456789012345",
        "tok\u{7f}",
    ] {
        let mut body = with_sink("+33620000302", 60, "https://sink.example/cb");
        body["sinkCredential"] = json!({
            "credentialType": "ACCESSTOKEN", "accessToken": token,
            "accessTokenExpiresUtc": "2099-01-01T00:00:00Z", "accessTokenType": "bearer"
        });
        let (code, answer) = app.create(&body).await;
        assert_eq!(code, 400, "{token:?}: {answer}");
        let v0 = json!({
            "device": {"phoneNumber": "+33620000303"},
            "applicationServer": {"ipv4Address": "198.51.100.20"},
            "qosProfile": "QOS_E",
            "webhook": {"notificationUrl": "https://sink.example/cb", "notificationAuthToken": format!("{token}-padding-to-twenty")},
        });
        let (code, answer) = app.post("/qod/v0/sessions", &v0).await;
        assert_eq!(
            (code, answer["code"].as_i64()),
            (400, Some(24)),
            "{token:?}: {answer}"
        );
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions").await,
        0,
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_backlog_behind_a_slow_sink_backs_off_instead_of_polling_it() {
    let slow_sink = TestSink::start().await;
    let app = notifying_app(|s| {
        s.notify.per_sink_concurrency = 1;
        common::override_pools(s, "[deliver_notification]\nconcurrency = 4");
    })
    .await;
    let slow = slow_sink.url("slow", Behaviour::Hang(Duration::from_secs(3)));
    for i in 0..30 {
        create(&app, &with_sink(&format!("+336200004{i:02}"), 60, &slow)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = app.metrics().await;
    let enqueued: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"qod_jobs_total{outcome="enqueued",queue="deliver_notification"} "#)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // 30 first deliveries, then at most ~5 looks each in 3 s with the doubling wait; a fixed
    // quarter-second poll would have made about 12 each.
    assert!(enqueued >= 30, "{enqueued}");
    assert!(enqueued <= 30 * 6, "{enqueued} deliveries enqueued in 3 s");
}
