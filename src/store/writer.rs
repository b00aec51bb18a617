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
use std::sync::mpsc;
use std::time::Duration;

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
        std::thread::Builder::new()
            .name("qod-writer".into())
            .spawn(move || serve(conn, inbox))?;
        Ok(Self { queue })
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

fn serve(conn: Tx, inbox: mpsc::Receiver<Work>) {
    while let Ok(first) = inbox.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE") {
            let e = e.to_string();
            for work in batch {
                work(Err(&e));
            }
            continue;
        }
        let mut finishes = Vec::with_capacity(batch.len());
        let mut broken: Option<String> = None;
        for work in batch {
            if let Some(e) = &broken {
                work(Err(e));
                continue;
            }
            if let Err(e) = run_cached(&conn, "SAVEPOINT work") {
                broken = Some(e.to_string());
                work(Err(&e.to_string()));
                continue;
            }
            let ran = work(Ok(&conn));
            let ended = if ran.ok {
                run_cached(&conn, "RELEASE work")
            } else {
                run_cached(&conn, "ROLLBACK TO work")
                    .and_then(|()| run_cached(&conn, "RELEASE work"))
            };
            if let Err(e) = ended {
                // The batch can no longer be trusted: fail everyone in it.
                broken = Some(e.to_string());
            }
            finishes.push(ran.finish);
        }
        let committed = match &broken {
            Some(e) => Err(e.clone()),
            None => run_cached(&conn, "COMMIT").map_err(|e| e.to_string()),
        };
        if committed.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = &committed {
            tracing::error!(error = %e, "write transaction failed");
        }
        for finish in finishes {
            finish(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
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
