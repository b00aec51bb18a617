//! Command line: `qod serve` and friends.

mod history;
mod notifications;
mod token;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::Application;
use crate::config::{ServeArgs, Settings};

#[derive(Debug, Parser)]
#[command(name = "qod", version, about = "CAMARA Quality-On-Demand orchestrator")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to stderr: `text` for people, `json` for log pipelines (one
    /// object per line with the span's fields; a line also when a request's or a job's span
    /// closes).
    #[arg(
        long,
        global = true,
        env = "QOD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Export the request and job spans to this OTLP/HTTP collector (JSON encoding), e.g.
    /// `http://127.0.0.1:4318`; `/v1/traces` is appended unless the URL ends with it.
    #[arg(long, global = true, env = "QOD_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// Whether the command runs a history through a server of its own (replay, generate).
    pub fn runs_a_history(&self) -> bool {
        matches!(
            self.command,
            Command::Replay(_) | Command::History(history::Command::Generate(_))
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and run the lifecycle workers.
    Serve(Box<ServeArgs>),
    /// Drive a running server with session lifecycles and report throughput and latencies.
    Bench(Box<crate::bench::BenchArgs>),
    /// Run a fake NEF (3GPP AsSessionWithQoS) for demos and tests.
    FakeNef(FakeNefArgs),
    /// Mint access tokens signed with the development key (or the configured HS256 secret).
    #[command(subcommand)]
    Token(token::Command),
    /// Inspect and retry status notifications (works beside a running server).
    #[command(subcommand)]
    Notifications(notifications::Command),
    /// Replay a recorded history against this build in virtual time and report where it
    /// decides differently (exit status 0 only without divergences).
    Replay(Box<crate::replay::ReplayArgs>),
    /// Export the recorded history of inputs and transitions, for replays.
    #[command(subcommand)]
    History(history::Command),
    /// Create key files to share between the nodes of one database.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The metric contract.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Write the Prometheus rules and their promtool tests (as committed in dashboards/) into
    /// a folder.
    Alerts {
        #[arg(long, default_value = "dashboards")]
        out: std::path::PathBuf,
    },
    /// Write the Grafana dashboards (as committed in dashboards/) into a folder.
    Dashboards {
        #[arg(long, default_value = "dashboards")]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Print the catalogue of every metric /metrics exports (Markdown, as committed in
    /// dashboards/metrics.md).
    Catalogue,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new random 32-byte key (hex, owner-only) for --sealing-key-file or
    /// --dev-signing-key-file; an existing file is never overwritten.
    Generate {
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// The command line as typed, with `qod serve --help` showing each setting's default (the
/// settings are optional so that the config file can give them; their defaults live in
/// `ServeArgs::defaults`).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", |serve| {
        let defaults = ServeArgs::defaults_for_help();
        let shown: Vec<(clap::Id, String)> = serve
            .get_arguments()
            .filter_map(|arg| {
                let value = defaults.get(arg.get_long()?)?;
                Some((arg.get_id().clone(), value.clone()))
            })
            .collect();
        shown.into_iter().fold(serve, |serve, (id, value)| {
            serve.mut_arg(id, |arg| {
                let with_default = |help: Option<&clap::builder::StyledStr>| {
                    format!(
                        "{} [default: {value}]",
                        help.map(|h| h.to_string()).unwrap_or_default()
                    )
                };
                let long = arg.get_long_help().map(|h| with_default(Some(h)));
                let arg = arg.clone().help(with_default(arg.get_help()));
                match long {
                    Some(long) => arg.long_help(long),
                    None => arg,
                }
            })
        })
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Notifications(cmd) => notifications::run(cmd).await,
        Command::History(cmd) => history::run(cmd).await,
        Command::Replay(args) => crate::replay::run(*args).await,
        Command::Token(cmd) => token::run(cmd),
        Command::Alerts { out } => {
            for path in crate::alerts::write_all(&out)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Dashboards { out } => {
            for path in crate::dashboards::write_all(&out)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Metrics(MetricsCommand::Catalogue) => {
            print!("{}", crate::metrics::catalogue::markdown());
            Ok(())
        }
        Command::FakeNef(args) => fake_nef(args).await,
        Command::Bench(args) => crate::bench::run(*args).await,
        Command::Keys(KeysCommand::Generate { out }) => {
            crate::secrets::generate_key_file(&out)?;
            eprintln!(
                "wrote a new key to {} (owner-only); back it up",
                out.display()
            );
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    tracing::info!("settings: {}", settings.summary());
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr(), node = %app.node(), "qod listening");
    if let Some(token) = app.dev_token() {
        // On stdout, alone on its line, so that scripts can pick it up.
        println!("development access token (client dev-client, every scope, valid 24 h):");
        println!("{token}");
    }
    app.run_until(shutdown_signal()).await
}

#[derive(Debug, clap::Args)]
pub struct FakeNefArgs {
    /// Address to listen on: HOST:PORT or a bare PORT (port 0 picks one; it is logged).
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: crate::config::Listen,
    /// TOML file of delays, faults and event timing (README, "The fake NEF").
    #[arg(long)]
    behaviour: Option<std::path::PathBuf>,
    /// Serve https with this PEM certificate chain (needs `--tls-key`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

async fn fake_nef(args: FakeNefArgs) -> anyhow::Result<()> {
    let behaviour = crate::fake_nef::Behaviour::load(args.behaviour.as_deref())?;
    let addr = args.listen.address()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let tls = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    crate::fake_nef::serve(listener, behaviour, tls, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(path: &[&str]) -> String {
        let mut cmd = command();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub.find_subcommand_mut(name).expect("subcommand");
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn serve_help_shows_every_default() {
        let text = help(&["serve"]);
        for (flag, value) in ServeArgs::defaults_for_help() {
            let at = text
                .find(&format!("--{flag} "))
                .unwrap_or_else(|| panic!("--{flag} missing"));
            let entry = &text[at..];
            let end = entry[2..].find("\n      --").map_or(entry.len(), |e| e + 2);
            assert!(
                entry[..end].contains(&format!("[default: {value}]")),
                "--{flag} does not show its default {value}: {}",
                &entry[..end]
            );
        }
    }

    #[test]
    fn token_issue_help_names_only_what_mints_and_locates_the_key() {
        let text = help(&["token", "issue"]);
        for flag in ["--client", "--scope", "--ttl", "--database-url", "--config"] {
            assert!(text.contains(flag), "{flag} missing");
        }
        assert!(
            !text.contains("--sim-latency-ms"),
            "serve's flags leaked in"
        );
        assert!(text.lines().count() < 80, "{} lines", text.lines().count());
    }
}
