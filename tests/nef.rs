//! The orchestrator against the fake NEF, both as real processes on loopback: what the NEF
//! receives (flow rules, references, ids on DELETE), Retry-After, a POST that timed out but
//! created its subscription (adopted, not duplicated), an unknown UE, and no subscription left
//! behind.

mod common;

use std::io::BufRead;
use std::time::Duration;

use common::poll_until;
use common::process::{Process, start};
use serde_json::{Value, json};

struct Setup {
    _dir: tempfile::TempDir,
    nef: Process,
    /// `http://` or `https://` and the fake NEF's address.
    nef_origin: String,
    qod: Process,
    token: String,
    /// Trusts the fake NEF's CA when it serves https.
    http: reqwest::Client,
    /// The server's database arguments, for the CLI.
    db: Vec<String>,
}

/// How to start the pair: the fake NEF's behaviour file, more of the server's configuration
/// file, the server's extra arguments, whether the NEF serves https, and whether the server
/// leaves out the SCS/AS path segment (a vendor variant).
#[derive(Default)]
struct Launch<'a> {
    behaviour: &'a str,
    config: &'a str,
    extra: &'a [&'a str],
    tls: bool,
    no_scs_as_id: bool,
}

fn setup(behaviour: &str, extra: &[&str]) -> Setup {
    launch(Launch {
        behaviour,
        extra,
        ..Launch::default()
    })
}

fn launch(how: Launch) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let behaviour_file = dir.path().join("behaviour.toml");
    std::fs::write(&behaviour_file, how.behaviour).unwrap();
    let config = dir.path().join("qod.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[nef_qos_references]\nQOS_E = [\"qos-e-gold\", \"qos-e-silver\"]\n",
            how.config
        ),
    )
    .unwrap();
    let mut nef_args = vec![
        "fake-nef".to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--behaviour".to_owned(),
        behaviour_file.to_str().unwrap().to_owned(),
    ];
    let mut http = reqwest::Client::builder();
    if how.tls {
        let files = common::tls::private_ca(dir.path());
        for (flag, file) in [("--tls-cert", &files.cert), ("--tls-key", &files.key)] {
            nef_args.push(flag.to_owned());
            nef_args.push(file.to_str().unwrap().to_owned());
        }
        let ca = std::fs::read(&files.ca).unwrap();
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    }
    let nef_args: Vec<&str> = nef_args.iter().map(String::as_str).collect();
    let nef = start(&nef_args, &dir.path().join("nef.log"));
    // The certificate names localhost, not 127.0.0.1.
    let nef_origin = match how.tls {
        true => format!("https://{}", nef.addr.replace("127.0.0.1", "localhost")),
        false => format!("http://{}", nef.addr),
    };
    let nef_url = format!("{nef_origin}/3gpp-as-session-with-qos/v1");
    let db = common::process_database_args_blocking(dir.path());
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend(db.iter().map(String::as_str));
    args.extend([
        "--config",
        config.to_str().unwrap(),
        "--network",
        "nef",
        "--nef-url",
        &nef_url,
        "--client-rate-limit",
        "0",
    ]);
    if !how.no_scs_as_id {
        args.extend(["--nef-scs-as-id", "as1"]);
    }
    // `{nef}` in an extra argument stands for the fake NEF's address; `{dir}` for the folder.
    let extra: Vec<String> = how
        .extra
        .iter()
        .map(|a| {
            a.replace("{nef}", &nef.addr)
                .replace("{dir}", dir.path().to_str().unwrap())
        })
        .collect();
    args.extend(extra.iter().map(String::as_str));
    let mut qod = start(&args, &dir.path().join("qod.log"));
    let mut out = qod.stdout.take().unwrap();
    let mut token = String::new();
    for _ in 0..2 {
        token.clear();
        out.read_line(&mut token).unwrap();
    }
    Setup {
        _dir: dir,
        nef,
        nef_origin,
        qod,
        token: token.trim().to_owned(),
        http: http.build().unwrap(),
        db,
    }
}

