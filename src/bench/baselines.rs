//! The machine's own limits, measured in the same run as the bench so figures compare across
//! machines: SQLite's rate of one-row commits with the server's pragmas, and how fast the job
//! queue library drains no-op jobs when used with its defaults; with a PostgreSQL database,
//! the same two on it (one-row commits with the server's settings, apalis-postgres's drain).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgPool, SqlitePool};

#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    pub sqlite_commits_per_s: f64,
    pub queue_drain_jobs_per_s: f64,
    pub postgres_commits_per_s: Option<f64>,
    pub postgres_queue_drain_jobs_per_s: Option<f64>,
}

const COMMIT_SECONDS: f64 = 3.0;
const DRAIN_JOBS: u64 = 5_000;

/// The baselines; `postgres`: a scratch PostgreSQL database for its two (a table and
/// apalis's schema are created in it).
pub async fn measure(dir: &Path, postgres: Option<&str>) -> anyhow::Result<Baselines> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let steps = if postgres.is_some() { 4 } else { 2 };
    eprintln!(
        "baseline 1/{steps}: SQLite one-row commits for {COMMIT_SECONDS} s in {}",
        dir.display()
    );
    let sqlite_commits_per_s = commit_rate(&dir.join("baseline-commits.db")).await?;
    eprintln!(
        "baseline 2/{steps}: the job queue draining {DRAIN_JOBS} no-op jobs with its defaults"
    );
    let queue_drain_jobs_per_s = drain_rate(&dir.join("baseline-queue.db")).await?;
    let (mut postgres_commits_per_s, mut postgres_queue_drain_jobs_per_s) = (None, None);
    if let Some(url) = postgres {
        eprintln!("baseline 3/4: PostgreSQL one-row commits for {COMMIT_SECONDS} s");
        postgres_commits_per_s = Some(pg_commit_rate(url).await?);
        eprintln!(
            "baseline 4/4: apalis-postgres draining {DRAIN_JOBS} no-op jobs with its defaults"
        );
        postgres_queue_drain_jobs_per_s = Some(pg_drain_rate(url).await?);
    }
    Ok(Baselines {
        sqlite_commits_per_s,
        queue_drain_jobs_per_s,
        postgres_commits_per_s,
        postgres_queue_drain_jobs_per_s,
    })
}

async fn pg_commit_rate(url: &str) -> anyhow::Result<f64> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("connecting to the baseline database")?;
    sqlx::query("DROP TABLE IF EXISTS qod_baseline_commits")
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "CREATE TABLE qod_baseline_commits (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)",
    )
    .execute(&mut conn)
    .await?;
    let payload = vec![7u8; 200];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < COMMIT_SECONDS {
        sqlx::query("INSERT INTO qod_baseline_commits (payload) VALUES ($1)")
            .bind(&payload)
            .execute(&mut conn)
            .await?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE qod_baseline_commits")
        .execute(&mut conn)
        .await?;
    Ok(rate)
}

async fn pg_drain_rate(url: &str) -> anyhow::Result<f64> {
    let pool = PgPool::connect(url).await?;
    PostgresStorage::setup(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("apalis-postgres setup: {e}"))?;
    let mut storage = PostgresStorage::<u64>::new(&pool);
    let jobs: Vec<u64> = (0..DRAIN_JOBS).collect();
    storage
        .push_bulk(jobs)
        .await
        .map_err(|e| anyhow::anyhow!("pushing baseline jobs: {e}"))?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let worker = WorkerBuilder::new("baseline-drain-postgres")
        .backend(storage)
        .data(done.clone())
        .build(count_job);
    let rate = drained_rate(worker.run(), &done, started).await;
    pool.close().await;
    Ok(rate)
}

/// Runs `worker` until it counted every job in `done` (at most 2 minutes); jobs per second.
async fn drained_rate(worker: impl Future, done: &AtomicU64, started: Instant) -> f64 {
    let drained = async {
        let timeout = Instant::now() + Duration::from_secs(120);
        while done.load(Ordering::Relaxed) < DRAIN_JOBS && Instant::now() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = worker => {}
        () = drained => {}
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn fresh(path: &Path) -> SqliteConnectOptions {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
}

async fn commit_rate(path: &Path) -> anyhow::Result<f64> {
    let mut conn = fresh(path).connect().await?;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        .execute(&mut conn)
        .await?;
    let payload = vec![7u8; 200];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < COMMIT_SECONDS {
        sqlx::query("INSERT INTO t (payload) VALUES (?)")
            .bind(&payload)
            .execute(&mut conn)
            .await?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(conn);
    let _ = std::fs::remove_file(path);
    Ok(rate)
}

async fn drain_rate(path: &Path) -> anyhow::Result<f64> {
    let pool = SqlitePool::connect_with(fresh(path)).await?;
    SqliteStorage::setup(&pool).await?;
    let mut storage = SqliteStorage::<u64>::new(&pool);
    let jobs: Vec<u64> = (0..DRAIN_JOBS).collect();
    storage
        .push_bulk(jobs)
        .await
        .map_err(|e| anyhow::anyhow!("pushing baseline jobs: {e}"))?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let worker = WorkerBuilder::new("baseline-drain")
        .backend(storage)
        .data(done.clone())
        .build(count_job);
    let rate = drained_rate(worker.run(), &done, started).await;
    pool.close().await;
    let _ = std::fs::remove_file(path);
    Ok(rate)
}

async fn count_job(_job: u64, done: Data<Arc<AtomicU64>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
