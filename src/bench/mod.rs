//! `qod bench`: drives a running server over HTTP with session lifecycles, receives their
//! notifications on its own sink, and reports throughput and latencies (a table, or JSON).

mod baselines;
mod prefill;
mod probe;
mod process;
mod sink;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::json;

use stats::{Summary, summarize};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Base URL of the server to drive.
    /// The server, or several nodes of one database separated by commas: creates go to them
    /// in turn, and their CPU and counters are summed.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    pub target: Vec<String>,
    /// Bearer token sent with every request.
    #[arg(long, env = "QOD_BENCH_TOKEN")]
    pub token: Option<String>,
    /// Session creates per second (default 100).
    #[arg(long, conflicts_with = "max", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// Create as fast as the concurrency allows.
    #[arg(long)]
    pub max: bool,
    /// How long to keep creating sessions, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = crate::span::parse)]
    pub duration: Duration,
    /// Duration of each session, in seconds.
    #[arg(long, default_value_t = 5)]
    pub session_duration: u32,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the bench's notification sink listens. The server must be allowed to reach it
    /// (`--allow-insecure-sinks --allow-private-sinks` for a local run).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sink_listen: SocketAddr,
    /// Seconds to wait, after the last session should have expired, for stragglers.
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
    /// Also measure the machine's baselines: SQLite commits and the job queue's default drain.
    #[arg(long)]
    pub baselines: bool,
    /// Long-lived sessions (no sink) to create before the measured load, to measure at a given
    /// number of active sessions.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// A scratch PostgreSQL database for the baselines on PostgreSQL (with --baselines): its
    /// one-row commit rate and apalis-postgres's drain. Not the server's database.
    #[arg(long)]
    pub baseline_database_url: Option<String>,
    /// Folder for the baselines' scratch databases (put it on the server's disk).
    #[arg(long, default_value = "./qod-data")]
    pub baseline_dir: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub load: String,
    pub duration_s: f64,
    pub session_duration_s: u32,
    pub prefilled: u64,
    pub created: u64,
    pub creates_per_s: f64,
    pub create_latency: Summary,
    pub create_to_available: Summary,
    pub expiry_lateness: Summary,
    pub lifecycles_completed: usize,
    pub lifecycles_per_s: f64,
    pub server_jobs_per_s: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    pub server_rss_bytes: Option<u64>,
    pub server_cpu_percent: Option<f64>,
    /// The server's CPU time per completed lifecycle, in milliseconds.
    pub server_cpu_ms_per_lifecycle: Option<f64>,
    /// The server's CPU time in the run by thread name (`main` for the main thread), seconds.
    pub server_cpu_by_thread: BTreeMap<String, f64>,
    /// The server's store commits and writes per completed lifecycle (from its `/metrics`).
    pub server_commits_per_lifecycle: Option<f64>,
    pub server_writes_per_lifecycle: Option<f64>,
    /// This bench's own CPU time per completed lifecycle, in milliseconds.
    pub bench_cpu_ms_per_lifecycle: Option<f64>,
    pub baselines: Option<baselines::Baselines>,
}