impl Setup {
    async fn create(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!(
                "http://{}/quality-on-demand/v1/sessions",
                self.qod.addr
            ))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        common::split(r).await
    }

    async fn session(&self, id: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!(
                "http://{}/quality-on-demand/v1/sessions/{id}",
                self.qod.addr
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        common::split(r).await
    }

    async fn delete(&self, id: &str) -> u16 {
        self.http
            .delete(format!(
                "http://{}/quality-on-demand/v1/sessions/{id}",
                self.qod.addr
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn wait_status(&self, id: &str, want: &str) -> Value {
        poll_until(Duration::from_secs(15), || async {
            let (_, s) = self.session(id).await;
            (s["qosStatus"] == want).then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("session {id} never became {want}"))
    }

    async fn fake(&self, what: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/_fake/{what}", self.nef_origin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn requests(&self, method: &str) -> Vec<Value> {
        self.fake("requests")
            .await
            .into_iter()
            // The reachability check at start (and /health/network) is no session's request.
            .filter(|r| {
                r["method"] == method
                    && !r["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("/qod-reachability-check"))
            })
            .collect()
    }
}

fn body(device: Value) -> Value {
    json!({
        "device": device,
        "applicationServer": {"ipv4Address": "198.51.100.0/24", "ipv6Address": "2001:db8::/48"},
        "devicePorts": {"ranges": [{"from": 5000, "to": 5010}], "ports": [5060]},
        "applicationServerPorts": {"ports": [443]},
        "qosProfile": "QOS_E",
        "duration": 120,
    })
}

#[tokio::test]
async fn a_session_becomes_a_nef_subscription_with_exact_rules_and_is_deleted_by_its_nef_id() {
    let s = setup("", &[]);
    let (code, created) = s
        .create(&body(
            json!({"ipv4Address": {"publicAddress": "203.0.113.5", "privateAddress": "10.0.0.7"}}),
        ))
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;

    let held = s.fake("subscriptions").await;
    assert_eq!(held.len(), 1);
    let sub = &held[0];
    assert_eq!(sub["ueIpv4Addr"], "10.0.0.7");
    assert_eq!(sub["qosReference"], "qos-e-gold");
    assert_eq!(sub["altQoSReferences"], json!(["qos-e-silver"]));
    assert_eq!(
        sub["flowInfo"],
        json!([{"flowId": 1, "flowDescriptions": [
            "permit in ip from 10.0.0.7 5000-5010,5060 to 198.51.100.0/24 443",
            "permit out ip from 198.51.100.0/24 443 to 10.0.0.7 5000-5010,5060",
        ]}]),
        "an IPv4 UE gets the IPv4 flow only"
    );
    let destination = sub["notificationDestination"].as_str().unwrap();
    assert!(
        destination.starts_with(&format!("http://{}/network/v1/callbacks/{id}/", s.qod.addr)),
        "{destination}"
    );
    let qos_duration = sub["qosDuration"].as_i64().unwrap();
    assert!((118..=120).contains(&qos_duration), "{qos_duration}");
    s.wait_metric("qod_network_grants{state=\"granted\"} 1")
        .await;
    assert!(
        s.metrics()
            .await
            .contains("qod_sessions{profile=\"QOS_E\",status=\"AVAILABLE\"} 1")
    );

    assert_eq!(s.delete(&id).await, 204);
    let nef_id = sub["self"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    poll_until(Duration::from_secs(10), || async {
        s.fake("subscriptions").await.is_empty().then_some(())
    })
    .await
    .expect("the subscription is deleted");
    // The gauges come from a census reused for a second: wait for one taken after the release.
    s.wait_metric("qod_network_grants{state=\"granted\"} 0")
        .await;
    assert!(
        s.metrics()
            .await
            .contains("qod_network_grants{state=\"releasing\"} 0")
    );
    let deletes = s.requests("DELETE").await;
    assert_eq!(deletes.len(), 1);
    assert!(
        deletes[0]["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/subscriptions/{nef_id}")),
        "DELETE names the NEF's subscription id, not the session id: {}",
        deletes[0]["path"]
    );
    assert_ne!(nef_id, id);
    // Nothing renewed a grant that covers the whole session.
    assert!(s.requests("PATCH").await.is_empty());
    assert!(
        s.requests("GET").await.is_empty(),
        "a grant made at the first attempt is released without listing subscriptions"
    );
}

#[tokio::test]
async fn a_busy_nef_is_asked_again_only_after_its_retry_after() {
    let s = setup(
        "[[faults]]\nmethod = \"POST\"\nstatus = 503\nretry_after_secs = 1\ntimes = 2\n",
        &[],
    );
    let (_, created) = s
        .create(&body(json!({"phoneNumber": "+33612340001"})))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    let posts = s.requests("POST").await;
    assert_eq!(posts.len(), 3, "two refusals, then the creation");
    for pair in posts.windows(2) {
        let gap = pair[1]["at_ms"].as_u64().unwrap() - pair[0]["at_ms"].as_u64().unwrap();
        assert!(
            gap >= 950,
            "asked again after {gap} ms despite Retry-After: 1"
        );
    }
    let sub = &s.fake("subscriptions").await[0];
    assert_eq!(sub["gpsi"], "msisdn-33612340001");
    assert_eq!(
        sub["flowInfo"].as_array().unwrap().len(),
        2,
        "one flow per server family"
    );
}

#[tokio::test]
async fn a_post_that_timed_out_but_created_its_subscription_is_adopted_not_duplicated() {
    let s = setup(
        "slow_posts = 1\nslow_ms = 1500\n",
        &["--nef-timeout-ms", "400"],
    );
    let (_, created) = s
        .create(&body(
            json!({"ipv4Address": {"publicAddress": "203.0.113.9", "publicPort": 40000}}),
        ))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    assert_eq!(
        s.fake("subscriptions").await.len(),
        1,
        "no second subscription"
    );
    assert_eq!(
        s.requests("POST").await.len(),
        1,
        "the retry looked before creating"
    );
    let lists = s.requests("GET").await.len();
    assert!(lists > 0, "the retry listed the UE's subscriptions");
    assert_eq!(s.delete(&id).await, 204);
    poll_until(Duration::from_secs(10), || async {
        s.fake("subscriptions").await.is_empty().then_some(())
    })
    .await
    .expect("released");
    assert!(
        s.requests("GET").await.len() > lists,
        "after a lost outcome the release searches for strays as well"
    );
}

#[tokio::test]
async fn a_subscription_created_after_the_client_gave_up_is_found_and_deleted_on_release() {
    // The first POST times out; the NEF creates its subscription only later, after the retry
    // looked, found nothing and created a second one.
    let s = setup(
        "slow_posts = 1\nslow_ms = 3000\nslow_posts_create_late = true\n",
        &["--nef-timeout-ms", "400"],
    );
    let id = s.create_for("+33612340015").await;
    s.wait_status(&id, "AVAILABLE").await;
    poll_until(Duration::from_secs(10), || async {
        (s.fake("subscriptions").await.len() == 2).then_some(())
    })
    .await
    .expect("the late subscription appears beside the one in use");
    assert_eq!(s.requests("POST").await.len(), 2);
    assert_eq!(s.session(&id).await.1["qosStatus"], "AVAILABLE");
    assert_eq!(s.delete(&id).await, 204);
    poll_until(Duration::from_secs(10), || async {
        s.fake("subscriptions").await.is_empty().then_some(())
    })
    .await
    .expect("both subscriptions are deleted, the stray found by its callback path");
}

#[tokio::test]
async fn an_unknown_ue_ends_the_session_as_network_terminated_and_leaves_nothing() {
    let s = setup("unknown_ues = [\"10.1.1.1\"]\n", &[]);
    let (_, created) = s
        .create(&body(
            json!({"ipv4Address": {"publicAddress": "203.0.113.1", "privateAddress": "10.1.1.1"}}),
        ))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let ended = s.wait_status(&id, "UNAVAILABLE").await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    assert!(s.fake("subscriptions").await.is_empty());
}

impl Setup {
    async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.qod.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the server's metrics contain `line`.
    async fn wait_metric(&self, line: &str) {
        poll_until(Duration::from_secs(10), || async {
            self.metrics().await.contains(line).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("metric never showed {line}"));
    }

    async fn available_subscription(&self) -> (String, Value) {
        let (_, created) = self
            .create(&body(json!({"phoneNumber": "+33612349999"})))
            .await;
        let id = created["sessionId"].as_str().unwrap().to_owned();
        self.wait_status(&id, "AVAILABLE").await;
        let sub = self.fake("subscriptions").await.remove(0);
        (id, sub)
    }
}

fn nef_id(subscription: &Value) -> String {
    subscription["self"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_session_termination_from_the_network_ends_the_session_within_a_second() {
    let sink = common::sink::TestSink::start().await;
    let s = setup("", &["--allow-insecure-sinks", "--allow-private-sinks"]);
    let mut with_sink = body(json!({"phoneNumber": "+33612340016"}));
    with_sink["sink"] = json!(sink.url("events", common::sink::Behaviour::Accept));
    let (_, created) = s.create(&with_sink).await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    let sub = s.subscription_of(&id).await;
    let started = std::time::Instant::now();
    let r = s
        .http
        .post(format!("{}/_fake/terminate/{}", s.nef_origin, nef_id(&sub)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let ended = s.wait_status(&id, "UNAVAILABLE").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    // The consumer hears of it at once, not at the end of a retention period.
    let delivered = sink
        .wait_delivered("events", 2, Duration::from_secs(5))
        .await;
    let last = &delivered[1].body["data"];
    assert_eq!(last["qosStatus"], "UNAVAILABLE", "{last}");
    assert_eq!(last["statusInfo"], "NETWORK_TERMINATED");
    eprintln!(
        "termination to consumer notification: {:?}",
        started.elapsed()
    );
    // The subscription is deleted all the same, and the session stays readable for now.
    poll_until(Duration::from_secs(10), || async {
        s.fake("subscriptions").await.is_empty().then_some(())
    })
    .await
    .expect("released");
    assert_eq!(s.session(&id).await.0, 200);
    // Recorded with the NEF's callback, replayed as it happened.
    let history = s._dir.path().join("history.jsonl");
    let mut export = vec!["history", "export", "--out", history.to_str().unwrap()];
    // The store's URL only: the export opens no sealed secrets.
    export.extend(s.db[..2].iter().map(String::as_str));
    let exported = common::qod_cli(&export).await;
    assert!(exported.status.success(), "{exported:?}");
    let text = std::fs::read_to_string(&history).unwrap();
    assert!(text.contains(r#""input":"callback""#), "{text}");
    let replayed = common::qod_cli(&["replay", history.to_str().unwrap(), "--json"]).await;
    let report: Value = serde_json::from_slice(&replayed.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&replayed.stderr));
    });
    assert!(replayed.status.success(), "{report:#}");
    assert_eq!(report["divergences"], json!([]), "{report:#}");
    assert!(
        report["transitions_produced"].as_u64() > Some(2),
        "{report:#}"
    );
}

#[tokio::test]
async fn an_allocation_event_before_the_posts_answer_confirms_the_session_once() {
    let s = setup(
        "allocation_delay_ms = 0\nearly_events = true\nduplicate_events = true\nslow_posts = 1\nslow_ms = 700\n",
        &[],
    );
    let (_, created) = s
        .create(&body(json!({"phoneNumber": "+33612340002"})))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    s.wait_metric("qod_jobs_total{outcome=\"succeeded\",queue=\"provision_session\"} 1")
        .await;
    s.wait_metric("qod_network_events_total{event=\"SUCCESSFUL_RESOURCES_ALLOCATION\"} 2")
        .await;
    assert_eq!(s.fake("subscriptions").await.len(), 1);
    assert!(
        s.requests("DELETE").await.is_empty(),
        "the 201 after the event released nothing"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("qod_session_transitions_total{from=\"REQUESTED\",reason=\"NETWORK_GRANTED\",to=\"AVAILABLE\"} 1"),
        "one transition to AVAILABLE: {metrics}"
    );
}

#[tokio::test]
async fn callbacks_record_qos_events_count_unknown_ones_and_refuse_wrong_secrets() {
    let s = setup("", &[]);
    let (id, sub) = s.available_subscription().await;
    let url = sub["notificationDestination"].as_str().unwrap().to_owned();
    let post = |url: String, body: Value| {
        let http = s.http.clone();
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let report =
        |event: &str| json!({"transaction": sub["self"], "eventReports": [{"event": event}]});
    assert_eq!(post(url.clone(), report("QOS_NOT_GUARANTEED")).await, 204);
    assert_eq!(post(url.clone(), report("SOMETHING_NEW")).await, 204);
    assert_eq!(
        post(url.clone(), json!({"subscription": sub["self"]})).await,
        204
    );
    assert_eq!(post(url.clone(), json!({"nonsense": true})).await, 400);
    let forged = format!("{}{}", &url[..url.len() - 4], "0000");
    assert_eq!(post(forged, report("SESSION_TERMINATION")).await, 404);
    s.wait_metric("qod_session_transitions_total{from=\"AVAILABLE\",reason=\"QOS_NOT_GUARANTEED\",to=\"AVAILABLE\"} 1")
        .await;
    let metrics = s.metrics().await;
    for line in [
        "qod_network_events_total{event=\"QOS_NOT_GUARANTEED\"} 1",
        "qod_network_events_total{event=\"OTHER\"} 1",
        "qod_network_events_total{event=\"TEST\"} 1",
        "qod_network_events_total{event=\"REFUSED\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}");
    }
    // The forged termination changed nothing.
    assert_eq!(s.session(&id).await.1["qosStatus"], "AVAILABLE");
}

#[tokio::test]
async fn long_sessions_renew_their_grant_with_a_merge_patch_and_one_cached_oauth_token() {
    let s = setup(
        "require_token = \"nef-access-token\"\n",
        &[
            "--grant-lifetime",
            "2s",
            "--nef-token-url",
            "http://{nef}/oauth/token",
            "--nef-client-id",
            "qod",
            "--nef-client-secret-file",
            "{dir}/qod.toml",
            "--nef-scope",
            "qos write",
        ],
    );
    let (_, created) = s
        .create(&body(json!({"phoneNumber": "+33612340003"})))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    let sub = &s.fake("subscriptions").await[0];
    assert_eq!(sub["qosDuration"], 2, "the grant asked for is one lifetime");
    let patches = poll_until(Duration::from_secs(10), || async {
        let p = s.requests("PATCH").await;
        (p.len() >= 2).then_some(p)
    })
    .await
    .expect("the grant is renewed, again and again");
    for patch in &patches {
        assert!(patch["path"].as_str().unwrap().ends_with(&nef_id(sub)));
        assert_eq!(patch["body"]["qosDuration"], 2, "{patch}");
        assert_eq!(
            patch["body"].as_object().unwrap().len(),
            1,
            "a merge patch of the lifetime alone"
        );
    }
    assert_eq!(s.session(&id).await.1["qosStatus"], "AVAILABLE");
    let tokens = s.requests("TOKEN").await;
    assert_eq!(tokens.len(), 1, "one token for every call: {tokens:?}");
    assert_eq!(tokens[0]["body"]["basic_auth"], true);
    assert_eq!(
        tokens[0]["body"]["form"],
        json!({"grant_type": "client_credentials", "scope": "qos write"}),
        "the form reached the token endpoint decoded as sent"
    );
}

#[tokio::test]
async fn a_nef_that_restarted_and_forgot_the_subscription_ends_the_session_at_its_next_renewal() {
    // The fake NEF keeps its subscriptions in memory: a restart on the same port forgets them.
    let s = setup("", &["--grant-lifetime", "2s"]);
    let (_, created) = s
        .create(&body(json!({"phoneNumber": "+33612340004"})))
        .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    let Setup {
        _dir: dir,
        nef,
        nef_origin,
        qod,
        token,
        http,
        db,
    } = s;
    let port = nef.addr.clone();
    drop(nef);
    let restarted = start(
        &["fake-nef", "--listen", &port],
        &dir.path().join("nef-restarted.log"),
    );
    let s = Setup {
        _dir: dir,
        nef: restarted,
        nef_origin,
        qod,
        token,
        http,
        db,
    };
    let ended = s.wait_status(&id, "UNAVAILABLE").await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    let patches = s.requests("PATCH").await;
    assert!(
        !patches.is_empty(),
        "the renewal found the subscription gone"
    );
    assert!(s.fake("subscriptions").await.is_empty());
}

#[tokio::test]
async fn a_nef_without_the_scs_as_segment_is_a_setting_not_a_fork() {
    let s = launch(Launch {
        no_scs_as_id: true,
        ..Launch::default()
    });
    let (code, created) = s
        .create(&body(json!({"ipv6Address": "2001:db8:5::1"})))
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    let held = s.subscription_of(&id).await;
    let own = held["self"].as_str().unwrap().to_owned();
    assert!(own.contains("/v1/subscriptions/"), "{own}");
    assert_eq!(held["ueIpv6Addr"], "2001:db8:5::1");
    assert_eq!(
        held["flowInfo"][0]["flowDescriptions"][0],
        "permit in ip from 2001:db8:5::1 5000-5010,5060 to 2001:db8::/48 443"
    );
    assert_eq!(s.delete(&id).await, 204);
    poll_until(Duration::from_secs(10), || async {
        s.fake("subscriptions").await.is_empty().then_some(())
    })
    .await
    .expect("released at the variant's path");
}

impl Setup {
    /// The subscription the fake NEF holds for session `id`.
    async fn subscription_of(&self, id: &str) -> Value {
        self.fake("subscriptions")
            .await
            .into_iter()
            .find(|s| {
                s["notificationDestination"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("/{id}/")))
            })
            .unwrap_or_else(|| panic!("no subscription for {id}"))
    }

    /// Has the fake NEF post `event` for the subscription of session `id`.
    async fn network_event(&self, id: &str, event: &str) {
        let nef = nef_id(&self.subscription_of(id).await);
        let r = self
            .http
            .post(format!("{}/_fake/event/{nef}/{event}", self.nef_origin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    async fn create_for(&self, phone: &str) -> String {
        let (code, created) = self.create(&body(json!({ "phoneNumber": phone }))).await;
        assert_eq!(code, 201, "{created}");
        created["sessionId"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn with_await_allocation_a_201_confirms_nothing_until_the_networks_event() {
    let s = setup(
        "",
        &["--nef-await-allocation", "--provision-timeout-secs", "6"],
    );
    // Created first, so its provisioning deadline is the first to pass.
    let never = s.create_for("+33612340010").await;
    let confirmed = s.create_for("+33612340011").await;
    let failed = s.create_for("+33612340012").await;
    s.wait_metric("qod_jobs_total{outcome=\"succeeded\",queue=\"provision_session\"} 3")
        .await;
    for id in [&never, &confirmed, &failed] {
        assert_eq!(
            s.session(id).await.1["qosStatus"],
            "REQUESTED",
            "the NEF's 201 alone made {id} nothing more"
        );
    }

    s.network_event(&confirmed, "SUCCESSFUL_RESOURCES_ALLOCATION")
        .await;
    let available = s.wait_status(&confirmed, "AVAILABLE").await;
    assert!(available["startedAt"].is_string());

    s.network_event(&failed, "FAILED_RESOURCES_ALLOCATION")
        .await;
    let ended = s.wait_status(&failed, "UNAVAILABLE").await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    assert_eq!(
        s.session(&never).await.1["qosStatus"],
        "REQUESTED",
        "the failure event ended its session, not the deadline (an earlier session's is still ahead)"
    );

    let timed_out = s.wait_status(&never, "UNAVAILABLE").await;
    assert_eq!(timed_out["statusInfo"], "NETWORK_TERMINATED");
    let held = poll_until(Duration::from_secs(10), || async {
        let held = s.fake("subscriptions").await;
        (held.len() == 1).then_some(held)
    })
    .await
    .expect("the unconfirmed and the failed subscriptions are deleted");
    assert!(
        held[0]["notificationDestination"]
            .as_str()
            .unwrap()
            .contains(&confirmed)
    );
}

#[tokio::test]
async fn fields_a_nef_requires_come_from_configuration_and_a_test_notification_is_asked_for() {
    let s = launch(Launch {
        behaviour: "required_fields = [\"dnn\", \"snssai\"]\n",
        config: "nef_request_test_notification = true\n\
                 [nef_subscription_fields]\ndnn = \"internet\"\nsnssai = { sst = 1, sd = \"000001\" }\n",
        ..Launch::default()
    });
    let (_, sub) = s.available_subscription().await;
    assert_eq!(sub["dnn"], "internet");
    assert_eq!(sub["snssai"], json!({"sst": 1, "sd": "000001"}));
    assert_eq!(sub["requestTestNotification"], true);
    s.wait_metric("qod_network_events_total{event=\"TEST\"} 1")
        .await;
}

#[tokio::test]
async fn a_nef_behind_a_private_ca_is_reached_over_https_once_the_ca_is_trusted() {
    let s = launch(Launch {
        tls: true,
        extra: &["--nef-ca-file", "{dir}/ca.pem"],
        ..Launch::default()
    });
    let (id, sub) = s.available_subscription().await;
    assert!(
        sub["self"]
            .as_str()
            .unwrap()
            .starts_with("https://localhost:"),
        "{sub}"
    );
    assert_eq!(s.delete(&id).await, 204);
    poll_until(Duration::from_secs(10), || async {
        s.fake("subscriptions").await.is_empty().then_some(())
    })
    .await
    .expect("deleted over https");
}

#[tokio::test]
async fn a_nef_certificate_from_an_untrusted_ca_is_never_accepted() {
    let s = launch(Launch {
        tls: true,
        extra: &["--provision-timeout-secs", "2"],
        ..Launch::default()
    });
    let id = s.create_for("+33612340013").await;
    let ended = s.wait_status(&id, "UNAVAILABLE").await;
    assert_eq!(ended["statusInfo"], "NETWORK_TERMINATED");
    assert!(
        s.fake("requests").await.is_empty(),
        "no request got past the handshake"
    );
}

#[tokio::test]
async fn a_grant_confirmed_by_an_early_event_is_renewed_like_any_other() {
    // The allocation event arrives before the POST's answer: the lease is still the one grant
    // lifetime asked for, not the whole session.
    let s = setup(
        "allocation_delay_ms = 0\nearly_events = true\n",
        &["--grant-lifetime", "2s"],
    );
    let id = s.create_for("+33612340014").await;
    s.wait_status(&id, "AVAILABLE").await;
    let patches = poll_until(Duration::from_secs(10), || async {
        let p = s.requests("PATCH").await;
        (!p.is_empty()).then_some(p)
    })
    .await
    .expect("the grant is renewed before its lifetime ends");
    assert_eq!(patches[0]["body"]["qosDuration"], 2);
    assert_eq!(s.session(&id).await.1["qosStatus"], "AVAILABLE");
}

#[tokio::test]
async fn extending_a_session_past_its_grant_renews_the_subscription_to_the_new_end() {
    // 3 s fit one 4 s grant; extended to 7 s, the grant must be renewed once.
    let s = setup("", &["--grant-lifetime", "4s"]);
    let mut short = body(json!({"phoneNumber": "+33612340017"}));
    short["duration"] = json!(3);
    let (_, created) = s.create(&short).await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    assert_eq!(s.subscription_of(&id).await["qosDuration"], 3);
    let r = s
        .http
        .post(format!(
            "http://{}/quality-on-demand/v1/sessions/{id}/extend",
            s.qod.addr
        ))
        .bearer_auth(&s.token)
        .json(&json!({"requestedAdditionalDuration": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patches = poll_until(Duration::from_secs(8), || async {
        let p = s.requests("PATCH").await;
        (!p.is_empty()).then_some(p)
    })
    .await
    .expect("the grant is renewed towards the new end");
    let asked = patches[0]["body"]["qosDuration"].as_i64().unwrap();
    assert!((1..=4).contains(&asked), "{asked}");
    let ended = s.wait_status(&id, "UNAVAILABLE").await;
    assert_eq!(ended["statusInfo"], "DURATION_EXPIRED");
    poll_until(Duration::from_secs(10), || async {
        s.fake("subscriptions").await.is_empty().then_some(())
    })
    .await
    .expect("released at the end");
}

async fn network_health(http: &reqwest::Client, qod: &str) -> u16 {
    http.get(format!("http://{qod}/health/network"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_unreachable_nef_is_said_at_start_in_health_and_in_warnings_with_the_cause() {
    let s = setup("", &[]);
    assert_eq!(network_health(&s.http, &s.qod.addr).await, 204);

    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!(
        "http://{}/3gpp-as-session-with-qos/v1",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let db = common::process_database_args(dir.path()).await;
    let log = dir.path().join("qod.log");
    // --nef-url alone means the NEF.
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend(db.iter().map(String::as_str));
    args.extend(["--nef-url", &nowhere]);
    let mut qod = start(&args, &log);
    let mut out = qod.stdout.take().unwrap();
    let mut token = String::new();
    for _ in 0..2 {
        token.clear();
        out.read_line(&mut token).unwrap();
    }
    assert_eq!(network_health(&s.http, &qod.addr).await, 503);
    let created = s
        .http
        .post(format!("http://{}/quality-on-demand/v1/sessions", qod.addr))
        .bearer_auth(token.trim())
        .json(&body(json!({"phoneNumber": "+33612340001"})))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status().as_u16(),
        201,
        "accepted while the NEF is away"
    );
    let warned = poll_until(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let start = text
            .lines()
            .any(|l| l.contains("WARN") && l.contains("the NEF cannot be used now"));
        let retry = text.lines().find(|l| {
            l.contains("WARN") && l.contains("provision_session") && l.contains("job failed")
        });
        (start && retry.is_some()).then(|| retry.unwrap().to_owned())
    })
    .await
    .expect("a WARN at start and one for the failed provisioning");
    assert!(
        warned.to_lowercase().contains("connection refused"),
        "the cause is named: {warned}"
    );
}

#[tokio::test]
async fn a_phone_number_with_the_devices_address_keeps_the_address_in_the_flow_rules() {
    let s = setup("", &[]);
    let (code, created) = s
        .create(&body(json!({
            "phoneNumber": "+33612340002",
            "ipv4Address": {"publicAddress": "203.0.113.5", "privateAddress": "10.0.0.8"},
        })))
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["device"],
        json!({"phoneNumber": "+33612340002"}),
        "the session keeps one identifier"
    );
    let id = created["sessionId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "AVAILABLE").await;
    let held = s.fake("subscriptions").await;
    let sub = &held[0];
    assert_eq!(sub["gpsi"], "msisdn-33612340002");
    assert_eq!(
        sub["flowInfo"][0]["flowDescriptions"],
        json!([
            "permit in ip from 10.0.0.8 5000-5010,5060 to 198.51.100.0/24 443",
            "permit out ip from 198.51.100.0/24 443 to 10.0.0.8 5000-5010,5060",
        ]),
        "{sub}"
    );
    assert_eq!(
        sub["flowInfo"][1]["flowDescriptions"][0],
        "permit in ip from any 5000-5010,5060 to 2001:db8::/48 443",
        "no IPv6 address was given: {sub}"
    );
}
