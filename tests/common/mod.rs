//! Test harness: the real application on port 0 with a temporary SQLite file, or with a
//! fresh PostgreSQL database when `QOD_TEST_BACKEND=postgres` (the test command runs the
//! black-box tests once per backend).
#![allow(dead_code)]

pub mod contract;
pub mod db;
pub mod pg;
pub mod process;
pub mod prometheus;
pub mod promql;
pub mod sink;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qod::network::simulated::SimulatedNetwork;
use qod::{Application, Settings};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use db::{TestDb, postgres_backend};

pub struct TestApp {
    pub addr: SocketAddr,
    /// Sends the development token with every request (when the server has one).
    pub client: reqwest::Client,
    /// The development token (client `dev-client`, every scope).
    pub token: Option<String>,
    /// The server's database, on either backend.
    pub db: TestDb,
    /// The SQLite store's writer (None on PostgreSQL).
    pub writer: Option<qod::store::writer::Writer>,
    pub network: Arc<SimulatedNetwork>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Default settings on a database in `dir`; the request rate limit is off (tests of limits set
/// their own), authentication is the development mode.
pub fn settings_in(dir: &std::path::Path) -> Settings {
    let url = format!("sqlite://{}", dir.join("qod.db").display());
    let mut settings = Settings::for_database(url).expect("default settings load");
    settings.auth.rate_per_second = 0;
    settings
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = settings_in(dir.path());
        configure(&mut settings);
        Self::spawn_in(dir, settings).await
    }

    pub async fn spawn_in(dir: tempfile::TempDir, settings: Settings) -> Self {
        Self::spawn_on(dir, settings, qod::Ports::system()).await
    }

    /// A server on the given clock and randomness (a virtual clock, a seed).
    pub async fn spawn_on(
        dir: tempfile::TempDir,
        mut settings: Settings,
        ports: qod::Ports,
    ) -> Self {
        on_test_backend(dir.path(), &mut settings).await;
        if let Ok(filter) = std::env::var("QOD_TEST_LOG") {
            // Post-mortem mode: the in-process server logs to the test's stderr.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let app = Application::build_with(settings, ports)
            .await
            .expect("application builds");
        let addr = app.local_addr();
        let token = app.dev_token().map(str::to_owned);
        let (db, writer) = match app.sqlite() {
            Some(sqlite) => (
                TestDb::Sqlite(sqlite.pool().clone()),
                Some(sqlite.writer().clone()),
            ),
            None => (
                TestDb::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(2)
                        .connect(&settings_url(dir.path()))
                        .await
                        .expect("the test database answers"),
                ),
                None,
            ),
        };
        let network = app.simulated_network();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            client: authorized_client(token.as_deref()),
            token,
            db,
            writer,
            network,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and returns its temp dir for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task joins")
                .expect("server exits cleanly");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// A token signed with this server's development key.
    pub fn mint(&self, client: &str, scopes: &[&str], device_phone: Option<&str>) -> String {
        mint_in(self.dir.path(), client, scopes, device_phone)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent");
        split(r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        split(r).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("request sent");
        split(r).await
    }

    pub async fn create(&self, body: &Value) -> (u16, Value) {
        self.post("/quality-on-demand/v1/sessions", body).await
    }

    pub async fn session(&self, id: &str) -> (u16, Value) {
        self.get(&format!("/quality-on-demand/v1/sessions/{id}"))
            .await
    }

    /// Polls the session until `pred` holds on its body (or it is gone, if `pred` accepts 404).
    pub async fn wait_for_session(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(u16, &Value) -> bool,
    ) -> (u16, Value) {
        poll_until(timeout, || async {
            let (code, body) = self.session(id).await;
            pred(code, &body).then_some((code, body))
        })
        .await
        .unwrap_or_else(|| {
            panic!("session {id} did not reach the expected state within {timeout:?}")
        })
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request sent");
        r.text().await.expect("metrics body")
    }

    pub async fn active_grants(&self) -> i64 {
        self.network.active_grants().await.expect("ledger readable")
    }

    pub async fn scalar(&self, sql: &'static str) -> i64 {
        self.db.int(sql, &[]).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The file in a test's folder that names its PostgreSQL database (kept for restarts).
fn url_file(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("postgres-url")
}

fn settings_url(dir: &std::path::Path) -> String {
    std::fs::read_to_string(url_file(dir)).expect("the test's database URL")
}

/// On the PostgreSQL backend, moves settings that name the test folder's SQLite file to the
/// test's own database (created at its first start, reused by restarts), with the keys kept in
/// the folder where the SQLite store keeps them, so that tokens minted for the folder work.
pub async fn on_test_backend(dir: &std::path::Path, settings: &mut Settings) {
    let sqlite_here = format!("sqlite://{}", dir.join("qod.db").display());
    if !postgres_backend() || settings.database_url != sqlite_here {
        return;
    }
    let url = match std::fs::read_to_string(url_file(dir)) {
        Ok(url) => url,
        Err(_) => {
            let admin = pg::admin_url("black-box test")
                .unwrap_or_else(|| panic!("QOD_TEST_BACKEND=postgres needs {}", pg::URL_VAR));
            let url = pg::create_database(&admin).await;
            std::fs::write(url_file(dir), &url).expect("URL kept");
            url
        }
    };
    for (file, slot) in [
        ("qod.key", &mut settings.sealing_key_file),
        ("qod.dev-signing.key", &mut settings.dev_signing_key_file),
    ] {
        let path = dir.join(file);
        qod::secrets::key_file(&path, "test").expect("key file");
        slot.get_or_insert(path);
    }
    settings.database_url = url;
}

/// The flags that give a `qod serve` process the test folder's database on the test backend
/// (the SQLite file in `dir`, or the test's PostgreSQL database with its key files).
pub async fn process_database_args(dir: &std::path::Path) -> Vec<String> {
    let mut settings = settings_in(dir);
    on_test_backend(dir, &mut settings).await;
    let mut args = vec!["--database-url".to_owned(), settings.database_url];
    for (flag, file) in [
        ("--sealing-key-file", settings.sealing_key_file),
        ("--dev-signing-key-file", settings.dev_signing_key_file),
    ] {
        if let Some(file) = file {
            args.extend([flag.to_owned(), file.display().to_string()]);
        }
    }
    args
}

/// `process_database_args` for code outside the runtime (it runs on a thread of its own).
pub fn process_database_args_blocking(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(process_database_args(&dir))
    })
    .join()
    .expect("database arguments")
}

impl TestDb {
    /// The database of the test folder `dir` (once its server created it).
    pub async fn open(dir: &std::path::Path) -> Self {
        match std::fs::read_to_string(url_file(dir)) {
            Ok(url) => Self::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&url)
                    .await
                    .expect("the test database answers"),
            ),
            Err(_) => Self::Sqlite(
                sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("qod.db").display()))
                    .await
                    .expect("the test database opens"),
            ),
        }
    }
}

