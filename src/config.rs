//! One typed `Settings`, loaded once: built-in defaults, then the `--config` file, then `QOD_*`
//! environment variables and flags (clap reads both; a flag beats its variable).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::auth::verifier::ClaimRules;
use crate::domain::{Catalogue, QosProfile};
use crate::network::nef::NefSettings;
use crate::pools::{PoolOverride, Pools};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// synchronous=NORMAL in WAL mode: a power loss may drop the last commits, a crash never.
    Normal,
    /// synchronous=FULL: every commit is on disk before the 2xx.
    Full,
}

/// Every setting of `qod serve`, defined once: its flag, its `QOD_*` variable and its key in the
/// `--config` file (the same name, and the file alone holds the tables at the end). Everything
/// is optional here; `Settings::load` lays flags over the file and fills in the defaults.
#[derive(Debug, Clone, Args, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT (a name or an IP address) or a bare PORT (on 127.0.0.1).
    #[arg(long, env = "QOD_LISTEN")]
    pub listen: Option<Listen>,
    /// Database URL: `sqlite://PATH` (the folder is created) or
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE` (several nodes may share it).
    #[arg(long, env = "QOD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL: connections this node keeps to the database at most.
    #[arg(long, env = "QOD_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// PostgreSQL: how long a node's claim of a job holds without its heartbeat (renewed every
    /// third of it); a node that died or stalled loses its jobs to the others after this.
    #[arg(long, env = "QOD_JOB_LEASE")]
    pub job_lease: Option<Span>,
    /// TOML file with settings, the QoS profile catalogue and worker pool overrides.
    #[arg(long, env = "QOD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// File of the key that seals stored secrets (sink tokens); every node of one database
    /// must use the same. It must exist (`qod keys generate`). Default: `<db>.key` beside the
    /// SQLite file, created on first start.
    #[arg(long, env = "QOD_SEALING_KEY_FILE")]
    pub sealing_key_file: Option<PathBuf>,
    /// File of the development token-signing key (`--auth dev`); must exist when given.
    /// Default: `<db>.dev-signing.key` beside the SQLite file, created on first start.
    #[arg(long, env = "QOD_DEV_SIGNING_KEY_FILE")]
    pub dev_signing_key_file: Option<PathBuf>,
    /// Commit durability of the SQLite file.
    #[arg(long, env = "QOD_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// Seconds a session may stay REQUESTED before it becomes UNAVAILABLE/NETWORK_TERMINATED.
    #[arg(long, env = "QOD_PROVISION_TIMEOUT_SECS")]
    pub provision_timeout_secs: Option<u64>,
    /// Longest grant the network is asked for (e.g. 15m, 900s); longer sessions renew their
    /// grant before it ends.
    #[arg(long, env = "QOD_GRANT_LIFETIME")]
    pub grant_lifetime: Option<Span>,
    /// Seconds an expired session stays readable before it is purged.
    #[arg(long, env = "QOD_RETENTION_SECS")]
    pub retention_secs: Option<u64>,
    /// How long history is kept (e.g. 1d, 12h): settled notifications, and the events of
    /// purged sessions; older rows are deleted.
    #[arg(long, env = "QOD_HISTORY_RETENTION")]
    pub history_retention: Option<Span>,
    /// Record the inputs that drive the server (API commands, network and sink answers,
    /// callbacks, timer firings) beside the transitions, for `qod history export` and replays.
    #[arg(long, env = "QOD_RECORD_INPUTS", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub record_inputs: Option<bool>,
    /// Simulated network: latency of each call in milliseconds.
    #[arg(long, env = "QOD_SIM_LATENCY_MS")]
    pub sim_latency_ms: Option<u64>,
    /// Simulated network: share of calls failing with a retryable error, from 0 to 1.
    #[arg(long, env = "QOD_SIM_FAILURE_RATE")]
    pub sim_failure_rate: Option<f64>,
    /// Simulated network: share of provisioning requests refused for good, from 0 to 1.
    #[arg(long, env = "QOD_SIM_REFUSE_RATE")]
    pub sim_refuse_rate: Option<f64>,
    /// Seconds to let running jobs finish on shutdown before handing them back to the queue.
    #[arg(long, env = "QOD_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Accept `http://` sinks, not only `https://` (development and tests).
    #[arg(long, env = "QOD_ALLOW_INSECURE_SINKS", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub allow_insecure_sinks: Option<bool>,
    /// Deliver to sinks on loopback, private, link-local and other non-public addresses.
    #[arg(long, env = "QOD_ALLOW_PRIVATE_SINKS", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub allow_private_sinks: Option<bool>,
    /// PEM file of extra root certificates trusted for sinks (consumers behind a private CA).
    #[arg(long, env = "QOD_SINK_CA_FILE")]
    pub sink_ca_file: Option<PathBuf>,
    /// Milliseconds to wait for a sink's connection.
    #[arg(long, env = "QOD_SINK_CONNECT_TIMEOUT_MS")]
    pub sink_connect_timeout_ms: Option<u64>,
    /// Milliseconds a whole delivery attempt may take.
    #[arg(long, env = "QOD_SINK_TIMEOUT_MS")]
    pub sink_timeout_ms: Option<u64>,
    /// Deliveries in flight to one sink (host and port) at most.
    #[arg(long, env = "QOD_SINK_CONCURRENCY")]
    pub sink_concurrency: Option<usize>,
    /// Public base URL of this server, used as the CloudEvents `source` of notifications.
    #[arg(long, env = "QOD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Connections served at once; more wait until one closes.
    #[arg(long, env = "QOD_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Seconds a client has to send a request's headers; also how long a kept-alive
    /// connection may stay idle.
    #[arg(long, env = "QOD_HTTP_HEADER_TIMEOUT_SECS")]
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's body (answered 408 after).
    #[arg(long, env = "QOD_HTTP_BODY_TIMEOUT_SECS")]
    pub http_body_timeout_secs: Option<u64>,
    /// Extra path under which the v0 API is also served, e.g.
    /// `/camara/quality-on-demand/orange-lab` (then `.../qod/v0/sessions`).
    #[arg(long, env = "QOD_V0_PREFIX")]
    pub v0_prefix: Option<String>,
    /// `simulated` (in-process; the default without `--nef-url`) or `nef` (a 3GPP
    /// AsSessionWithQoS API).
    #[arg(help_heading = "Network", long, env = "QOD_NETWORK", value_enum)]
    pub network: Option<NetworkKind>,
    /// Base URL of the NEF's API, e.g. `https://nef.example/3gpp-as-session-with-qos/v1`;
    /// implies `--network nef`.
    #[arg(help_heading = "Network", long, env = "QOD_NEF_URL")]
    pub nef_url: Option<String>,
    /// The SCS/AS id path segment (omit it for NEFs without one).
    #[arg(help_heading = "Network", long, env = "QOD_NEF_SCS_AS_ID")]
    pub nef_scs_as_id: Option<String>,
    /// Milliseconds a NEF call may take.
    #[arg(help_heading = "Network", long, env = "QOD_NEF_TIMEOUT_MS")]
    pub nef_timeout_ms: Option<u64>,
    /// OAuth2 token URL for client credentials towards the NEF.
    #[arg(help_heading = "Network", long, env = "QOD_NEF_TOKEN_URL")]
    pub nef_token_url: Option<String>,
    /// OAuth2 client id of this server at the NEF's token endpoint.
    #[arg(help_heading = "Network", long, env = "QOD_NEF_CLIENT_ID")]
    pub nef_client_id: Option<String>,
    /// File holding the OAuth2 client secret.
    #[arg(help_heading = "Network", long, env = "QOD_NEF_CLIENT_SECRET_FILE")]
    pub nef_client_secret_file: Option<PathBuf>,
    /// OAuth2 scope to ask the NEF's token endpoint for (none when unset).
    #[arg(help_heading = "Network", long, env = "QOD_NEF_SCOPE")]
    pub nef_scope: Option<String>,
    /// PEM file of extra root certificates trusted for the NEF and its token endpoint.
    #[arg(help_heading = "Network", long, env = "QOD_NEF_CA_FILE")]
    pub nef_ca_file: Option<PathBuf>,
    /// The NEF's 201 only means "accepted": sessions become AVAILABLE on its
    /// SUCCESSFUL_RESOURCES_ALLOCATION event (or end at the provisioning timeout).
    #[arg(help_heading = "Network", long, env = "QOD_NEF_AWAIT_ALLOCATION", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub nef_await_allocation: Option<bool>,
    /// Ask the NEF for a TestNotification on every new subscription.
    #[arg(help_heading = "Network", long, env = "QOD_NEF_REQUEST_TEST_NOTIFICATION", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub nef_request_test_notification: Option<bool>,
    /// `jwt` (keys below), `dev` (a signing key in the data folder; the default when no keys
    /// are configured) or `none` (no authentication at all: never on a shared network).
    #[arg(
        help_heading = "Authentication and limits",
        long = "auth",
        env = "QOD_AUTH",
        value_enum
    )]
    #[serde(rename = "auth")]
    pub mode: Option<AuthMode>,
    /// JWKS file with the RS256/ES256 public keys that sign access tokens.
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_AUTH_JWKS_FILE"
    )]
    pub auth_jwks_file: Option<PathBuf>,
    /// JWKS URL of the identity provider (fetched, cached, refetched on key rotation).
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_AUTH_JWKS_URL"
    )]
    pub auth_jwks_url: Option<String>,
    /// File holding an HS256 shared secret (at least 32 bytes); for development set-ups.
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_AUTH_HS256_SECRET_FILE"
    )]
    pub auth_hs256_secret_file: Option<PathBuf>,
    /// Required `iss` of tokens.
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_AUTH_ISSUER"
    )]
    pub auth_issuer: Option<String>,
    /// Required `aud` of tokens.
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_AUTH_AUDIENCE"
    )]
    pub auth_audience: Option<String>,
    /// Claim naming the API client that owns sessions (then `azp`, then `sub`).
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_AUTH_CLIENT_CLAIM"
    )]
    pub auth_client_claim: Option<String>,
    /// Claim carrying the device (E.164 phone number) of three-legged tokens.
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_AUTH_DEVICE_CLAIM"
    )]
    pub auth_device_claim: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_AUTH_LEEWAY_SECS"
    )]
    pub auth_leeway_secs: Option<u64>,
    /// File holding the bearer token `/metrics` requires (open when unset).
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_METRICS_TOKEN_FILE"
    )]
    pub metrics_token_file: Option<PathBuf>,
    /// Requests per second each client may make (token bucket; 0 = unlimited).
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_CLIENT_RATE_LIMIT"
    )]
    pub client_rate_limit: Option<u32>,
    /// Requests a client may make at once above its rate.
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_CLIENT_BURST"
    )]
    pub client_burst: Option<u32>,
    /// Sessions (REQUESTED or AVAILABLE) each client may hold (0 = unlimited).
    #[arg(
        help_heading = "Authentication and limits",
        long,
        env = "QOD_CLIENT_MAX_ACTIVE_SESSIONS"
    )]
    pub client_max_active_sessions: Option<u64>,
    /// Fields added to every NEF subscription (`dnn`, `snssai`, `supportedFeatures`...); file only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub nef_subscription_fields: serde_json::Map<String, serde_json::Value>,
    /// `qosProfile` name → `[qosReference, altQoSReferences...]`; file only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub nef_qos_references: BTreeMap<String, Vec<String>>,
    /// Which devices this deployment serves (`known`, `not_applicable`); file only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub devices: Option<crate::domain::Eligibility>,
    /// The QoS profile catalogue (replaces the built-in one); file only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub qos_profiles: Option<Vec<QosProfile>>,
    /// Worker pool overrides by queue; file only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub workers: BTreeMap<String, PoolOverride>,
}