#[derive(Default)]
struct Shared {
    created: AtomicU64,
    create_ms: Mutex<Vec<f64>>,
    started: Mutex<HashMap<String, Instant>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, kind: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let targets: Vec<String> = args
        .target
        .iter()
        .map(|t| t.trim_end_matches('/').to_owned())
        .collect();
    anyhow::ensure!(!targets.is_empty(), "--target needs a server URL");
    let target = targets[0].clone();
    let (sink_addr, recorder) = sink::start(args.sink_listen)
        .await
        .context("starting the bench sink")?;
    let sink_url = format!("http://{sink_addr}/events");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(10))
        .build()?;
    for target in &targets {
        probe::one_session(&client, target, args.token.as_deref(), &sink_url).await?;
    }
    let baselines = if args.baselines {
        Some(baselines::measure(&args.baseline_dir, args.baseline_database_url.as_deref()).await?)
    } else {
        None
    };
    let server_pids: Option<Vec<u32>> = targets
        .iter()
        .map(|t| {
            reqwest::Url::parse(t)
                .ok()
                .filter(|u| matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")))
                .and_then(|u| u.port_or_known_default())
                .and_then(process::pid_listening_on)
        })
        .collect();
    let run_id: u32 = rand::random::<u32>() % 90 + 10;
    let prefilled = if args.prefill > 0 {
        prefill::run(
            &client,
            &target,
            args.token.as_deref(),
            args.prefill,
            args.concurrency,
            run_id,
        )
        .await?
    } else {
        0
    };
    if prefilled > 0 {
        wait_until_provisioned(&client, &target).await;
    }
    let jobs_before = scrape_jobs(&client, &targets).await;
    let writes_before = scrape_writes(&client, &targets).await;
    let cpu_before = server_pids.as_deref().and_then(process::cpu_seconds_of);
    let threads_before = server_pids.as_deref().and_then(process::cpu_by_thread_of);
    let own_before = process::cpu_seconds(std::process::id());

    let shared = Arc::new(Shared::default());
    let counter = Arc::new(AtomicU64::new(0));
    let rate = if args.max {
        None
    } else {
        Some(args.rate.unwrap_or(100).max(1))
    };
    let started = Instant::now();
    let deadline = started + args.duration;
    let tickets = rate.map(|r| spawn_ticker(r, deadline, args.concurrency));

    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, shared, counter, tickets) = (
            client.clone(),
            shared.clone(),
            counter.clone(),
            tickets.clone(),
        );
        let (targets, sink_url, token) = (targets.clone(), sink_url.clone(), args.token.clone());
        let session_duration = args.session_duration;
        workers.push(tokio::spawn(async move {
            loop {
                if let Some(t) = &tickets {
                    if t.lock().await.recv().await.is_none() {
                        return;
                    }
                } else if Instant::now() >= deadline {
                    return;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = json!({
                    "device": {"phoneNumber": format!("+4{run_id}{n:010}")},
                    "applicationServer": {"ipv4Address": "198.51.100.10"},
                    "qosProfile": "QOS_E",
                    "duration": session_duration,
                    "sink": sink_url,
                });
                let target = &targets[(n % targets.len() as u64) as usize];
                create_one(&client, target, token.as_deref(), &body, &shared).await;
            }
        }));
    }
    let progress = spawn_progress(shared.clone(), recorder.clone(), started, args.json);
    for w in workers {
        let _ = w.await;
    }
    let load_time = started.elapsed().as_secs_f64();
    let created = shared.created.load(Ordering::Relaxed);

    // Wait for the lifecycles to finish: every session expired and notified, or time is up.
    let wait_until =
        Instant::now() + Duration::from_secs(u64::from(args.session_duration) + args.grace);
    while Instant::now() < wait_until {
        let done = recorder
            .snapshot()
            .values()
            .filter(|a| a.expired_received.is_some())
            .count();
        if done as u64 >= created {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress.abort();

    let jobs_after = scrape_jobs(&client, &targets).await;
    let writes_after = scrape_writes(&client, &targets).await;
    let cpu_after = server_pids.as_deref().and_then(process::cpu_seconds_of);
    let threads_after = server_pids.as_deref().and_then(process::cpu_by_thread_of);
    let own_after = process::cpu_seconds(std::process::id());
    let total_time = started.elapsed().as_secs_f64();
    let arrivals = recorder.snapshot();
    let starts = shared
        .started
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut to_available = Vec::new();
    let mut lateness = Vec::new();
    for (id, t0) in &starts {
        let Some(a) = arrivals.get(id) else {
            shared.error("no notification".into());
            continue;
        };
        match a.available_at {
            Some(at) => to_available.push(at.duration_since(*t0).as_secs_f64() * 1000.0),
            None => shared.error("no AVAILABLE notification".into()),
        }
        match (a.started, a.expired_received) {
            (Some(s), Some(r)) => {
                let due = s + chrono::Duration::seconds(i64::from(args.session_duration));
                lateness.push((r - due).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
            _ if a.other_unavailable => {
                shared.error("ended otherwise than DURATION_EXPIRED".into())
            }
            _ => shared.error("no DURATION_EXPIRED notification".into()),
        }
    }
    let report = Report {
        target: targets.join(","),
        load: rate.map_or("max".to_owned(), |r| format!("{r}/s")),
        duration_s: load_time,
        session_duration_s: args.session_duration,
        prefilled,
        created,
        creates_per_s: created as f64 / load_time,
        create_latency: summarize(&shared.create_ms.lock().unwrap_or_else(|p| p.into_inner())),
        create_to_available: summarize(&to_available),
        expiry_lateness: summarize(&lateness),
        lifecycles_completed: lateness.len(),
        lifecycles_per_s: lateness.len() as f64 / load_time,
        server_jobs_per_s: jobs_before
            .zip(jobs_after)
            .map(|(b, a)| (a - b) / total_time),
        errors: shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        server_rss_bytes: server_pids
            .as_deref()
            .and_then(|pids| pids.iter().map(|p| process::rss_bytes(*p)).sum()),
        server_cpu_percent: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a - b) / total_time * 100.0),
        server_cpu_ms_per_lifecycle: cpu_before
            .zip(cpu_after)
            .and_then(|(b, a)| per_lifecycle(a - b, lateness.len())),
        server_cpu_by_thread: match (threads_before, threads_after) {
            (Some(before), Some(after)) => after
                .into_iter()
                .map(|(name, t)| {
                    let spent = t - before.get(&name).copied().unwrap_or(0.0);
                    (name, spent)
                })
                .collect(),
            _ => BTreeMap::new(),
        },
        server_commits_per_lifecycle: writes_before
            .zip(writes_after)
            .and_then(|(b, a)| per_lifecycle(a.0 - b.0, lateness.len()).map(|x| x / 1000.0)),
        server_writes_per_lifecycle: writes_before
            .zip(writes_after)
            .and_then(|(b, a)| per_lifecycle(a.1 - b.1, lateness.len()).map(|x| x / 1000.0)),
        bench_cpu_ms_per_lifecycle: own_before
            .zip(own_after)
            .and_then(|(b, a)| per_lifecycle(a - b, lateness.len())),
        baselines,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let failed: u64 = report.errors.values().sum();
    anyhow::ensure!(
        report.lifecycles_completed > 0,
        "no lifecycle completed ({failed} errors; see the report)"
    );
    anyhow::ensure!(
        failed == 0,
        "{failed} requests or lifecycles failed (see the report)"
    );
    Ok(())
}

/// CPU seconds spent over `lifecycles`, in milliseconds each.
fn per_lifecycle(cpu_seconds: f64, lifecycles: usize) -> Option<f64> {
    (lifecycles > 0).then(|| cpu_seconds * 1000.0 / lifecycles as f64)
}

async fn create_one(
    client: &reqwest::Client,
    target: &str,
    token: Option<&str>,
    body: &serde_json::Value,
    shared: &Shared,
) {
    let mut req = client
        .post(format!("{target}/quality-on-demand/v1/sessions"))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let t0 = Instant::now();
    match req.send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::CREATED => {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            match resp.json::<serde_json::Value>().await {
                Ok(v) => {
                    if let Some(id) = v["sessionId"].as_str() {
                        shared
                            .started
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id.to_owned(), t0);
                        shared
                            .create_ms
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(ms);
                        shared.created.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => shared.error("unreadable 201 body".into()),
            }
        }
        Ok(resp) => {
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let code = body["code"].as_str().unwrap_or("");
            shared.error(format!("http {} {code}", status.as_u16()));
        }
        Err(e) if e.is_timeout() => shared.error("timeout".into()),
        Err(e) if e.is_connect() => shared.error("connection refused or reset".into()),
        Err(_) => shared.error("request failed".into()),
    }
}

type Tickets = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<()>>>;

/// Hands out `rate` tickets per second until `deadline`; the workers share the receiver.
fn spawn_ticker(rate: u32, deadline: Instant, buffer: usize) -> Tickets {
    let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while Instant::now() < deadline {
            tick.tick().await;
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Arc::new(tokio::sync::Mutex::new(rx))
}

fn spawn_progress(
    shared: Arc<Shared>,
    recorder: sink::Recorder,
    started: Instant,
    quiet: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let arrivals = recorder.snapshot();
            let available = arrivals
                .values()
                .filter(|a| a.available_at.is_some())
                .count();
            let expired = arrivals
                .values()
                .filter(|a| a.expired_received.is_some())
                .count();
            let errors: u64 = shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .sum();
            let line = format!(
                "t={:>4.0}s created {:>8}  available {:>8}  expired {:>8}  errors {:>6}",
                started.elapsed().as_secs_f64(),
                shared.created.load(Ordering::Relaxed),
                available,
                expired,
                errors
            );
            if !quiet {
                eprintln!("{line}");
            } else {
                eprint!("\r{line}");
            }
        }
    })
}

