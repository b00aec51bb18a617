//! No orphans under faults: the orchestrator creates and deletes sessions against a fake NEF
//! that answers slowly (beyond the client timeout), refuses with 429/503, and is killed with
//! SIGKILL and restarted twice mid-storm; once the dust settles, the NEF holds exactly the
//! subscriptions of the AVAILABLE sessions, one each.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::poll_until;
use common::process::start;
use serde_json::{Value, json};

const BEHAVIOUR: &str = r#"
slow_posts = 6
slow_ms = 900
[[faults]]
method = "POST"
status = 429
times = 4
[[faults]]
method = "POST"
status = 503
retry_after_secs = 1
times = 2
[[faults]]
method = "DELETE"
status = 503
times = 4
[[faults]]
method = "GET"
status = 500
times = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_storm_of_timeouts_refusals_kills_and_deletes_the_nef_holds_exactly_the_available_sessions()
 {
    let mut dir = tempfile::tempdir().unwrap();
    dir.disable_cleanup(std::env::var_os("QOD_TEST_KEEP").is_some());
    let behaviour = dir.path().join("behaviour.toml");
    std::fs::write(&behaviour, BEHAVIOUR).unwrap();
    let nef = start(
        &[
            "fake-nef",
            "--listen",
            "127.0.0.1:0",
            "--behaviour",
            behaviour.to_str().unwrap(),
        ],
        &dir.path().join("nef.log"),
    );
    let nef_url = format!("http://{}/3gpp-as-session-with-qos/v1", nef.addr);
    let db_args = common::process_database_args(dir.path()).await;
    let serve = || {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(db_args.iter().map(String::as_str));
        args.extend([
            "--network",
            "nef",
            "--nef-url",
            &nef_url,
            "--nef-scs-as-id",
            "as1",
            "--nef-timeout-ms",
            "400",
            "--client-rate-limit",
            "0",
            "--retention-secs",
            "1",
        ]);
        start(&args, &dir.path().join("qod.log"))
    };
    let token = common::dev_token_in(dir.path());
    let http = common::authorized_builder(Some(&token))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let mut ids: Vec<String> = Vec::new();
    let mut deleted = 0;
    for round in 0..3 {
        let qod = serve();
        let base = format!("http://{}/quality-on-demand/v1", qod.addr);
        for i in 0..10 {
            let n = round * 10 + i;
            // Short sessions expire during the storm; long ones outlive it.
            let duration = if n % 3 == 0 { 2 } else { 600 };
            let body = json!({
                "device": {"ipv4Address": {"publicAddress": "203.0.113.1", "publicPort": 10000 + n}},
                "applicationServer": {"ipv4Address": "198.51.100.1"},
                "qosProfile": "QOS_E",
                "duration": duration,
            });
            let r = http
                .post(format!("{base}/sessions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let created: Value = r.json().await.unwrap();
            ids.push(created["sessionId"].as_str().unwrap().to_owned());
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        // Delete a few, some of which may not be provisioned yet.
        for id in ids.iter().skip(round * 10).step_by(4) {
            let status = http
                .delete(format!("{base}/sessions/{id}"))
                .send()
                .await
                .unwrap()
                .status();
            assert!(status == 204 || status == 404, "{status}");
            deleted += 1;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        // SIGKILL, whatever is in flight.
        drop(qod);
    }
    assert!(deleted >= 6);
    let qod = serve();
    let db = common::TestDb::open(dir.path()).await;
    let last = std::sync::Mutex::new(String::new());
    let settled = poll_until(Duration::from_secs(60), || async {
        let available: BTreeSet<String> = db
            .texts(
                "SELECT id FROM sessions WHERE status = 'AVAILABLE' AND NOT deleted",
                &[],
            )
            .await
            .into_iter()
            .collect();
        let pending = db
            .int(
                "SELECT COUNT(*) FROM sessions WHERE status = 'REQUESTED' \
                 OR grant_state IN ('provisioning', 'releasing')",
                &[],
            )
            .await;
        let held: Vec<Value> = reqwest::get(format!("http://{}/_fake/subscriptions", nef.addr))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let held_sessions: Vec<String> = held
            .iter()
            .filter_map(|s| s["notificationDestination"].as_str())
            .filter_map(|d| {
                d.split("/callbacks/")
                    .nth(1)?
                    .split('/')
                    .next()
                    .map(str::to_owned)
            })
            .collect();
        let unique: BTreeSet<String> = held_sessions.iter().cloned().collect();
        *last.lock().unwrap() =
            format!("pending {pending}\navailable {available:?}\nheld {held_sessions:?}");
        (pending == 0 && unique == available && held_sessions.len() == available.len())
            .then_some((available.len(), held.len()))
    })
    .await;
    let (available, held) = settled.unwrap_or_else(|| {
        panic!(
            "the NEF never held exactly the AVAILABLE sessions; logs in {}\n{}",
            dir.path().display(),
            last.lock().unwrap()
        )
    });
    assert!(
        available >= 5,
        "the storm left some sessions standing ({available})"
    );
    assert_eq!(available, held);
    drop(qod);
}
