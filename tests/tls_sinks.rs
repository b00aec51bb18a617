//! Deliveries to an https sink whose certificate comes from a private CA: trusted only when the
//! operator adds that CA with `--sink-ca-file`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use common::{TestApp, poll_until, session_body};
use qod::fake_nef::tls::TlsListener;
use tokio::net::TcpListener;

/// An https sink on localhost with a certificate from a private CA; returns the CA's PEM file
/// (in `dir`), the sink URL and its count of received events.
async fn private_ca_sink(dir: &Path) -> (PathBuf, String, Arc<AtomicUsize>) {
    let files = common::tls::private_ca(dir);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let app = Router::new().route(
        "/events",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT
            }
        }),
    );
    // The fake NEF's https listener serves the sink as well.
    let listener = TlsListener::new(tcp, &files.cert, &files.key).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        files.ca,
        format!("https://localhost:{port}/events"),
        received,
    )
}

fn fast_retries(s: &mut qod::Settings) {
    s.notify.allow_private_sinks = true;
    common::override_pools(
        s,
        "[deliver_notification]\nretry = { max_attempts = 2, base_ms = 100, jitter = false }",
    );
}

#[tokio::test]
async fn an_https_sink_behind_a_private_ca_is_reached_once_the_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, url, received) = private_ca_sink(dir.path()).await;
    let app = TestApp::spawn_with(|s| {
        fast_retries(s);
        s.notify.sink_ca_file = Some(ca_file.clone());
    })
    .await;
    let mut body = session_body("+33640000001", "198.51.100.1", 60);
    body["sink"] = serde_json::json!(url);
    assert_eq!(app.create(&body).await.0, 201);
    let got = poll_until(Duration::from_secs(5), || async {
        (received.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    assert!(got.is_some(), "the https sink never received the event");
}

#[tokio::test]
async fn an_untrusted_sink_certificate_is_never_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (_, url, received) = private_ca_sink(dir.path()).await;
    let app = TestApp::spawn_with(fast_retries).await;
    let mut body = session_body("+33640000002", "198.51.100.1", 60);
    body["sink"] = serde_json::json!(url);
    let (_, created) = app.create(&body).await;
    let session = created["sessionId"].as_str().unwrap().to_owned();
    let dead: Option<String> = poll_until(Duration::from_secs(5), || async {
        app.db
            .text(
                "SELECT last_error FROM notifications WHERE session_id = ? AND state = 'dead'",
                &[&session],
            )
            .await
    })
    .await;
    let error = dead.expect("the delivery should have failed for good");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_sink_ca_file_without_certificates_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("bad.pem");
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let mut settings = common::settings_in(dir.path());
    settings.notify.sink_ca_file = Some(ca_file);
    let error = qod::Application::build(settings)
        .await
        .err()
        .expect("build must fail");
    assert!(format!("{error:#}").contains("bad.pem"), "{error:#}");
}
