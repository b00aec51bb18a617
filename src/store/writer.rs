//! The one writer of this process: a dedicated thread owning a SQLite connection that runs
//! every write transaction. Callers hand it a closure; the thread runs whatever closures are
//! waiting as one transaction (each in its own savepoint, so one failure undoes only its own
//! writes), commits once, and only then answers each caller.
//!
//! Why: SQLite has one writer at a time. Through sqlx every statement is a round trip to the
//! connection's thread, and with several connections the losers of the write lock sleep in
//! SQLite's busy handler; the lock, not the disk, capped the server at ~300 lifecycles/s.
//! Here statements run at SQLite's own speed and a busy moment costs one commit, not one each.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;

use crate::config::Durability;

/// The connection a write closure gets, inside a transaction (a savepoint of the batch).
pub type Tx = rusqlite::Connection;

/// Closures that run together at most; more wait for the next commit.
const MAX_BATCH: usize = 512;

/// What the writer thread does with one closure: run it (or fail it, if no transaction could
/// be opened), then report the commit's outcome.
type Work = Box<dyn FnOnce(Result<&Tx, &str>) -> Ran + Send>;

/// Answers the caller once the batch's commit succeeded or failed.
type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;

struct Ran {
    ok: bool,
    finish: Finish,
}

#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Work>,
    counts: Arc<Counts>,
    /// Whether a batch lingers for company (see `LINGER`).
    linger: Arc<std::sync::atomic::AtomicBool>,
}

impl Writer {
    /// Opens the write connection with the same pragmas as the pool and starts its thread.
    pub fn open(
        path: &Path,
        durability: Durability,
        busy_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {} for writing", path.display()))?;
        conn.busy_timeout(busy_timeout)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32000;",
            match durability {
                Durability::Normal => "NORMAL",
                Durability::Full => "FULL",
            }
        ))?;
        conn.set_prepared_statement_cache_capacity(64);
        let (queue, inbox) = mpsc::channel::<Work>();
        let counts = Arc::new(Counts::default());
        let served = counts.clone();
        let linger = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let lingers = linger.clone();
        std::thread::Builder::new()
            .name("qod-writer".into())
            .spawn(move || serve(conn, inbox, served, &lingers))?;
        Ok(Self {
            queue,
            counts,
            linger,
        })
    }

    /// Turns the lingering for company off (or on again): a writer whose callers write one
    /// after another, each waiting for the last (a replay's virtual-time loop), would wait the
    /// linger out on every write.
    pub fn set_linger(&self, on: bool) {
        self.linger.store(on, Ordering::Relaxed);
    }

    /// What this writer committed so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Runs `f` in a write transaction; returns its result once the transaction committed.
    /// An error from `f` undoes what `f` wrote and nothing else.
    pub async fn run<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<anyhow::Result<T>>();
        let work: Work = Box::new(move |tx: Result<&Tx, &str>| {
            let tx = match tx {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = reply.send(Err(anyhow::anyhow!("write transaction: {e}")));
                    return Ran {
                        ok: false,
                        finish: Box::new(|_| {}),
                    };
                }
            };
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| f(tx))).unwrap_or_else(|panic| {
                    Err(anyhow::anyhow!(
                        "write closure panicked: {}",
                        crate::panics::message(&*panic)
                    ))
                });
            Ran {
                ok: result.is_ok(),
                finish: Box::new(move |committed: Result<(), &str>| {
                    let _ = reply.send(match committed {
                        Ok(()) => result,
                        Err(e) => Err(anyhow::anyhow!("commit failed: {e}")),
                    });
                }),
            }
        });
        self.queue
            .send(work)
            .map_err(|_| anyhow::anyhow!("the writer thread stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the writer thread dropped a transaction"))?
    }
}

