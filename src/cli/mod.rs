//! Command line: `qod serve` and friends.

mod notifications;
mod token;

use clap::{Parser, Subcommand};

use crate::Application;
use crate::config::{ServeArgs, Settings};

#[derive(Debug, Parser)]
#[command(name = "qod", version, about = "CAMARA Quality-On-Demand orchestrator")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and run the lifecycle workers.
    Serve(Box<ServeArgs>),
    /// Drive a running server with session lifecycles and report throughput and latencies.
    Bench(Box<crate::bench::BenchArgs>),
    /// Mint access tokens signed with the development key (or the configured HS256 secret).
    #[command(subcommand)]
    Token(token::Command),
    /// Inspect and retry status notifications (works beside a running server).
    #[command(subcommand)]
    Notifications(notifications::Command),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Notifications(cmd) => notifications::run(cmd).await,
        Command::Token(cmd) => token::run(cmd),
        Command::Bench(args) => crate::bench::run(*args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr(), "qod listening");
    if let Some(token) = app.dev_token() {
        // On stdout, alone on its line, so that scripts can pick it up.
        println!("development access token (client dev-client, every scope, valid 24 h):");
        println!("{token}");
    }
    app.run_until(shutdown_signal()).await
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
