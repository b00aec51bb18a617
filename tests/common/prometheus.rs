//! Debian's Prometheus and Alertmanager (unpacked by `scripts/prometheus-tools`, found through
//! `QOD_PROMETHEUS` and `QOD_ALERTMANAGER`) as child processes on loopback, and the calls of
//! their HTTP APIs that the tests make.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The two binaries, or `None` (with a line on stderr) where the test command did not set them.
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    let found = std::env::var_os("QOD_PROMETHEUS")
        .zip(std::env::var_os("QOD_ALERTMANAGER"))
        .map(|(p, a)| (PathBuf::from(p), PathBuf::from(a)));
    if found.is_none() {
        eprintln!(
            "skipped: QOD_PROMETHEUS and QOD_ALERTMANAGER are not set (scripts/test-all sets them)"
        );
    }
    found
}

/// A loopback port nobody listens on at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A daemon; killed when dropped, its log kept in its folder.
pub struct Daemon {
    child: Child,
    pub url: String,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    async fn start(bin: &Path, args: Vec<String>, port: u16, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()));
        let mut daemon = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{} exited ({status}): {}", bin.display(), daemon.log_text());
            }
            let ready = daemon
                .http
                .get(format!("{}/-/ready", daemon.url))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return daemon;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} not ready in 30 s: {}",
                bin.display(),
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .expect("the API answers")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// An instant query's result vector, or the error Prometheus gave.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self.get("/api/v1/query", &[("query", expr)]).await;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        match v["data"]["resultType"].as_str() {
            Some("vector") => Ok(v["data"]["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![serde_json::json!({"value": v["data"]["result"]})]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// The values of `label` over the series `matcher` selects (Grafana's `label_values`).
    pub async fn label_values(&self, label: &str, matcher: &str) -> Vec<String> {
        let v = self
            .get(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", matcher)],
            )
            .await;
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every rule Prometheus loaded, with its health and last error.
    pub async fn rules(&self) -> Vec<Value> {
        let v = self.get("/api/v1/rules", &[]).await;
        v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// How many scrapes of `job` have succeeded so far (0 until the first).
    pub async fn scrapes(&self, job: &str) -> usize {
        let v = self
            .query(&format!("count_over_time(up{{job=\"{job}\"}}[1h])"))
            .await;
        v.ok()
            .and_then(|r| r.first().cloned())
            .and_then(|s| s["value"][1].as_str().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }

    /// The alerts Alertmanager holds: (alertname, labels).
    pub async fn received_alerts(&self) -> Vec<(String, Value)> {
        let v = self.get("/api/v2/alerts", &[]).await;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}

/// Prometheus on a free port with `config` (YAML) in `dir`.
pub async fn prometheus(bin: &Path, dir: &Path, config: &str) -> Daemon {
    let port = free_port();
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    let args = vec![
        format!("--config.file={}", file.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".into(),
    ];
    Daemon::start(bin, args, port, dir.join("prometheus.log")).await
}

/// Alertmanager on a free port with `config` (YAML) in `dir`, clustering off.
pub async fn alertmanager(bin: &Path, dir: &Path, config: &str) -> Daemon {
    let port = free_port();
    let file = dir.join("alertmanager.yml");
    std::fs::write(&file, config).unwrap();
    let args = vec![
        format!("--config.file={}", file.display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".into(),
        "--log.level=warn".into(),
    ];
    Daemon::start(bin, args, port, dir.join("alertmanager.log")).await
}

/// A scrape and rule configuration for one qod node at `target`, every second.
pub fn config(target: &str, rules: &Path, alertmanager: Option<&str>, drill: &str) -> String {
    let alerting = alertmanager
        .map(|am| {
            format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\n",
                am.trim_start_matches("http://")
            )
        })
        .unwrap_or_default();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  external_labels:\n    drill: {drill}\n\
         rule_files:\n  - {}\n{alerting}\
         scrape_configs:\n  - job_name: qod\n    static_configs:\n      - targets: ['{target}']\n",
        rules.display()
    )
}