/// Skips a test of what only the SQLite store has when the tests run on PostgreSQL.
pub fn sqlite_only(test: &str) -> bool {
    if postgres_backend() {
        eprintln!("{test}: skipped on PostgreSQL (it tests the SQLite store itself)");
        return true;
    }
    false
}

pub async fn split(r: reqwest::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Runs the `qod` binary to its end; awaited, so the test's runtime keeps serving an
/// in-process server the command talks to.
pub async fn qod_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_qod"))
        .args(args)
        .output()
        .await
        .expect("the qod binary runs")
}

/// Calls `check` every 20 ms until it returns Some or `timeout` passes.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn session_body(phone: &str, server: &str, duration: i64) -> Value {
    json!({
        "device": {"phoneNumber": phone},
        "applicationServer": {"ipv4Address": server},
        "qosProfile": "QOS_E",
        "duration": duration,
    })
}

pub fn status(body: &Value) -> &str {
    body["qosStatus"].as_str().unwrap_or("")
}

/// Applies worker-pool overrides written as a `--config` file's `[workers]` tables would be.
pub fn override_pools(s: &mut Settings, toml: &str) {
    let overrides = toml::from_str(toml).expect("valid pool overrides");
    s.pools = s
        .pools
        .clone()
        .with_overrides(&overrides)
        .expect("known queues and fields");
}

/// A client sending `Authorization: Bearer <token>` on every request.
pub fn authorized_client(token: Option<&str>) -> reqwest::Client {
    authorized_builder(token).build().expect("client")
}

/// A client builder with `Authorization: Bearer <token>` on every request.
pub fn authorized_builder(token: Option<&str>) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
    }
    reqwest::Client::builder().default_headers(headers)
}

/// A token signed with the development key of the server whose database is `dir/qod.db` (the
/// key is created if the server has not started yet; the server then uses it).
pub fn mint_in(
    dir: &std::path::Path,
    client: &str,
    scopes: &[&str],
    device_phone: Option<&str>,
) -> String {
    let key =
        qod::secrets::key_file(&dir.join("qod.dev-signing.key"), "test").expect("development key");
    let rules = Settings::for_database("sqlite::memory:")
        .expect("settings")
        .auth
        .rules;
    qod::auth::mint::mint_hs256(
        &key,
        &rules,
        &qod::auth::mint::TokenRequest {
            client: client.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            device_phone: device_phone.map(str::to_owned),
            ttl: Duration::from_secs(3600),
        },
        chrono::Utc::now(),
    )
    .expect("token minted")
}

/// The development client's token (every scope) for the server of `dir`.
pub fn dev_token_in(dir: &std::path::Path) -> String {
    mint_in(dir, "dev-client", &qod::auth::scopes::ALL, None)
}

/// The committed Grafana dashboards (`dashboards/*.json`), parsed, by file name.
pub fn dashboards() -> Vec<(std::path::PathBuf, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let mut all: Vec<(std::path::PathBuf, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, v)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(all.len() >= 5, "the five dashboards");
    all
}
