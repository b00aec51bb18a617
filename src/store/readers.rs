//! Read connections of the SQLite file, used on the caller's own thread. A point read takes
//! microseconds; handing it to another thread and back (sqlx's driver does, twice per query)
//! cost more than the read itself, in thread wake-ups. Reads that scan (the census, operator
//! listings) go to tokio's blocking threads instead, so that no runtime thread waits on them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

/// Idle connections kept for reuse; more are opened when several reads run at once.
const KEEP_IDLE: usize = 8;

#[derive(Clone)]
pub struct Readers {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: &Path, busy_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                busy_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs a short read here, on this thread.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        self.inner.read(f)
    }

    /// Runs a read that may scan many rows on a blocking thread.
    pub async fn scan<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.read(f))
            .await
            .context("read task")?
    }
}

impl Inner {
    fn read<T>(&self, f: impl FnOnce(&Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let idle = self.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&conn);
        let mut idle = self.lock();
        if idle.len() < KEEP_IDLE {
            idle.push(conn);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> anyhow::Result<Connection> {
        let conn = Connection::open(&self.path)
            .with_context(|| format!("opening {} for reading", self.path.display()))?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.execute_batch(
            "PRAGMA query_only = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000;",
        )?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }
}
