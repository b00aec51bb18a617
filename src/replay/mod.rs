//! `qod replay FILE`: a recorded history run through this build in virtual time, with the
//! network and the sinks answering as recorded, and the transitions compared (see `driver`,
//! `report`).

pub mod driver;
pub mod history;
pub mod peers;
pub mod report;

use std::path::PathBuf;

use anyhow::Context;

pub use driver::{NetworkChoice, Options};
pub use history::History;
pub use report::Report;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The history (`qod history export`, `qod history generate`).
    pub file: PathBuf,
    /// Write the report here instead of to stdout.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The report as JSON.
    #[arg(long)]
    pub json: bool,
    /// At most this many times real time.
    #[arg(long, conflicts_with = "max")]
    pub speed: Option<f64>,
    /// As fast as it goes (the default).
    #[arg(long)]
    pub max: bool,
    /// Who answers the provisioning: the history (`recorded`) or the simulated network.
    #[arg(long, value_enum, default_value = "recorded")]
    pub network: NetworkArg,
    /// Seed of the replay's draws (retry jitter).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NetworkArg {
    Recorded,
    Simulated,
}

/// Reads a history file.
pub fn load(path: &std::path::Path) -> anyhow::Result<History> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (header, lines) = crate::recording::format::read(&text)
        .with_context(|| format!("reading the history {}", path.display()))?;
    Ok(History::new(header, lines))
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if let Some(speed) = args.speed {
        anyhow::ensure!(speed > 0.0, "--speed must be above 0, not {speed}");
    }
    let history = load(&args.file)?;
    let options = Options {
        network: match args.network {
            NetworkArg::Recorded => NetworkChoice::Recorded,
            NetworkArg::Simulated => NetworkChoice::Simulated,
        },
        speed: args.speed,
        progress: true,
        seed: args.seed,
    };
    let produced = driver::run(&history, &options).await?;
    let report = Report::compare(&history, &produced);
    let span_s = (history.end_ms - history.start_ms).max(0) as f64 / 1000.0;
    let wall_s = produced.wall.as_secs_f64();
    eprintln!(
        "replayed {:.1} h of history ({} sessions, {} inputs, {} instants) in {:.1} s: {:.0}x real time; peak memory {}",
        span_s / 3600.0,
        history.sessions.len(),
        history.steps.len(),
        produced.steps,
        wall_s,
        span_s / wall_s.max(1e-9),
        peak_rss().map_or("unknown".into(), |kb| format!("{} MB", kb / 1024)),
    );
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.text()
    };
    match &args.report {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("writing the report {}", path.display()))?,
        None => print!("{text}"),
    }
    if report.diverged() {
        anyhow::bail!(
            "the replay diverged from the history in {} places",
            report.divergences.len()
        );
    }
    Ok(())
}

/// This process's peak resident memory in KiB (Linux).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
