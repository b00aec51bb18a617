//! The one writer of this process: a dedicated thread owning a SQLite connection that runs
//! every write transaction. Callers hand it a closure; the thread runs whatever closures are
//! waiting as one transaction (each in its own savepoint, so one failure undoes only its own
//! writes), commits once, and only then answers each caller.
//!
//! Why: SQLite has one writer at a time. Through sqlx every statement is a round trip to the
//! connection's thread, and with several connections the losers of the write lock sleep in
//! SQLite's busy handler; the lock, not the disk, capped the server at ~300 lifecycles/s.
//! Here statements run at SQLite's own speed and a busy moment costs one commit, not one each.
//!
//! A throwaway store (a replay's, written one closure at a time) has no thread: see
//! `Writer::in_place`.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;

use super::readers::Readers;
use crate::config::Durability;
use crate::locks::lock;

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
    runs: Runs,
    counts: Arc<Counts>,
}

/// Where the closures run.
#[derive(Clone)]
enum Runs {
    /// On the writer thread, batched: its inbox.
    Thread(mpsc::Sender<Work>),
    /// On the caller's thread (see `Writer::in_place`).
    InPlace(Arc<InPlace>),
}

impl Writer {
    /// Opens the write connection with the same pragmas as the pool and starts its thread.
    pub fn open(
        path: &Path,
        durability: Durability,
        busy_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let conn = connect(path, durability, busy_timeout)?;
        let (queue, inbox) = mpsc::channel::<Work>();
        let counts = Arc::new(Counts::default());
        let served = counts.clone();
        std::thread::Builder::new()
            .name("qod-writer".into())
            .spawn(move || serve(conn, inbox, served))?;
        Ok(Self {
            runs: Runs::Thread(queue),
            counts,
        })
    }

    /// A writer without a thread, for a throwaway store (a replay's): each closure runs where
    /// it is called, in a long transaction (see `InPlace::run`), on the file's
    /// only connection, which the readers returned beside it share. A replay's writes come one at
    /// a time, each awaited before the next: a hand-over to a thread and back cost more than
    /// the write. Holding the file alone, the connection keeps its cache across transactions
    /// and needs neither the WAL nor the file locks; nothing is synced, since a crash only
    /// loses a store that was to be thrown away.
    pub fn in_place(path: &Path) -> anyhow::Result<(Self, Readers)> {
        Self::in_place_batched(path, IN_PLACE_BATCH)
    }

    /// `in_place`, committing every `batch` closures.
    fn in_place_batched(path: &Path, batch: usize) -> anyhow::Result<(Self, Readers)> {
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {} for writing", path.display()))?;
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = MEMORY; \
             PRAGMA synchronous = OFF; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
             PRAGMA cache_size = -64000;",
        )?;
        conn.set_prepared_statement_cache_capacity(96);
        let conn = Arc::new(Mutex::new(conn));
        let writer = Self {
            runs: Runs::InPlace(Arc::new(InPlace {
                conn: conn.clone(),
                open: Mutex::new(Open::default()),
                batch,
            })),
            counts: Arc::new(Counts::default()),
        };
        Ok((writer, Readers::on_writer(conn)))
    }

    /// Why an in-place writer stopped writing, if it did: what it answered as written before
    /// may be lost.
    pub fn failure(&self) -> Option<String> {
        match &self.runs {
            Runs::InPlace(place) => place.failure(),
            Runs::Thread(_) => None,
        }
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
        let queue = match &self.runs {
            Runs::Thread(queue) => queue,
            Runs::InPlace(place) => return place.run(&self.counts, f),
        };
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
            let result = guarded(tx, f);
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
        queue
            .send(work)
            .map_err(|_| anyhow::anyhow!("the writer thread stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the writer thread dropped a transaction"))?
    }
}

/// The write connection, with the same pragmas as the pool.
fn connect(path: &Path, durability: Durability, busy_timeout: Duration) -> anyhow::Result<Tx> {
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
    Ok(conn)
}

/// Runs `f`, a panic in it turned into its error.
fn guarded<T>(tx: &Tx, f: impl FnOnce(&Tx) -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(|| f(tx))).unwrap_or_else(|panic| {
        Err(anyhow::anyhow!(
            "write closure panicked: {}",
            crate::panics::message(&*panic)
        ))
    })
}

/// Write closures an in-place writer groups in one transaction. A transaction keeps the old
/// copy of each page it changes (in memory) and writes every changed page at its commit; after a
/// commit, the next change to a page copies it again. At 256 closures a commit, a 100k-session
/// replay spent a quarter of its time on those copies and writes; at 65,536 the commits cost
/// nothing measurable, and the old copies stay bounded by the pages one batch touches.
const IN_PLACE_BATCH: usize = 65_536;

/// The connection of an in-place writer and the transaction it keeps open.
struct InPlace {
    conn: Arc<Mutex<Tx>>,
    open: Mutex<Open>,
    /// Closures per transaction (`IN_PLACE_BATCH`).
    batch: usize,
}

