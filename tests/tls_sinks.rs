//! Deliveries to an https sink whose certificate comes from a private CA: trusted only when the
//! operator adds that CA with `--sink-ca-file`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use common::{TestApp, poll_until, session_body};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses our certificate fails the handshake: keep listening.
            if let Ok(tls) = self.tls.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A private CA (its PEM) and an https sink on localhost with a certificate it signed; returns
/// the sink URL and its count of received events.
async fn private_ca_sink() -> (String, String, Arc<AtomicUsize>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();

    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
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
    let listener = TlsListener {
        tcp,
        tls: TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (ca_pem, format!("https://localhost:{port}/events"), received)
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
    let (ca_pem, url, received) = private_ca_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("sink-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
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
    let (_, url, received) = private_ca_sink().await;
    let app = TestApp::spawn_with(fast_retries).await;
    let mut body = session_body("+33640000002", "198.51.100.1", 60);
    body["sink"] = serde_json::json!(url);
    let (_, created) = app.create(&body).await;
    let session = created["sessionId"].as_str().unwrap().to_owned();
    let dead: Option<String> = poll_until(Duration::from_secs(5), || async {
        sqlx::query_scalar(
            "SELECT last_error FROM notifications WHERE session_id = ? AND state = 'dead'",
        )
        .bind(&session)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
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