/// The flags that find a running server's data from beside it (the CLI's tools): its config
/// file and its database, read as `qod serve` reads them.
#[derive(Debug, Clone, Args, Default)]
pub struct ServerLocation {
    /// The server's config file (its `database_url` and auth settings count).
    #[arg(long, env = "QOD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The server's database URL [default: the config file's, else sqlite://./qod-data/qod.db].
    #[arg(long, env = "QOD_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl ServerLocation {
    /// The server's settings: these flags over `more` over the config file's.
    pub fn settings(&self, more: ServeArgs) -> anyhow::Result<Settings> {
        Settings::load(&ServeArgs {
            config: self.config.clone(),
            database_url: self.database_url.clone().or(more.database_url.clone()),
            ..more
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    Simulated,
    Nef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Jwt,
    Dev,
    None,
}

/// Where token keys come from, once resolved.
#[derive(Debug, Clone)]
pub enum AuthKeys {
    /// No authentication (`--auth none`).
    Disabled,
    /// HS256 with the development key in the data folder.
    Development,
    SharedSecretFile(PathBuf),
    Jwks {
        file: Option<PathBuf>,
        url: Option<String>,
    },
}

/// A secret read from configuration; Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub keys: AuthKeys,
    pub rules: ClaimRules,
    pub metrics_token: Option<Redacted>,
    pub rate_per_second: u32,
    pub burst: u32,
    pub max_active_sessions: u64,
}

#[derive(Debug, Clone)]
pub struct SimSettings {
    pub latency: Duration,
    pub failure_rate: f64,
    pub refuse_rate: f64,
}

/// How notifications reach consumers' sinks.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub allow_insecure_sinks: bool,
    pub allow_private_sinks: bool,
    pub sink_ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub per_sink_concurrency: usize,
    /// This server's URL as consumers and the network reach it (CloudEvents `source`, network
    /// callbacks); `None` for the address actually bound (`Core::public_url`).
    pub public_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The `--config` file these settings were read from, if any.
    pub config_file: Option<PathBuf>,
    /// Configured key files (shared by the nodes of one database); `None`: beside the database.
    pub sealing_key_file: Option<PathBuf>,
    pub dev_signing_key_file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub http: crate::api::listener::Limits,
    pub database_url: String,
    pub database_max_connections: u32,
    /// How long a claim of a job holds without the node's heartbeat (shared stores).
    pub job_lease: Duration,
    pub durability: Durability,
    pub busy_timeout: Duration,
    pub provision_timeout: Duration,
    pub grant_lifetime: Duration,
    pub retention: Duration,
    /// How long settled notifications and purged sessions' events are kept.
    pub history_retention: Duration,
    /// Whether inputs are recorded for replays.
    pub record_inputs: bool,
    /// Whether history past its retention is purged (a replay keeps all of its run's).
    pub purge_history: bool,
    /// Whether the SQLite store is thrown away after the run (a replay's): one connection,
    /// writes run where they are called, nothing synced (see `Writer::in_place`).
    pub throwaway_store: bool,
    pub shutdown_timeout: Duration,
    pub sim: SimSettings,
    pub notify: NotifySettings,
    pub catalogue: Catalogue,
    /// Which devices this deployment serves (`[devices]`; every device when absent).
    pub eligibility: crate::domain::Eligibility,
    pub pools: Pools,
    /// Extra mount point of `/qod/v0`, normalised to `/a/b` (no trailing slash).
    pub v0_prefix: Option<String>,
    pub auth: AuthSettings,
    /// The NEF to provision through; `None` for the simulated network.
    pub nef: Option<NefSettings>,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./qod-data/qod.db";

impl ServeArgs {
    /// The built-in value of every setting that has one; `qod serve --help` shows them.
    /// Settings without one here are off (or, for `auth`, decided by the keys configured).
    pub fn defaults() -> Self {
        Self {
            listen: Some(Listen::from_str("127.0.0.1:8080").expect("valid default")),
            database_url: Some(DEFAULT_DATABASE_URL.to_owned()),
            database_max_connections: Some(16),
            job_lease: Some(Span(Duration::from_secs(3))),
            durability: Some(Durability::Normal),
            provision_timeout_secs: Some(60),
            grant_lifetime: Some(Span(Duration::from_secs(900))),
            retention_secs: Some(60),
            history_retention: Some(Span(Duration::from_secs(86_400))),
            record_inputs: Some(true),
            sim_latency_ms: Some(0),
            sim_failure_rate: Some(0.0),
            sim_refuse_rate: Some(0.0),
            shutdown_timeout_secs: Some(10),
            http_max_connections: Some(2048),
            http_header_timeout_secs: Some(10),
            http_body_timeout_secs: Some(10),
            allow_insecure_sinks: Some(false),
            allow_private_sinks: Some(false),
            sink_connect_timeout_ms: Some(2000),
            sink_timeout_ms: Some(5000),
            sink_concurrency: Some(8),
            nef_timeout_ms: Some(5000),
            nef_await_allocation: Some(false),
            nef_request_test_notification: Some(false),
            auth_client_claim: Some("client_id".to_owned()),
            auth_device_claim: Some("phone_number".to_owned()),
            auth_leeway_secs: Some(30),
            client_rate_limit: Some(100),
            client_burst: Some(200),
            client_max_active_sessions: Some(10_000),
            ..Self::default()
        }
    }

    /// Each default as its flag's help shows it, by long flag name.
    pub fn defaults_for_help() -> BTreeMap<String, String> {
        let Ok(serde_json::Value::Object(values)) = serde_json::to_value(Self::defaults()) else {
            return BTreeMap::new();
        };
        values
            .into_iter()
            .filter_map(|(key, value)| {
                let shown = match value {
                    serde_json::Value::Null => return None,
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                Some((key.replace('_', "-"), shown))
            })
            .collect()
    }
}

/// A default every `ServeArgs::defaults()` has; its absence is a defect caught by the tests.
fn given<T>(value: Option<T>, name: &str) -> T {
    value.unwrap_or_else(|| panic!("ServeArgs::defaults() has no {name}"))
}

impl Settings {
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<ServeArgs>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        let mut v = lay_over(args, lay_over(&file, ServeArgs::defaults())?)?;
        let rate = |name: &str, v: f64| {
            anyhow::ensure!(
                (0.0..=1.0).contains(&v),
                "{name} must be between 0 and 1 (a share of calls), not {v}"
            );
            Ok(v)
        };
        let auth = auth_settings(&v)?;
        let nef = nef_settings(&mut v)?;
        let catalogue = match v.qos_profiles.take() {
            Some(profiles) => Catalogue::new(profiles).context("config: qos_profiles")?,
            None => Catalogue::builtin(),
        };
        let public_url = v.public_url.clone();
        if let Some(url) = &public_url {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "public URL must start with http:// or https://"
            );
        }
        let notify = NotifySettings {
            allow_insecure_sinks: given(v.allow_insecure_sinks, "allow_insecure_sinks"),
            allow_private_sinks: given(v.allow_private_sinks, "allow_private_sinks"),
            sink_ca_file: v.sink_ca_file.clone(),
            connect_timeout: Duration::from_millis(given(
                v.sink_connect_timeout_ms,
                "sink_connect_timeout_ms",
            )),
            timeout: Duration::from_millis(given(v.sink_timeout_ms, "sink_timeout_ms")),
            per_sink_concurrency: given(v.sink_concurrency, "sink_concurrency").max(1),
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
        };
        Ok(Self {
            config_file: v.config.clone(),
            sealing_key_file: v.sealing_key_file.clone(),
            dev_signing_key_file: v.dev_signing_key_file.clone(),
            listen: given(v.listen.clone(), "listen").address()?,
            http: crate::api::listener::Limits {
                max_connections: given(v.http_max_connections, "http_max_connections").max(1),
                header_timeout: Duration::from_secs(
                    given(v.http_header_timeout_secs, "http_header_timeout_secs").max(1),
                ),
                body_timeout: Duration::from_secs(
                    given(v.http_body_timeout_secs, "http_body_timeout_secs").max(1),
                ),
            },
            database_url: database_url(given(v.database_url.clone(), "database_url"))?,
            database_max_connections: given(v.database_max_connections, "database_max_connections")
                .max(2),
            job_lease: given(v.job_lease, "job_lease")
                .0
                .max(Duration::from_millis(300)),
            durability: given(v.durability, "durability"),
            busy_timeout: Duration::from_secs(30),
            grant_lifetime: given(v.grant_lifetime, "grant_lifetime").0,
            provision_timeout: Duration::from_secs(given(
                v.provision_timeout_secs,
                "provision_timeout_secs",
            )),
            retention: Duration::from_secs(given(v.retention_secs, "retention_secs")),
            history_retention: given(v.history_retention, "history_retention").0,
            record_inputs: given(v.record_inputs, "record_inputs"),
            purge_history: true,
            throwaway_store: false,
            shutdown_timeout: Duration::from_secs(given(
                v.shutdown_timeout_secs,
                "shutdown_timeout_secs",
            )),
            sim: SimSettings {
                latency: Duration::from_millis(given(v.sim_latency_ms, "sim_latency_ms")),
                failure_rate: rate(
                    "--sim-failure-rate",
                    given(v.sim_failure_rate, "sim_failure_rate"),
                )?,
                refuse_rate: rate(
                    "--sim-refuse-rate",
                    given(v.sim_refuse_rate, "sim_refuse_rate"),
                )?,
            },
            notify,
            catalogue,
            eligibility: v.devices.take().unwrap_or_default(),
            pools: Pools::builtin().with_overrides(&v.workers)?,
            v0_prefix: v0_prefix(v.v0_prefix.clone())?,
            auth,
            nef,
        })
    }

    /// What an operator wants to see at start, in one line: where the settings came from, the
    /// database, the network, authentication, the profiles, the sink policy and what differs
    /// from the built-in worker pools. Never a secret.
    pub fn summary(&self) -> String {
        let config = self
            .config_file
            .as_ref()
            .map_or("none".to_owned(), |p| p.display().to_string());
        let network = match &self.nef {
            None => "simulated".to_owned(),
            Some(nef) => format!(
                "nef {}{}",
                nef.url,
                if nef.await_allocation {
                    " (awaits allocation)"
                } else {
                    ""
                }
            ),
        };
        let auth = match &self.auth.keys {
            AuthKeys::Disabled => "none".to_owned(),
            AuthKeys::Development => "dev (key in the data folder)".to_owned(),
            AuthKeys::SharedSecretFile(path) => format!("hs256 {}", path.display()),
            AuthKeys::Jwks { file, url } => format!(
                "jwt {}",
                url.clone()
                    .or(file.as_ref().map(|f| f.display().to_string()))
                    .unwrap_or_default()
            ),
        };
        let profiles: Vec<&str> = self
            .catalogue
            .all()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let sinks = match (
            self.notify.allow_insecure_sinks,
            self.notify.allow_private_sinks,
        ) {
            (false, false) => "https, public addresses",
            (true, false) => "http(s), public addresses",
            (false, true) => "https, private addresses too",
            (true, true) => "http(s), private addresses too",
        };
        let workers = self.pools.changed();
        let database = if self.is_postgres() {
            format!(
                "{} (PostgreSQL, up to {} connections, job lease {} ms)",
                crate::store::redacted_url(&self.database_url),
                self.database_max_connections,
                self.job_lease.as_millis()
            )
        } else {
            format!(
                "{} ({} durability)",
                self.database_url,
                match self.durability {
                    Durability::Normal => "normal",
                    Durability::Full => "full",
                }
            )
        };
        format!(
            "config {config}; database {database}; network {network}; auth {auth}; \
             {} profiles ({}); sinks {sinks}; workers {}",
            profiles.len(),
            profiles.join(", "),
            if workers.is_empty() {
                "built-in".to_owned()
            } else {
                workers.join(", ")
            },
        )
    }

    /// The database is PostgreSQL (shared by several nodes), not a SQLite file.
    pub fn is_postgres(&self) -> bool {
        is_postgres_url(&self.database_url)
    }

    /// Settings for tests and embedding: defaults with the given database.
    pub fn for_database(database_url: impl Into<String>) -> anyhow::Result<Self> {
        let mut s = Self::load(&ServeArgs::default())?;
        s.database_url = database_url.into();
        s.listen = "127.0.0.1:0".parse()?;
        Ok(s)
    }
}

fn nef_settings(v: &mut ServeArgs) -> anyhow::Result<Option<NefSettings>> {
    match (v.network, &v.nef_url) {
        (Some(NetworkKind::Simulated), Some(url)) => anyhow::bail!(
            "--nef-url {url} is set but --network is simulated: drop one of them \
             (--nef-url alone means --network nef)"
        ),
        (Some(NetworkKind::Simulated), None) | (None, None) => return Ok(None),
        (Some(NetworkKind::Nef), _) | (None, Some(_)) => {}
    }
    let url = v.nef_url.clone().context("--network nef needs --nef-url")?;
    anyhow::ensure!(
        url.starts_with("http://") || url.starts_with("https://"),
        "the NEF URL must start with http:// or https://"
    );
    let token_url = v.nef_token_url.clone();
    let oauth = match token_url {
        None => None,
        Some(token_url) => {
            let id = v
                .nef_client_id
                .clone()
                .context("--nef-token-url needs --nef-client-id")?;
            let path = v
                .nef_client_secret_file
                .clone()
                .context("--nef-token-url needs --nef-client-secret-file")?;
            let secret = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned();
            let scope = v.nef_scope.clone();
            Some((token_url, id, Redacted(secret), scope))
        }
    };
    Ok(Some(NefSettings {
        url,
        scs_as_id: v.nef_scs_as_id.clone(),
        timeout: Duration::from_millis(v.nef_timeout_ms.unwrap_or(5000)),
        oauth,
        qos_references: std::mem::take(&mut v.nef_qos_references),
        ca_file: v.nef_ca_file.clone(),
        await_allocation: v.nef_await_allocation == Some(true),
        request_test_notification: v.nef_request_test_notification == Some(true),
        extra_fields: nef_subscription_fields(std::mem::take(&mut v.nef_subscription_fields))?,
    }))
}

/// The operator's extra subscription fields, refused when they would replace one the adapter
/// sets itself.
fn nef_subscription_fields(
    fields: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    const OWN: [&str; 9] = [
        "notificationDestination",
        "ueIpv4Addr",
        "ueIpv6Addr",
        "gpsi",
        "flowInfo",
        "qosReference",
        "altQoSReferences",
        "qosDuration",
        "requestTestNotification",
    ];
    if let Some(own) = fields.keys().find(|k| OWN.contains(&k.as_str())) {
        anyhow::bail!("nef_subscription_fields may not set {own}: the adapter sets it per session");
    }
    Ok(fields)
}

fn auth_settings(v: &ServeArgs) -> anyhow::Result<AuthSettings> {
    let jwks_file = v.auth_jwks_file.clone();
    let jwks_url = v.auth_jwks_url.clone();
    let secret_file = v.auth_hs256_secret_file.clone();
    let has_keys = jwks_file.is_some() || jwks_url.is_some() || secret_file.is_some();
    anyhow::ensure!(
        secret_file.is_none() || (jwks_file.is_none() && jwks_url.is_none()),
        "configure either a JWKS or an HS256 secret, not both"
    );
    let keys = match v.mode {
        Some(AuthMode::None) => AuthKeys::Disabled,
        Some(AuthMode::Dev) => {
            anyhow::ensure!(
                !has_keys,
                "--auth dev uses its own key; remove the configured keys"
            );
            AuthKeys::Development
        }
        Some(AuthMode::Jwt) | None if has_keys => match secret_file {
            Some(path) => AuthKeys::SharedSecretFile(path),
            None => AuthKeys::Jwks {
                file: jwks_file,
                url: jwks_url,
            },
        },
        Some(AuthMode::Jwt) => {
            anyhow::bail!(
                "--auth jwt needs --auth-jwks-file, --auth-jwks-url or --auth-hs256-secret-file"
            )
        }
        None => AuthKeys::Development,
    };
    let metrics_token = match v.metrics_token_file.as_ref() {
        None => None,
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned();
            anyhow::ensure!(
                token.len() >= 16,
                "the metrics token must be at least 16 characters"
            );
            Some(Redacted(token))
        }
    };
    Ok(AuthSettings {
        keys,
        rules: ClaimRules {
            issuer: v.auth_issuer.clone(),
            audience: v.auth_audience.clone(),
            leeway: Duration::from_secs(given(v.auth_leeway_secs, "auth_leeway_secs")),
            client_claim: given(v.auth_client_claim.clone(), "auth_client_claim"),
            device_claim: given(v.auth_device_claim.clone(), "auth_device_claim"),
        },
        metrics_token,
        rate_per_second: given(v.client_rate_limit, "client_rate_limit"),
        burst: given(v.client_burst, "client_burst"),
        max_active_sessions: given(v.client_max_active_sessions, "client_max_active_sessions"),
    })
}