#[derive(Default)]
struct Open {
    /// Closures in the open transaction.
    closures: usize,
    /// Why the store can no longer be written (a commit failed, or a closure after it wrote):
    /// what was
    /// answered as written may be lost, so nothing after it is trusted.
    failed: Option<String>,
}

impl InPlace {
    /// Runs `f` in the open transaction (opened if none is), committed every `batch` closures.
    /// The readers share the connection, so they see what was written whether committed or not;
    /// only a crash loses it, and then with the store.
    ///
    /// No savepoint per closure: it made SQLite copy every page a closure touched once more,
    /// a sixth of a replay. A closure refuses before it writes (conflicts, quotas, stale
    /// revisions), so its error changed nothing and the store goes on; one that fails after
    /// it changed rows (an SQLite error, a panic mid-way) leaves writes nothing can undo, and
    /// the store fails as on a failed commit.
    fn run<T>(
        &self,
        counts: &Counts,
        f: impl FnOnce(&Tx) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let conn = lock(&self.conn);
        let mut open = lock(&self.open);
        if let Some(e) = &open.failed {
            anyhow::bail!("the store failed earlier: {e}");
        }
        if conn.is_autocommit()
            && let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE")
        {
            return Err(fail(&mut open, format!("write transaction: {e}")));
        }
        let before = conn.total_changes();
        let result = guarded(&conn, f);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (an I/O error, a full disk).
            return Err(fail(
                &mut open,
                "the write transaction was rolled back under a write".into(),
            ));
        }
        match &result {
            Ok(_) => {
                open.closures += 1;
                counts.writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if conn.total_changes() != before => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(fail(
                    &mut open,
                    format!("a write failed after it changed the store: {e:#}"),
                ));
            }
            Err(_) => {}
        }
        if open.closures >= self.batch {
            open.closures = 0;
            if let Err(e) = run_cached(&conn, "COMMIT") {
                return Err(fail(&mut open, format!("commit failed: {e}")));
            }
            counts.commits.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Whether the store failed (see `Open::failed`).
    fn failure(&self) -> Option<String> {
        let open = lock(&self.open);
        open.failed.clone()
    }
}

/// Marks the in-place store failed: what it answered as written may be lost, so nothing after
/// it is trusted. The error to return.
fn fail(open: &mut Open, e: String) -> anyhow::Error {
    tracing::error!(error = %e, "write transaction failed");
    open.failed = Some(e.clone());
    anyhow::anyhow!(e)
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

fn serve(conn: Tx, inbox: mpsc::Receiver<Work>, counts: Arc<Counts>) {
    let mut previous: Option<Instant> = None;
    while let Ok(first) = inbox.recv() {
        let began = Instant::now();
        let linger = previous.is_some_and(|p| began - p < BUSY);
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

    #[tokio::test(flavor = "current_thread")]
    async fn in_place_a_refusal_changes_nothing_and_a_failure_after_writing_fails_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, readers) = Writer::in_place_batched(&dir.path().join("w.db"), 256).unwrap();
        writer
            .run(|tx| Ok(tx.execute_batch("CREATE TABLE t (n INTEGER NOT NULL)")?))
            .await
            .unwrap();
        for n in 0..20i64 {
            let r = writer
                .run(move |tx| {
                    anyhow::ensure!(n % 2 == 0, "odd {n}");
                    assert!(n % 5 != 4, "boom {n}");
                    tx.execute("INSERT INTO t (n) VALUES (?)", [n])?;
                    Ok(n)
                })
                .await;
            assert_eq!(r.is_ok(), n % 2 == 0 && n % 5 != 4, "run {n}: {r:?}");
        }
        let (count, odd): (i64, i64) = readers
            .read(|conn| {
                Ok(
                    conn.query_row("SELECT COUNT(*), SUM(n % 2) FROM t", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?,
                )
            })
            .unwrap();
        // 0..20 even: 10, less 4 and 14 (panicked). Uncommitted yet, and seen.
        assert_eq!((count, odd), (8, 0));
        assert_eq!(writer.counts().get(), (0, 9));
        for n in 0..300i64 {
            writer
                .run(move |tx| Ok(tx.execute("INSERT INTO t (n) VALUES (?)", [2 * n])?))
                .await
                .unwrap();
        }
        assert_eq!(writer.counts().get(), (1, 309));
        assert_eq!(writer.failure(), None);
        // Rows changed, then an error: nothing can undo them, so nothing more is written.
        let r: anyhow::Result<()> = writer
            .run(|tx| {
                tx.execute("INSERT INTO t (n) VALUES (1)", [])?;
                anyhow::bail!("after a write")
            })
            .await;
        assert!(r.unwrap_err().to_string().contains("after it changed"));
        assert!(
            writer
                .failure()
                .is_some_and(|e| e.contains("after a write"))
        );
        let later = writer
            .run(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (2)", [])?))
            .await;
        assert!(later.unwrap_err().to_string().contains("failed earlier"));
        // Nothing else may open the file meanwhile: the writer holds it alone.
        let other = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        assert!(
            other
                .query_row("SELECT COUNT(*) FROM t", [], |_| Ok(()))
                .is_err()
        );
    }
}
