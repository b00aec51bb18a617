//! The one door for write transactions of this process: a single connection kept for writing,
//! taken in turn. SQLite has a single writer; when several of our own connections race for its
//! lock, the losers sleep in SQLite's busy handler (1, 2, 5, 10 … ms) and throughput collapses.
//! Queuing here first, in order, hands the lock over without sleeps and keeps one connection's
//! statement cache and thread hot; the busy timeout is left for writers outside this process.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{Connection, Executor, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Clone)]
pub struct Writer {
    conn: Arc<Mutex<SqliteConnection>>,
}

/// A write transaction holding the write connection until it commits or is dropped; a dropped
/// transaction is rolled back before the connection serves anyone else.
pub struct WriteTx {
    conn: Option<OwnedMutexGuard<SqliteConnection>>,
}

impl Writer {
    pub async fn open(options: &sqlx::sqlite::SqliteConnectOptions) -> anyhow::Result<Self> {
        let conn = SqliteConnection::connect_with(options).await?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Waits for this process's turn, then takes SQLite's write lock up front (BEGIN
    /// IMMEDIATE), so what the transaction reads cannot change before it commits: the overlap
    /// check and every read-modify-write rely on this.
    pub async fn begin(&self) -> anyhow::Result<WriteTx> {
        let mut conn = self.conn.clone().lock_owned().await;
        conn.execute("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { conn: Some(conn) })
    }
}

impl WriteTx {
    pub async fn commit(mut self) -> anyhow::Result<()> {
        let mut conn = self.conn.take().expect("a transaction commits once");
        match conn.execute("COMMIT").await {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = conn.execute("ROLLBACK").await;
                Err(e.into())
            }
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Not committed (an early return or an error): roll back while still holding the
            // turn, so the next writer starts from a clean connection.
            tokio::spawn(async move {
                if let Err(e) = conn.execute("ROLLBACK").await {
                    tracing::error!(error = %e, "rolling back an abandoned write transaction");
                }
            });
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn.as_deref().expect("open transaction")
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_deref_mut().expect("open transaction")
    }
}
