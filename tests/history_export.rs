//! Recording the inputs that drive the server, and `qod history export`: a real server, a real
//! sink, the simulated network, the `qod` binary reading the database beside the server.

use std::time::Duration;

use qod::recording::format::{self, Line};
use qod::recording::{Input, NetworkAnswer, SinkAnswer};
use serde_json::json;

mod common;
use common::sink::{Behaviour, TestSink};
use common::{TestApp, qod_cli, session_body, status};

const SECRET: &str = "tok-SECRET-4f1c9a";

/// Exports the history of the app's database (all of it, or one session's) and reads it back.
async fn export(app: &TestApp, session: Option<&str>) -> (String, format::Header, Vec<Line>) {
    let out = app.dir.path().join("history.jsonl");
    let db = common::process_database_args(app.dir.path()).await;
    let mut args: Vec<String> = vec!["history".into(), "export".into()];
    args.extend(db[..2].iter().cloned());
    args.extend(["--out".into(), out.display().to_string()]);
    if let Some(s) = session {
        args.extend(["--session".into(), s.to_owned()]);
    }
    let run = qod_cli(&args).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("lines written to"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let (header, lines) = format::read(&text).expect("the export reads back");
    (text, header, lines)
}

fn commands(lines: &[Line]) -> Vec<(String, u16, Option<String>)> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Input {
                session,
                input: Input::Command { op, status, .. },
                ..
            } => Some((op.clone(), status.unwrap_or(0), session.clone())),
            _ => None,
        })
        .collect()
}

/// A session's lines as short words, in order: what a reader of the export sees.
fn story(lines: &[Line], id: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Input {
                session: Some(s),
                input,
                ..
            } if s == id => Some(match input {
                Input::Command { op, status, .. } => format!("{op} {}", status.unwrap_or(0)),
                Input::Network { op, answer } => format!(
                    "network {op} {}",
                    match answer {
                        NetworkAnswer::Granted { .. } => "granted",
                        NetworkAnswer::Released => "released",
                        _ => "failed",
                    }
                ),
                Input::Sink { answer, .. } => format!(
                    "sink {}",
                    if *answer == SinkAnswer::Delivered {
                        "delivered"
                    } else {
                        "other"
                    }
                ),
                Input::Timer { job, .. } => format!("timer {job}"),
                Input::Callback { .. } => "callback".into(),
                Input::Started { .. } => "started".into(),
            }),
            Line::Transition {
                session,
                to,
                reason,
                ..
            } if session == id => Some(format!("{to} {reason}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn commands_answers_and_transitions_are_exported_in_time_order_without_secrets() {
    let sink = TestSink::start().await;
    let app = TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
    })
    .await;
    let mut body = session_body("+33630000001", "198.51.100.20", 1);
    body["sink"] = json!(sink.url("events", Behaviour::Accept));
    body["sinkCredential"] = json!({
        "credentialType": "ACCESSTOKEN", "accessToken": SECRET,
        "accessTokenExpiresUtc": "2099-01-01T00:00:00Z", "accessTokenType": "bearer"
    });
    let (code, created) = app.create(&body).await;
    assert_eq!(code, 201, "{created}");
    let a = created["sessionId"].as_str().unwrap().to_owned();
    let (code, _) = app.create(&body).await;
    assert_eq!(code, 409, "the same flow again overlaps");
    let (_, other) = app
        .create(&session_body("+33630000002", "198.51.100.20", 60))
        .await;
    let c = other["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&c, Duration::from_secs(5), |_, b| status(b) == "AVAILABLE")
        .await;
    let (code, _) = app
        .delete(&format!("/quality-on-demand/v1/sessions/{c}"))
        .await;
    assert_eq!(code, 204);
    sink.wait_delivered("events", 2, Duration::from_secs(10))
        .await;
    // The expiry's release and the deletion's are the last inputs of their sessions.
    let released = |id: String| {
        let db = app.db.clone();
        async move {
            let n = db
                .int(
                    "SELECT COUNT(*) FROM history_inputs WHERE session_id = ? \
                     AND body LIKE '%\"released\"%'",
                    &[&id],
                )
                .await;
            (n == 1).then_some(())
        }
    };
    for id in [&a, &c] {
        common::poll_until(Duration::from_secs(10), || released(id.clone()))
            .await
            .unwrap_or_else(|| panic!("the grant of {id} was never released"));
    }

    let (text, header, lines) = export(&app, None).await;
    assert_eq!((header.format.as_str(), header.version), ("qod-history", 1));
    assert_eq!(header.settings.retention_ms, 60_000);
    assert!(!text.contains(SECRET), "a sink token was exported:\n{text}");
    let times: Vec<i64> = lines.iter().map(Line::at_ms).collect();
    assert!(times.is_sorted(), "lines out of time order: {times:?}");

    // Reads are no commands; a refusal is recorded with its status and no session.
    assert_eq!(
        commands(&lines),
        vec![
            ("create".into(), 201, Some(a.clone())),
            ("create".into(), 409, None),
            ("create".into(), 201, Some(c.clone())),
            ("delete".into(), 204, Some(c.clone())),
        ]
    );
    let create_body = lines
        .iter()
        .find_map(|l| match l {
            Line::Input {
                input: Input::Command { body, .. },
                ..
            } => body.clone(),
            _ => None,
        })
        .unwrap();
    // The stand-in is as long as the secret, so that a replay passes the same checks.
    assert_eq!(
        create_body["sinkCredential"]["accessToken"],
        format!("REDACTED{}", "x".repeat(SECRET.len() - 8))
    );
    assert_eq!(create_body["device"]["phoneNumber"], "+33630000001");

    let mut expired = story(&lines, &a);
    // The release and the second delivery run side by side.
    expired[7..].sort();
    assert_eq!(
        expired,
        [
            "create 201",
            "REQUESTED CREATED",
            "network provision granted",
            "AVAILABLE NETWORK_GRANTED",
            "sink delivered",
            "timer expire_session",
            "UNAVAILABLE DURATION_EXPIRED",
            "network release released",
            "sink delivered",
        ]
        .map(String::from)
        .to_vec(),
        "{text}"
    );
    let deleted = story(&lines, &c);
    for word in [
        "delete 204",
        "UNAVAILABLE DELETE_REQUESTED",
        "network release released",
    ] {
        assert!(deleted.contains(&word.to_owned()), "{word}: {deleted:?}");
    }

    // One session's export holds that session's lines only. Exported a moment later: a timer
    // that fired since (a purge finding nothing left is recorded too) may have added a line.
    let (_, header, only) = export(&app, Some(&c)).await;
    assert_eq!(header.session.as_deref(), Some(c.as_str()));
    let later = story(&only, &c);
    assert!(later.starts_with(&deleted), "{later:?} after {deleted:?}");
    assert_eq!(only.len(), later.len(), "{only:?}");
}

#[tokio::test]
async fn nothing_is_recorded_when_recording_is_off() {
    let app = TestApp::spawn_with(|s| s.record_inputs = false).await;
    let (_, created) = app
        .create(&session_body("+33630000003", "198.51.100.20", 60))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(5), |_, b| status(b) == "AVAILABLE")
        .await;
    let events = app
        .db
        .int(
            "SELECT COUNT(*) FROM session_events WHERE session_id = ?",
            &[&id],
        )
        .await;
    assert_eq!(events, 2, "the transitions are kept");
    let inputs = app.db.int("SELECT COUNT(*) FROM history_inputs", &[]).await;
    assert_eq!(inputs, 0);
}