/// The settings `top` gives, laid over those of `bottom`: `top` wins where it has a value
/// (flags over the file, the file over the defaults). Done on the settings' serialized form, so
/// that no setting is named here; the file-only tables come from whichever layer has them.
fn lay_over(top: &ServeArgs, mut bottom: ServeArgs) -> anyhow::Result<ServeArgs> {
    let top_tables = (
        top.nef_subscription_fields.clone(),
        top.nef_qos_references.clone(),
        top.qos_profiles.clone(),
        top.workers.clone(),
        top.devices.clone(),
    );
    let bottom_tables = (
        std::mem::take(&mut bottom.nef_subscription_fields),
        std::mem::take(&mut bottom.nef_qos_references),
        bottom.qos_profiles.take(),
        std::mem::take(&mut bottom.workers),
        bottom.devices.take(),
    );
    let mut merged = serde_json::to_value(&bottom)?;
    if let (serde_json::Value::Object(merged), serde_json::Value::Object(given)) =
        (&mut merged, serde_json::to_value(top)?)
    {
        merged.extend(given.into_iter().filter(|(_, value)| !value.is_null()));
    }
    let mut v: ServeArgs = serde_json::from_value(merged).context("merging the settings")?;
    v.config = top.config.clone().or(bottom.config);
    v.nef_subscription_fields = pick(top_tables.0, bottom_tables.0);
    v.nef_qos_references = pick(top_tables.1, bottom_tables.1);
    v.qos_profiles = top_tables.2.or(bottom_tables.2);
    v.workers = pick(top_tables.3, bottom_tables.3);
    v.devices = top_tables.4.or(bottom_tables.4);
    Ok(v)
}

