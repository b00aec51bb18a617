//! `qod history export`: the recorded inputs and transitions as a file for replays.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use uuid::Uuid;

use crate::config::{ServeArgs, ServerLocation};
use crate::domain::SessionId;
use crate::recording::export::export;
use crate::recording::format::{FORMAT, Header, LifecycleSettings, VERSION};
use crate::store::{self, HistoryFilter};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the recorded history (JSON Lines, format in the README) to a file; works beside a
    /// running server.
    Export {
        /// From this instant on (RFC 3339) [default: the beginning].
        #[arg(long, value_parser = instant)]
        since: Option<DateTime<Utc>>,
        /// Up to this instant, excluded (RFC 3339) [default: now].
        #[arg(long, value_parser = instant)]
        until: Option<DateTime<Utc>>,
        /// Only this session's inputs and transitions.
        #[arg(long)]
        session: Option<Uuid>,
        /// The file to write (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        server: ServerLocation,
    },
    /// Write a synthetic history drawn from a seed (creates through v0 and v1, overlapping
    /// creates, extends, deletes, network refusals, outages and terminations, failing, slow
    /// and gone sinks), made by running its inputs through this build in virtual time.
    Generate(crate::replay::GenerateArgs),
}

fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 instant such as 2026-12-01T00:00:00Z: {e}"))
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    let (since, until, session, out, server) = match cmd {
        Command::Generate(args) => return crate::replay::generate_history(args).await,
        Command::Export {
            since,
            until,
            session,
            out,
            server,
        } => (since, until, session, out, server),
    };
    let settings = server.settings(ServeArgs::default())?;
    let since_ms = since.map_or(0, |t| t.timestamp_millis());
    let until_ms = until.unwrap_or_else(Utc::now).timestamp_millis();
    anyhow::ensure!(since_ms < until_ms, "--since must come before --until");
    let store = store::open_beside_server(&settings).await?;
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        build: concat!("qod ", env!("CARGO_PKG_VERSION")).into(),
        since_ms,
        until_ms,
        session: session.map(|s| s.to_string()),
        settings: LifecycleSettings::of(&settings),
    };
    let filter = HistoryFilter {
        since_ms,
        until_ms,
        session: session.map(SessionId),
    };
    let rows = export(&store, filter, &header, &out).await?;
    store.close().await;
    eprintln!("history export: {rows} lines written to {}", out.display());
    Ok(())
}