/// Sum of jobs the server finished, from its metrics.
/// Waits until the server has no session left in REQUESTED, so that the measured load does
/// not queue behind the prefill's provisioning.
async fn wait_until_provisioned(client: &reqwest::Client, target: &str) {
    let started = Instant::now();
    loop {
        let requested = scrape_sum(client, target, "qod_sessions{", "REQUESTED").await;
        match requested {
            Some(n) if n > 0.0 => eprintln!(
                "prefill t={:>4.0}s waiting for the server to provision: {n} sessions REQUESTED",
                started.elapsed().as_secs_f64()
            ),
            _ => return,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sum of the server's metric samples whose line starts with `prefix` (name and labels) and
/// contains `filter`.
async fn scrape_sum(
    client: &reqwest::Client,
    target: &str,
    prefix: &str,
    filter: &str,
) -> Option<f64> {
    let text = client
        .get(format!("{target}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

async fn scrape_jobs(client: &reqwest::Client, targets: &[String]) -> Option<f64> {
    let mut sum = 0.0;
    for t in targets {
        sum += scrape_sum(client, t, "qod_jobs_total{", "outcome=\"succeeded\"").await?;
    }
    Some(sum)
}

/// The servers' store commits and writes so far, summed.
async fn scrape_writes(client: &reqwest::Client, targets: &[String]) -> Option<(f64, f64)> {
    let (mut commits, mut writes) = (0.0, 0.0);
    for t in targets {
        commits += scrape_sum(client, t, "qod_store_commits_total ", "").await?;
        writes += scrape_sum(client, t, "qod_store_writes_total ", "").await?;
    }
    Some((commits, writes))
}

fn print_table(r: &Report) {
    let row = |name: &str, s: &Summary| {
        println!(
            "{name:<34} {:>10.2} {:>10.2} {:>10.2} {:>9}",
            s.p50_ms, s.p99_ms, s.max_ms, s.count
        );
    };
    println!(
        "qod bench against {} (load {}, {:.1} s, sessions of {} s)",
        r.target, r.load, r.duration_s, r.session_duration_s
    );
    if r.prefilled > 0 {
        println!(
            "on top of {} long-lived sessions created first",
            r.prefilled
        );
    }
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>9}",
        "latency (ms)", "p50", "p99", "max", "samples"
    );
    row("create", &r.create_latency);
    row("create -> AVAILABLE notification", &r.create_to_available);
    row("expiresAt -> DURATION_EXPIRED recv", &r.expiry_lateness);
    println!();
    println!("{:<34} {:>10.1}", "creates/s", r.creates_per_s);
    println!(
        "{:<34} {:>10.1}   ({} completed)",
        "full lifecycles/s", r.lifecycles_per_s, r.lifecycles_completed
    );
    if let Some(j) = r.server_jobs_per_s {
        println!("{:<34} {:>10.1}", "server jobs/s (succeeded)", j);
    }
    if let Some(rss) = r.server_rss_bytes {
        println!(
            "{:<34} {:>10.1}",
            "server RSS (MiB)",
            rss as f64 / 1_048_576.0
        );
    }
    if let Some(cpu) = r.server_cpu_percent {
        println!("{:<34} {:>10.1}", "server CPU (% of one core)", cpu);
    }
    if let Some(ms) = r.server_cpu_ms_per_lifecycle {
        println!("{:<34} {:>10.3}", "server CPU per lifecycle (ms)", ms);
    }
    let total: f64 = r.server_cpu_by_thread.values().sum();
    if total > 0.0 {
        let share = |name: &str| {
            r.server_cpu_by_thread
                .iter()
                .filter(|(n, _)| n.starts_with(name))
                .map(|(_, t)| t)
                .sum::<f64>()
                / total
                * 100.0
        };
        println!(
            "{:<34} {:>10}",
            "server CPU share (%)",
            format!(
                "main {:.1} / writer {:.1} / tokio {:.1} / sqlx {:.1}",
                share("main"),
                share("qod-writer"),
                share("tokio"),
                share("sqlx")
            )
        );
    }
    if let (Some(c), Some(w)) = (
        r.server_commits_per_lifecycle,
        r.server_writes_per_lifecycle,
    ) {
        println!(
            "{:<34} {:>10}",
            "server commits / writes per cycle",
            format!("{c:.2} / {w:.2}")
        );
    }
    if let Some(ms) = r.bench_cpu_ms_per_lifecycle {
        println!("{:<34} {:>10.3}", "bench CPU per lifecycle (ms)", ms);
    }
    if let Some(b) = &r.baselines {
        println!();
        println!(
            "{:<34} {:>10.0}",
            "baseline: SQLite commits/s", b.sqlite_commits_per_s
        );
        println!(
            "{:<34} {:>10.0}",
            "baseline: job queue drain jobs/s", b.queue_drain_jobs_per_s
        );
        if let Some(ms) = r.server_cpu_ms_per_lifecycle {
            println!(
                "{:<34} {:>10.1}",
                "server CPU per lifecycle / commit",
                ms / 1000.0 * b.sqlite_commits_per_s
            );
        }
        if let Some(j) = r.server_jobs_per_s {
            println!(
                "{:<34} {:>10.2}",
                "ours / queue drain (jobs)",
                j / b.queue_drain_jobs_per_s
            );
            println!(
                "{:<34} {:>10.3}",
                "ours / SQLite commits",
                j / b.sqlite_commits_per_s
            );
        }
        if let (Some(commits), Some(drain)) =
            (b.postgres_commits_per_s, b.postgres_queue_drain_jobs_per_s)
        {
            println!("{:<34} {:>10.0}", "baseline: PostgreSQL commits/s", commits);
            println!("{:<34} {:>10.0}", "baseline: apalis-postgres jobs/s", drain);
            if let Some(j) = r.server_jobs_per_s {
                println!(
                    "{:<34} {:>10.2}",
                    "ours / apalis-postgres (jobs)",
                    j / drain
                );
                println!("{:<34} {:>10.3}", "ours / PostgreSQL commits", j / commits);
            }
        }
    }
    println!();
    if r.errors.is_empty() {
        println!("errors: none");
    } else {
        for (kind, n) in &r.errors {
            println!("error {kind}: {n}");
        }
    }
}