/// Transaction control runs thousands of times a second: prepared once, not parsed each time.
fn run_cached(conn: &Tx, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// How long an open batch waits for more closures before it commits, while writes are
/// frequent. At a few thousand closures a second, one commit then carries several of them,
/// and commits (WAL frames, the lock, the wake-ups) are most of the writer's cost.
const LINGER: Duration = Duration::from_micros(1000);

/// A batch with fewer closures than this waits for more (while writes are frequent).
const LINGER_BELOW: usize = 16;

/// Writes count as frequent when the previous batch began less than this before.
const BUSY: Duration = Duration::from_millis(5);

/// What the writer committed so far: transactions, and the writes (closures) they carried.
#[derive(Debug, Default)]
pub struct Counts {
    commits: AtomicU64,
    writes: AtomicU64,
}

impl Counts {
    /// (commits, writes) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

fn serve(
    conn: Tx,
    inbox: mpsc::Receiver<Work>,
    counts: Arc<Counts>,
    lingers: &std::sync::atomic::AtomicBool,
) {
    let mut previous: Option<Instant> = None;
    while let Ok(first) = inbox.recv() {
        let began = Instant::now();
        let linger = lingers.load(Ordering::Relaxed) && previous.is_some_and(|p| began - p < BUSY);
        previous = Some(began);
        if let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE") {
            let e = e.to_string();
            first(Err(&e));
            while let Ok(work) = inbox.try_recv() {
                work(Err(&e));
            }
            continue;
        }
        let mut batch = Batch {
            conn: &conn,
            finishes: Vec::new(),
            broken: None,
        };
        batch.run(first);
        batch.take_waiting(&inbox);
        if linger && batch.finishes.len() < LINGER_BELOW {
            // Asleep, the writer is not woken by each closure that arrives meanwhile: one
            // wake-up per batch instead of one per closure. A batch that is already large
            // commits at once: under heavy load the sleep would only idle the writer.
            std::thread::sleep((began + LINGER).saturating_duration_since(Instant::now()));
            batch.take_waiting(&inbox);
        }
        let writes = batch.finishes.len() as u64;
        if batch.commit() {
            counts.commits.fetch_add(1, Ordering::Relaxed);
            counts.writes.fetch_add(writes, Ordering::Relaxed);
        }
    }
}

/// One write transaction of several closures, each in its own savepoint.
struct Batch<'c> {
    conn: &'c Tx,
    finishes: Vec<Finish>,
    /// Set when the transaction can no longer be trusted: everyone in it fails.
    broken: Option<String>,
}

impl Batch<'_> {
    /// Runs the closures waiting in the inbox, up to the batch's size.
    fn take_waiting(&mut self, inbox: &mpsc::Receiver<Work>) {
        while self.finishes.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(work) => self.run(work),
                Err(_) => break,
            }
        }
    }

    fn run(&mut self, work: Work) {
        if let Some(e) = &self.broken {
            work(Err(e));
            return;
        }
        if let Err(e) = run_cached(self.conn, "SAVEPOINT work") {
            let e = e.to_string();
            work(Err(&e));
            self.broken = Some(e);
            return;
        }
        let ran = work(Ok(self.conn));
        let ended = if ran.ok {
            run_cached(self.conn, "RELEASE work")
        } else {
            run_cached(self.conn, "ROLLBACK TO work")
                .and_then(|()| run_cached(self.conn, "RELEASE work"))
        };
        if let Err(e) = ended {
            self.broken = Some(e.to_string());
        }
        self.finishes.push(ran.finish);
    }

    /// Commits (or rolls back a broken batch) and answers everyone; true if it committed.
    fn commit(self) -> bool {
        let conn = self.conn;
        let committed = match &self.broken {
            Some(e) => Err(e.clone()),
            None => run_cached(conn, "COMMIT").map_err(|e| e.to_string()),
        };
        if committed.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = &committed {
            tracing::error!(error = %e, "write transaction failed");
        }
        for finish in self.finishes {
            finish(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
        committed.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_closure_undoes_only_its_own_writes_in_a_shared_batch() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::open(
            &dir.path().join("w.db"),
            Durability::Normal,
            Duration::from_secs(5),
        )
        .unwrap();
        writer
            .run(|tx| Ok(tx.execute_batch("CREATE TABLE t (n INTEGER NOT NULL)")?))
            .await
            .unwrap();
        // Many at once, so that they share batches.
        let runs = (0..200i64).map(|n| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run(move |tx| {
                        tx.execute("INSERT INTO t (n) VALUES (?)", [n])?;
                        anyhow::ensure!(n % 2 == 0, "odd {n}");
                        Ok(n)
                    })
                    .await
            })
        });
        let results = futures::future::join_all(runs).await;
        for (n, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap().is_ok(), n % 2 == 0, "run {n}");
        }
        let (count, odd): (i64, i64) = writer
            .run(|tx| {
                Ok(tx.query_row("SELECT COUNT(*), SUM(n % 2) FROM t", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?)
            })
            .await
            .unwrap();
        assert_eq!((count, odd), (100, 0));
    }

    #[tokio::test]
    async fn a_panicking_closure_is_an_error_and_the_writer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::open(
            &dir.path().join("w.db"),
            Durability::Normal,
            Duration::from_secs(5),
        )
        .unwrap();
        let r: anyhow::Result<()> = writer.run(|_| panic!("boom")).await;
        assert!(r.is_err());
        assert_eq!(writer.run(|_| Ok(7)).await.unwrap(), 7);
    }
}
