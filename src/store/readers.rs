//! Read connections of the SQLite file, used on the caller's own thread. A point read takes
//! microseconds; handing it to another thread and back (sqlx's driver does, twice per query)
//! cost more than the read itself, in thread wake-ups. Reads that scan (the census, operator
//! listings) go to tokio's blocking threads instead, so that no runtime thread waits on them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::locks::lock;
use anyhow::Context;
use rusqlite::Connection;

/// Idle connections kept for reuse; more are opened when several reads run at once.
const KEEP_IDLE: usize = 8;

#[derive(Clone)]
pub struct Readers {
    inner: Arc<Inner>,
}

/// Where the reads run.
enum Source {
    /// Connections of their own to the file.
    File {
        path: PathBuf,
        busy_timeout: Duration,
        idle: Mutex<Vec<Connection>>,
    },
    /// The one connection of an in-place writer (see `Writer::in_place`), which holds the
    /// file's lock for itself.
    Writer(Arc<Mutex<Connection>>),
}

struct Inner {
    source: Source,
}

impl Readers {
    pub fn new(path: &Path, busy_timeout: Duration) -> Self {
        Self::of(Source::File {
            path: path.to_owned(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Reads on the connection an in-place writer also writes on.
    pub fn on_writer(conn: Arc<Mutex<Connection>>) -> Self {
        Self::of(Source::Writer(conn))
    }

    fn of(source: Source) -> Self {
        Self {
            inner: Arc::new(Inner { source }),
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
        let (path, busy_timeout, idle) = match &self.source {
            Source::Writer(conn) => return f(&lock(conn)),
            Source::File {
                path,
                busy_timeout,
                idle,
            } => (path, *busy_timeout, idle),
        };
        let reused = lock(idle).pop();
        let conn = match reused {
            Some(conn) => conn,
            None => open(path, busy_timeout)?,
        };
        let result = f(&conn);
        let mut idle = lock(idle);
        if idle.len() < KEEP_IDLE {
            idle.push(conn);
        }
        result
    }
}

fn open(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("opening {} for reading", path.display()))?;
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch(
        "PRAGMA query_only = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000;",
    )?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}
