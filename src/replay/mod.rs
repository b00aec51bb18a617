//! `qod replay FILE`: a recorded history run through this build in virtual time, with the
//! network and the sinks answering as recorded, and the transitions compared (see `driver`,
//! `report`).

pub mod driver;
pub mod generate;
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
    /// Also write what the replay itself did as a history (to compare line by line).
    #[arg(long)]
    pub save_run: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NetworkArg {
    Recorded,
    Simulated,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Sessions to create.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sessions: u64,
    /// Hours over which the sessions are created.
    #[arg(long)]
    pub hours: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shares of each kind of event, e.g. `v0=0.2,delete=0.1,refuse=0.05` (keys: v0, sink,
    /// delete, extend, overlap, refuse, fail, terminate, sink_fail, sink_slow, sink_gone,
    /// min_duration, max_duration; see the README for the defaults).
    #[arg(long, default_value = "")]
    pub mix: generate::Mix,
    /// The file to write (replaced if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

/// Where every generated history starts (a fixed instant: the same seed gives the same file).
const GENERATED_FROM_MS: i64 = 1_798_761_600_000; // 2027-01-01T00:00:00Z

pub async fn generate_history(args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.hours > 0.0 && args.hours <= 24.0 * 366.0,
        "--hours must be above 0 and at most a year, not {}",
        args.hours
    );
    let span_ms = (args.hours * 3_600_000.0) as i64;
    let steps = generate::commands(
        args.sessions,
        GENERATED_FROM_MS,
        span_ms,
        &args.mix,
        args.seed,
    );
    // Long enough for the last session to end, be extended, notified and purged.
    let tail_ms = i64::try_from(args.mix.max_duration).unwrap_or(86_400) * 1000 + 3_600_000;
    let end_ms = GENERATED_FROM_MS + span_ms + tail_ms;
    let defaults = crate::config::Settings::for_database("sqlite::memory:")?;
    let lifecycle = crate::recording::format::LifecycleSettings::of(&defaults);
    let header = crate::recording::format::Header {
        format: crate::recording::format::FORMAT.into(),
        version: crate::recording::format::VERSION,
        build: concat!("qod ", env!("CARGO_PKG_VERSION")).into(),
        since_ms: GENERATED_FROM_MS,
        until_ms: end_ms,
        session: None,
        settings: lifecycle,
    };
    let commands = steps.len();
    let scenario = driver::Scenario {
        steps,
        start_ms: GENERATED_FROM_MS,
        end_ms,
        settings: lifecycle,
        peers: driver::Peers::Synthetic {
            mix: args.mix.clone(),
            seed: args.seed,
        },
        export: Some((&args.out, header)),
        firings: Default::default(),
    };
    let options = Options {
        network: NetworkChoice::Recorded,
        speed: None,
        progress: true,
        seed: args.seed,
    };
    let (produced, counted) = driver::run(scenario, &options, Counted::default()).await?;
    let (sessions, transitions) = (counted.sessions.len(), counted.transitions);
    eprintln!(
        "generated {} sessions ({} transitions, {} commands) over {:.1} h in {:.1} s; written to {}",
        sessions,
        transitions,
        commands,
        args.hours,
        produced.wall.as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// The sessions and transitions a generation made.
#[derive(Default)]
struct Counted {
    sessions: std::collections::HashSet<String>,
    transitions: usize,
}

impl driver::Transitions for Counted {
    fn push(&mut self, session: &str, _: history::Seen) {
        self.transitions += 1;
        if !self.sessions.contains(session) {
            self.sessions.insert(session.to_owned());
        }
    }
}

/// Reads a history file as it streams in.
pub fn load(path: &std::path::Path) -> anyhow::Result<History> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let read = || -> anyhow::Result<History> {
        let (header, lines) = crate::recording::format::reader(std::io::BufReader::new(file))?;
        History::read(header, lines)
    };
    read().with_context(|| format!("reading the history {}", path.display()))
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if let Some(speed) = args.speed {
        anyhow::ensure!(speed > 0.0, "--speed must be above 0, not {speed}");
    }
    let History {
        header,
        inputs,
        expected,
    } = load(&args.file)?;
    let options = Options {
        network: match args.network {
            NetworkArg::Recorded => NetworkChoice::Recorded,
            NetworkArg::Simulated => NetworkChoice::Simulated,
        },
        speed: args.speed,
        progress: true,
        seed: args.seed,
    };
    // The inputs are handed to the run, which drops each as it is used: the report needs only
    // the transitions, and a day's history holds millions of inputs and answers.
    let input_count = inputs.steps.len();
    let scenario = driver::Scenario {
        steps: inputs.steps,
        start_ms: expected.start_ms,
        end_ms: expected.end_ms,
        settings: header.settings,
        peers: driver::Peers::Recorded {
            network: (options.network == NetworkChoice::Recorded).then_some(inputs.network),
            sinks: inputs.sinks,
        },
        export: args.save_run.as_deref().map(|path| (path, header.clone())),
        firings: inputs.firings,
    };
    let span_s = (expected.end_ms - expected.start_ms).max(0) as f64 / 1000.0;
    let sessions = expected.sessions.len();
    let comparison = report::Comparison::new(expected);
    let (produced, comparison) = driver::run(scenario, &options, comparison).await?;
    let report = Report::compare(&header, comparison, &produced);
    let wall_s = produced.wall.as_secs_f64();
    eprintln!(
        "replayed {:.1} h of history ({} sessions, {} inputs, {} instants) in {:.1} s: {:.0}x real time; peak memory {}",
        span_s / 3600.0,
        sessions,
        input_count,
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
