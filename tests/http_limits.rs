//! Slow and idle clients cannot hold the server: headers and bodies have deadlines, idle
//! kept-alive connections are closed, and the number of connections served at once is capped.

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or `limit` passes); returns what it sent and
/// how long that took.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection was still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

async fn limited(max_connections: usize) -> TestApp {
    TestApp::spawn_with(|s| {
        s.http.header_timeout = Duration::from_secs(1);
        s.http.body_timeout = Duration::from_secs(1);
        s.http.max_connections = max_connections;
    })
    .await
}

#[tokio::test]
async fn a_trickled_header_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let app = limited(64).await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (_, took) = until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );

    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_and_the_connection_closed() {
    let app = limited(64).await;
    let token = app.token.clone().unwrap();
    for (path, auth) in [
        ("/quality-on-demand/v1/sessions", true),
        ("/qod/v0/sessions", true),
        ("/quality-on-demand/v1/sessions", false),
    ] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 10000000\r\n"
        );
        if auth {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n{\"");
        stream.write_all(head.as_bytes()).await.unwrap();
        let (answer, took) = until_closed(&mut stream, Duration::from_secs(5)).await;
        let expected = if auth { "HTTP/1.1 408" } else { "HTTP/1.1 401" };
        assert!(
            answer.starts_with(expected),
            "{path} (auth {auth}): {answer}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
        if path.starts_with("/qod/v0") {
            assert!(
                answer.contains("\"code\":63"),
                "v0's code for 408: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = TestApp::spawn_with(|s| {
        s.http.header_timeout = Duration::from_secs(30);
        s.http.max_connections = 2;
    })
    .await;
    let holders = [
        TcpStream::connect(app.addr).await.unwrap(),
        TcpStream::connect(app.addr).await.unwrap(),
    ];
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let url = app.url("/health/live");
    let refused = probe.get(&url).send().await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_timeout()),
        "a third connection was served: {refused:?}"
    );
    drop(holders);
    let served = common::poll_until(Duration::from_secs(5), || async {
        probe
            .get(&url)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    })
    .await;
    assert_eq!(served, Some(204), "served once the others closed");
}

#[tokio::test]
async fn a_network_callback_with_a_wrong_secret_is_refused_before_its_body_is_read() {
    let app = TestApp::spawn_with(|s| s.http.body_timeout = Duration::from_secs(30)).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /network/v1/callbacks/6f1c2a52-3a2b-4c1d-9e8f-0a1b2c3d4e5f/not-the-secret \
                HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 2000000\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let (answer, took) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "waited for the body: {took:?}"
    );
}
