//! `qod notifications list|retry`: the operator's view of the notification outbox.

use clap::Subcommand;
use uuid::Uuid;

use crate::config::{ServeArgs, ServerLocation};
use crate::domain::SessionId;
use crate::jobs::DeliverNotification;
use crate::lifecycle::ScheduledJob;
use crate::store::{self, NotificationFilter, SharedStore, state};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List notifications, oldest first.
    List {
        /// Only dead letters.
        #[arg(long)]
        dead: bool,
        /// Only this session's.
        #[arg(long)]
        session: Option<Uuid>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[command(flatten)]
        server: ServerLocation,
    },
    /// Send a dead letter again, with a fresh series of attempts.
    Retry {
        /// The notification (CloudEvents) id.
        id: Uuid,
        #[command(flatten)]
        server: ServerLocation,
    },
}

async fn open(server: &ServerLocation) -> anyhow::Result<SharedStore> {
    let settings = server.settings(ServeArgs::default())?;
    store::open_beside_server(&settings).await
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::List {
            dead,
            session,
            limit,
            server,
        } => {
            let store = open(&server).await?;
            let rows = store
                .notifications(NotificationFilter {
                    state: dead.then_some(state::DEAD),
                    session: session.map(SessionId),
                    limit,
                })
                .await?;
            println!(
                "{:<36}  {:<36}  {:>3}  {:<9}  {:>8}  {:<24}  LAST ERROR",
                "ID", "SESSION", "SEQ", "STATE", "ATTEMPTS", "CREATED"
            );
            for n in &rows {
                println!(
                    "{:<36}  {:<36}  {:>3}  {:<9}  {:>8}  {:<24}  {}",
                    n.id,
                    n.session_id,
                    n.seq,
                    n.state,
                    n.attempts,
                    n.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    n.last_error.as_deref().unwrap_or("-")
                );
            }
            if rows.len() as i64 >= limit {
                eprintln!(
                    "{} notification(s) shown: the first {limit}; there may be more \
                     (--limit N, or narrow with --dead / --session)",
                    rows.len()
                );
            } else {
                eprintln!("{} notification(s)", rows.len());
            }
            Ok(())
        }
        Command::Retry { id, server } => {
            let store = open(&server).await?;
            let now = crate::clock::Clock::now(&crate::clock::SystemClock);
            let job = ScheduledJob::new(DeliverNotification::new(id), now);
            let revived = store.revive_notification(id, job).await?;
            store.close().await;
            anyhow::ensure!(
                revived,
                "notification {id} is not a dead letter (unknown, pending or delivered)"
            );
            println!("notification {id} queued for delivery again");
            Ok(())
        }
    }
}
