//! `qod notifications list|retry`: the operator's view of the notification outbox.

use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::config::{DEFAULT_DATABASE_URL, Settings};
use crate::domain::SessionId;
use crate::jobs::DeliverNotification;
use crate::lifecycle::ScheduledJob;
use crate::store::{self, NotificationFilter, SharedStore, state};

#[derive(Debug, Args)]
pub struct Database {
    /// The server's database.
    #[arg(long, env = "QOD_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

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
        db: Database,
    },
    /// Send a dead letter again, with a fresh series of attempts.
    Retry {
        /// The notification (CloudEvents) id.
        id: Uuid,
        #[command(flatten)]
        db: Database,
    },
}

async fn open(db: &Database) -> anyhow::Result<SharedStore> {
    let settings = Settings::for_database(&db.database_url)?;
    anyhow::ensure!(
        store::database_path(&db.database_url).is_some_and(|p| p.exists()),
        "no database at {}",
        db.database_url
    );
    Ok(store::open_sqlite(&settings).await?)
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::List {
            dead,
            session,
            limit,
            db,
        } => {
            let store = open(&db).await?;
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
            eprintln!("{} notification(s)", rows.len());
            Ok(())
        }
        Command::Retry { id, db } => {
            let store = open(&db).await?;
            let now = crate::clock::Clock::now(&crate::clock::SystemClock);
            let job = ScheduledJob::new(
                DeliverNotification {
                    notification_id: id,
                },
                now,
            );
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