/// The upper layer's table unless it is empty.
fn pick<T: IsEmpty>(top: T, bottom: T) -> T {
    if top.is_empty() { bottom } else { top }
}

trait IsEmpty {
    fn is_empty(&self) -> bool;
}

impl<K, V> IsEmpty for BTreeMap<K, V> {
    fn is_empty(&self) -> bool {
        BTreeMap::is_empty(self)
    }
}

impl IsEmpty for serde_json::Map<String, serde_json::Value> {
    fn is_empty(&self) -> bool {
        serde_json::Map::is_empty(self)
    }
}

/// Where to listen, as typed: `HOST:PORT` with a host name or an IP address, or a bare `PORT`
/// (on 127.0.0.1). Names are resolved at start; an IPv4 address is preferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen(String);

impl Listen {
    pub fn address(&self) -> anyhow::Result<SocketAddr> {
        if let Ok(addr) = self.0.parse::<SocketAddr>() {
            return Ok(addr);
        }
        let resolved: Vec<SocketAddr> = self
            .0
            .to_socket_addrs()
            .with_context(|| format!("listen address {}: cannot resolve the host", self.0))?
            .collect();
        resolved
            .iter()
            .find(|a| a.is_ipv4())
            .or(resolved.first())
            .copied()
            .with_context(|| format!("listen address {}: the host has no address", self.0))
    }
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let expected = "expected HOST:PORT (e.g. 127.0.0.1:8080, localhost:8080, [::1]:8080) \
                        or a PORT";
        if let Ok(port) = raw.parse::<u16>() {
            return Ok(Self(format!("127.0.0.1:{port}")));
        }
        if raw.parse::<SocketAddr>().is_ok() {
            return Ok(Self(raw.to_owned()));
        }
        let Some((host, port)) = raw.rsplit_once(':') else {
            return Err(format!("{raw:?}: no port; {expected}"));
        };
        if port.parse::<u16>().is_err() {
            return Err(format!(
                "{raw:?}: {port:?} is not a port (0 to 65535); {expected}"
            ));
        }
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        if !host_ok {
            return Err(format!("{raw:?}: {host:?} is not a host name; {expected}"));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl Serialize for Listen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// A span of time (`15m`, `900s`) as a setting; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        crate::span::parse_positive(raw).map(Self)
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::span::format(self.0))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// The database URL, if the server can keep its data there: a SQLite file or a PostgreSQL
/// database. Anything else would otherwise be taken for a file name, and an in-memory database
/// loses every accepted request when the process ends.
fn database_url(url: String) -> anyhow::Result<String> {
    if is_postgres_url(&url) {
        return Ok(url);
    }
    let lower = url.to_ascii_lowercase();
    anyhow::ensure!(
        lower.starts_with("sqlite:"),
        "database URL {url}: expected sqlite://PATH (e.g. sqlite://./qod-data/qod.db) or \
         postgres://USER@HOST:PORT/DATABASE"
    );
    anyhow::ensure!(
        !lower.contains(":memory:") && !lower.contains("mode=memory"),
        "database URL {url}: an in-memory database loses every accepted request when the \
         server stops; give a file, e.g. sqlite://./qod-data/qod.db"
    );
    Ok(url)
}

pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `/a/b`: a leading slash, none at the end, only path characters; empty means none.
fn v0_prefix(raw: Option<String>) -> anyhow::Result<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    anyhow::ensure!(
        trimmed.split('/').all(|seg| !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))),
        "v0 prefix {raw:?} must be a path like /camara/quality-on-demand/orange-lab"
    );
    Ok(Some(format!("/{trimmed}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qod.toml");
        std::fs::write(
            &path,
            "retention_secs = 7\nprovision_timeout_secs = 9\ngrant_lifetime = \"20m\"\n\
             [workers.purge_session]\nconcurrency = 2\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            retention_secs: Some(3),
            ..Default::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.retention, Duration::from_secs(3));
        assert_eq!(s.provision_timeout, Duration::from_secs(9));
        assert_eq!(s.grant_lifetime, Duration::from_secs(1200));
        assert_eq!(s.pools.get("purge_session").concurrency, 2);
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn every_setting_is_one_flag_and_one_file_key_and_a_given_flag_wins() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qod.toml");
        std::fs::write(
            &path,
            "allow_insecure_sinks = true\nallow_private_sinks = true\n\
             auth_client_claim = \"azp\"\nclient_burst = 7\nnetwork = \"nef\"\n\
             nef_url = \"http://nef.example\"\nnef_await_allocation = true\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let load = |flags: &[&str]| {
            let mut argv = vec!["qod", "--config", config];
            argv.extend_from_slice(flags);
            Settings::load(&Cli::try_parse_from(argv).unwrap().serve).unwrap()
        };
        let from_file = load(&[]);
        assert!(from_file.notify.allow_insecure_sinks && from_file.notify.allow_private_sinks);
        assert_eq!(from_file.auth.rules.client_claim, "azp");
        assert_eq!(from_file.auth.burst, 7);
        assert!(from_file.nef.as_ref().unwrap().await_allocation);
        let flagged = load(&[
            "--allow-insecure-sinks=no",
            "--allow-private-sinks",
            "--auth-client-claim",
            "sub",
            "--client-burst",
            "9",
            "--nef-await-allocation=false",
        ]);
        assert!(
            !flagged.notify.allow_insecure_sinks,
            "a flag can turn a file's true off"
        );
        assert!(flagged.notify.allow_private_sinks);
        assert_eq!(flagged.auth.rules.client_claim, "sub");
        assert_eq!(flagged.auth.burst, 9);
        assert!(!flagged.nef.unwrap().await_allocation);
        let defaults = Settings::load(&ServeArgs::default()).unwrap();
        assert!(!defaults.notify.allow_insecure_sinks);
        assert_eq!(defaults.auth.burst, 200);
    }

    #[test]
    fn a_config_file_replaces_the_profile_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qod.toml");
        std::fs::write(
            &path,
            r#"
[[qos_profiles]]
name = "GAMING"
status = "ACTIVE"
minDuration = { value = 10, unit = "Seconds" }
maxDuration = { value = 2, unit = "Hours" }
"#,
        )
        .unwrap();
        let s = Settings::load(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert!(s.catalogue.get("QOS_E").is_none());
        assert_eq!(
            s.catalogue.get("GAMING").unwrap().duration_range(),
            10..=7200
        );
    }

    #[test]
    fn unknown_keys_and_bad_rates_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qod.toml");
        std::fs::write(&path, "listne = \"1.2.3.4:5\"\n").unwrap();
        assert!(
            Settings::load(&ServeArgs {
                config: Some(path),
                ..Default::default()
            })
            .is_err()
        );
        let args = ServeArgs {
            sim_failure_rate: Some(1.5),
            ..Default::default()
        };
        assert!(Settings::load(&args).is_err());
    }

    #[test]
    fn extra_nef_subscription_fields_are_added_but_never_replace_the_adapters_own() {
        let load = |fields: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("qod.toml");
            std::fs::write(
                &path,
                format!(
                    "network = \"nef\"\nnef_url = \"http://nef\"\n[nef_subscription_fields]\n{fields}"
                ),
            )
            .unwrap();
            Settings::load(&ServeArgs {
                config: Some(path),
                ..Default::default()
            })
        };
        let nef = load("dnn = \"internet\"\n").unwrap().nef.unwrap();
        assert_eq!(nef.extra_fields["dnn"], "internet");
        let refused = load("qosReference = \"other\"\n").unwrap_err();
        assert!(
            format!("{refused:#}").contains("qosReference"),
            "{refused:#}"
        );
    }

    #[test]
    fn a_database_url_the_server_cannot_keep_data_in_is_refused_with_a_sentence() {
        let load = |url: &str| {
            Settings::load(&ServeArgs {
                database_url: Some(url.into()),
                ..Default::default()
            })
            .map(|s| s.database_url)
            .map_err(|e| format!("{e:#}"))
        };
        for (url, says) in [
            ("sqlite::memory:", "in-memory"),
            ("sqlite://file:x?mode=memory", "in-memory"),
            ("mysql://localhost/qod", "expected sqlite://PATH"),
            ("./qod.db", "expected sqlite://PATH"),
        ] {
            let refused = load(url).expect_err(url);
            assert!(refused.contains(says), "{url}: {refused}");
        }
        for url in [
            "sqlite://./data/q.db",
            "postgres://localhost/qod",
            "postgresql://u@h:5433/qod",
        ] {
            assert_eq!(load(url).unwrap(), url);
        }
    }

    #[test]
    fn the_v0_prefix_is_normalised_and_checked() {
        assert_eq!(
            super::v0_prefix(Some("camara/quality-on-demand/orange-lab/".into())).unwrap(),
            Some("/camara/quality-on-demand/orange-lab".into())
        );
        assert_eq!(super::v0_prefix(Some("/".into())).unwrap(), None);
        assert!(super::v0_prefix(Some("/a//b".into())).is_err());
        assert!(super::v0_prefix(Some("/a b".into())).is_err());
    }

    #[test]
    fn the_listen_address_takes_host_names_ip_addresses_and_a_bare_port() {
        let at = |raw: &str| {
            raw.parse::<Listen>()
                .and_then(|l| l.address().map_err(|e| format!("{e:#}")))
        };
        assert_eq!(at("8081").unwrap(), "127.0.0.1:8081".parse().unwrap());
        assert_eq!(at("localhost:8081").unwrap().port(), 8081);
        assert!(at("localhost:8081").unwrap().ip().is_loopback());
        assert_eq!(at("[::1]:8080").unwrap(), "[::1]:8080".parse().unwrap());
        assert_eq!(at("0.0.0.0:0").unwrap(), "0.0.0.0:0".parse().unwrap());
        for bad in [
            "",
            "localhost",
            "localhost:",
            "localhost:99999",
            "a b:80",
            ":80x",
        ] {
            let e = at(bad).unwrap_err();
            assert!(e.contains("expected HOST:PORT"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn every_default_is_shown_for_a_flag_and_is_the_one_loaded() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let longs: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        let shown = ServeArgs::defaults_for_help();
        assert!(shown.len() > 20, "{shown:?}");
        for flag in shown.keys() {
            assert!(
                longs.contains(flag),
                "default for --{flag}, which is no flag"
            );
        }
        assert_eq!(shown["listen"], "127.0.0.1:8080");
        assert_eq!(shown["grant-lifetime"], "15m");
        let loaded = Settings::load(&ServeArgs::default()).unwrap();
        let from_defaults = Settings::load(&ServeArgs::defaults()).unwrap();
        assert_eq!(format!("{loaded:?}"), format!("{from_defaults:?}"));
        assert_eq!(loaded.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(loaded.auth.max_active_sessions, 10_000);
    }

    #[test]
    fn a_nef_url_alone_means_the_nef_and_beside_a_simulated_network_is_refused() {
        let nef = ServeArgs {
            nef_url: Some("http://127.0.0.1:9090/v1".into()),
            ..Default::default()
        };
        assert_eq!(
            Settings::load(&nef).unwrap().nef.unwrap().url,
            "http://127.0.0.1:9090/v1"
        );
        let both = ServeArgs {
            network: Some(NetworkKind::Simulated),
            ..nef
        };
        let e = format!("{:#}", Settings::load(&both).unwrap_err());
        assert!(e.contains("--network is simulated"), "{e}");
        assert!(Settings::load(&ServeArgs::default()).unwrap().nef.is_none());
    }

    #[test]
    fn the_start_summary_names_what_was_chosen_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("nef.secret");
        std::fs::write(&secret, "s3cr3t-client-secret").unwrap();
        let path = dir.path().join("qod.toml");
        std::fs::write(
            &path,
            format!(
                "nef_url = \"http://127.0.0.1:9/v1\"\nnef_token_url = \"http://127.0.0.1:9/token\"\n\
                 nef_client_id = \"qod\"\nnef_client_secret_file = {:?}\n\
                 [workers.deliver_notification]\nconcurrency = 3\n",
                secret.display().to_string()
            ),
        )
        .unwrap();
        let s = Settings::load(&ServeArgs {
            config: Some(path.clone()),
            allow_insecure_sinks: Some(true),
            ..Default::default()
        })
        .unwrap();
        let line = s.summary();
        for part in [
            &format!("config {}", path.display()),
            "network nef http://127.0.0.1:9/v1",
            "auth dev",
            "sinks http(s), public addresses",
            "workers deliver_notification.concurrency=3",
            "(normal durability)",
        ] {
            assert!(line.contains(part), "{part:?} not in {line}");
        }
        assert!(!line.contains("s3cr3t"), "{line}");
        let plain = Settings::load(&ServeArgs::default()).unwrap().summary();
        assert!(
            plain.contains("config none") && plain.contains("workers built-in"),
            "{plain}"
        );
    }
}
