//! Storage: the port the rest of the server speaks (`port`), and its SQLite implementation
//! (`sqlite`: the pool with the same durability pragmas on every connection, the writer
//! thread, migrations, and the SQL in small functions per table). No SQL and no driver type
//! leaves this module.

mod events;
pub mod fence;
mod history;
mod inputs;
mod jobs;
mod ledger;
mod notifications;
mod port;
mod postgres;
mod readers;
mod sessions;
mod sqlite;
pub mod writer;

pub use history::Purged;
pub use jobs::{ClaimedRow, Depth};
pub use notifications::{ForDelivery, NewNotification, Notification, state};
pub use port::{
    Census, Claim, Claimed, Created, Decide, GrantLedger, HistoryEntry, HistoryFilter, HistoryRow,
    HistorySink, JobWake, NotificationFilter, Provisioned, RoundTime, SessionCount, Settled,
    Settlement, SharedStore, StaleRevision, Store, Write, WriteCounts,
};
pub use postgres::{PgStore, redacted as redacted_url};
pub use sqlite::SqliteStore;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::config::{Durability, Settings};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connection options that every pooled connection gets: WAL, the chosen `synchronous`, a busy
/// timeout long enough that another writer's lock never surfaces as an error, foreign keys.
pub fn connect_options(settings: &Settings) -> anyhow::Result<SqliteConnectOptions> {
    let opts = SqliteConnectOptions::from_str(&settings.database_url)
        .with_context(|| format!("invalid database URL {}", settings.database_url))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match settings.durability {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Full => SqliteSynchronous::Full,
        })
        .busy_timeout(settings.busy_timeout)
        .foreign_keys(true)
        .pragma("temp_store", "MEMORY")
        .pragma("cache_size", "-32000");
    Ok(opts)
}

/// Makes the database's folder (owner-only when this creates it) and keeps the database and
/// its WAL and shared-memory files owner-only: they hold phone numbers, flows and sink URLs.
/// SQLite gives the WAL and shared-memory files the database file's mode, so the database is
/// created here, before SQLite opens it.
pub fn prepare_data_files(db: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if !db.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
            .with_context(|| format!("creating {}", db.display()))?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} owner-only", file.display()))?;
            tracing::info!(file = %file.display(), "made the database file owner-only (0600)");
        }
    }
    Ok(())
}

/// The database file behind a URL, if it is a file.
pub fn database_path(database_url: &str) -> Option<PathBuf> {
    if crate::config::is_postgres_url(database_url) {
        return None;
    }
    let opts = SqliteConnectOptions::from_str(database_url).ok()?;
    let path = opts.get_filename();
    let s = path.to_string_lossy();
    (!s.is_empty() && s != ":memory:").then(|| path.to_path_buf())
}

/// Opens the pool (creating the data folder) and brings both schemas up to date.
pub async fn open(settings: &Settings) -> anyhow::Result<SqlitePool> {
    if let Some(path) = database_path(&settings.database_url)
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data folder {}", dir.display()))?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        // Every connection is local and checked by its own use; a ping before each acquire
        // would only add a round trip.
        .test_before_acquire(false)
        .min_connections(1)
        .connect_with(connect_options(settings)?)
        .await
        .with_context(|| format!("opening {}", settings.database_url))?;
    migrate(&pool).await?;
    Ok(pool)
}

/// The key that seals stored secrets lives beside the database file, never inside it. With
/// PostgreSQL there is no such file and every node must open what another sealed: the key
/// file is then configured.
pub fn secret_key_path(settings: &Settings) -> anyhow::Result<KeyFile> {
    Ok(match &settings.sealing_key_file {
        Some(path) => KeyFile::Configured(path.clone()),
        None => KeyFile::BesideDatabase(
            key_beside_database(settings, "--sealing-key-file")?.with_extension("key"),
        ),
    })
}

/// The SQLite file next to which a key is kept by default; with PostgreSQL, the error that
/// names the flag to give instead.
fn key_beside_database(settings: &Settings, flag: &str) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        !settings.is_postgres(),
        "with PostgreSQL, every node needs the same key: give {flag} FILE (create the file once \
         with `qod keys generate --out FILE` and give it to every node)"
    );
    database_file(settings)
}

/// Where a key is kept: a configured file (shared by several nodes, so never created here:
/// one node creating its own would seal what the others cannot open) or beside the SQLite file
/// (created on first start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFile {
    Configured(PathBuf),
    BesideDatabase(PathBuf),
}

impl KeyFile {
    pub fn path(&self) -> &Path {
        match self {
            Self::Configured(p) | Self::BesideDatabase(p) => p,
        }
    }

    /// The key, created first when it is kept beside the database and missing.
    pub fn load(&self, purpose: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::BesideDatabase(path) => crate::secrets::key_file(path, purpose),
            Self::Configured(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "the configured key file {} does not exist: create it once with \
                     `qod keys generate --out {}` and give every node the same file",
                    path.display(),
                    path.display()
                );
                crate::secrets::key_file(path, purpose)
            }
        }
    }
}

/// The development token-signing key (`qod serve` without auth configuration, `qod token
/// issue`) lives in the data folder beside the database.
pub fn dev_signing_key_path(settings: &Settings) -> anyhow::Result<KeyFile> {
    Ok(match &settings.dev_signing_key_file {
        Some(path) => KeyFile::Configured(path.clone()),
        None => KeyFile::BesideDatabase(
            key_beside_database(settings, "--dev-signing-key-file")?
                .with_extension("dev-signing.key"),
        ),
    })
}

/// The SQLite store of `settings`: its pool (schema brought up to date), its writer and
/// its readers. A throwaway store (`throwaway_store`) has one connection, the writer's: its
/// pool only migrates the schema and is closed, so that the writer may hold the file alone.
pub async fn open_sqlite(settings: &Settings) -> anyhow::Result<std::sync::Arc<SqliteStore>> {
    let pool = open(settings).await?;
    let file = database_file(settings)?;
    let (writer, readers) = if settings.throwaway_store {
        pool.close().await;
        writer::Writer::in_place(&file)?
    } else {
        let writer = writer::Writer::open(&file, settings.durability, settings.busy_timeout)?;
        (writer, readers::Readers::new(&file, settings.busy_timeout))
    };
    Ok(SqliteStore::new(pool, writer, readers))
}

/// The store of `settings`, by its database URL.
pub enum Opened {
    /// The file's store and the lock that makes this process its only user.
    Sqlite(std::sync::Arc<SqliteStore>, ProcessLock),
    Postgres(std::sync::Arc<PgStore>),
}

impl Opened {
    pub fn shared(&self) -> SharedStore {
        match self {
            Self::Sqlite(s, _) => s.clone(),
            Self::Postgres(p) => p.clone(),
        }
    }

    pub fn ledger(&self) -> std::sync::Arc<dyn GrantLedger> {
        match self {
            Self::Sqlite(s, _) => s.clone(),
            Self::Postgres(p) => p.clone(),
        }
    }
}

/// Opens the database of `settings`: the SQLite file (owner-only, locked for this process) or
/// the PostgreSQL database (which must answer now).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Opened> {
    if settings.is_postgres() {
        let store = postgres::open(
            &settings.database_url,
            settings.database_max_connections,
            settings.job_lease,
        )
        .await?;
        return Ok(Opened::Postgres(store));
    }
    let path = database_file(settings)?;
    prepare_data_files(&path)?;
    let lock = ProcessLock::acquire(&path)?;
    Ok(Opened::Sqlite(open_sqlite(settings).await?, lock))
}

/// The store of a server, for a command-line tool used beside it (the server may be running):
/// the SQLite file must exist already; a PostgreSQL database must answer.
pub async fn open_beside_server(settings: &Settings) -> anyhow::Result<SharedStore> {
    if settings.is_postgres() {
        return Ok(postgres::open(&settings.database_url, 2, settings.job_lease).await?);
    }
    anyhow::ensure!(
        database_path(&settings.database_url).is_some_and(|p| p.exists()),
        "no database at {}: give the --database-url (or --config) of the server",
        settings.database_url
    );
    Ok(open_sqlite(settings).await?)
}

/// The server keeps its data in a file (the writer, the key and the lock live beside it).
fn database_file(settings: &Settings) -> anyhow::Result<PathBuf> {
    database_path(&settings.database_url).ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not a database file; the server needs one",
            settings.database_url
        )
    })
}

pub async fn migrate(pool: &SqlitePool) -> anyhow::Result<()> {
    MIGRATIONS.run(pool).await.context("applying migrations")?;
    Ok(())
}

/// Holds an exclusive lock on `<db>.lock` for the life of the server: the embedded database
/// belongs to one process, which is what lets startup reclaim every in-flight job at once.
#[derive(Debug)]
pub struct ProcessLock {
    _file: std::fs::File,
}

impl ProcessLock {
    pub fn acquire(db: &Path) -> anyhow::Result<Self> {
        let path = db.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "{} is in use by another qod process (lock file {})",
                db.display(),
                path.display()
            )
        })?;
        Ok(Self { _file: file })
    }
}

/// Every key a new session's device is known by, its kept key first unless already named: what
/// a create is checked and recorded under, on every backend.
pub(crate) fn device_keys_of(
    session: &crate::domain::Session,
    mut keys: Vec<String>,
) -> Vec<String> {
    let kept = session.device.key();
    if !keys.contains(&kept) {
        keys.insert(0, kept);
    }
    keys
}

pub fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Reading a row by column name (rusqlite and PostgreSQL rows; the indirection keeps
/// `decode`s short).
pub trait Columns {
    fn text(&self, col: &str) -> anyhow::Result<String>;
    fn opt_text(&self, col: &str) -> anyhow::Result<Option<String>>;
    fn int(&self, col: &str) -> anyhow::Result<i64>;
    fn opt_int(&self, col: &str) -> anyhow::Result<Option<i64>>;
}

/// A rusqlite row whose columns are read in the order its SELECT lists them. rusqlite finds a
/// column by name by comparing it with every column's name; here each name is first checked
/// against the column after the last one read, so a decode in SELECT order finds each at once
/// (one row of 20 columns: 20 name checks instead of about 200).
pub struct InOrder<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    next: std::cell::Cell<usize>,
}

impl<'r, 's> InOrder<'r, 's> {
    pub fn new(row: &'r rusqlite::Row<'s>) -> Self {
        Self {
            row,
            next: std::cell::Cell::new(0),
        }
    }

    fn get<T: rusqlite::types::FromSql>(&self, col: &str) -> anyhow::Result<T> {
        let stmt = self.row.as_ref();
        let next = self.next.get();
        let at = if stmt.column_name(next).is_ok_and(|name| name == col) {
            next
        } else {
            stmt.column_index(col)?
        };
        self.next.set(at + 1);
        Ok(self.row.get(at)?)
    }
}

impl Columns for InOrder<'_, '_> {
    fn text(&self, col: &str) -> anyhow::Result<String> {
        self.get(col)
    }
    fn opt_text(&self, col: &str) -> anyhow::Result<Option<String>> {
        self.get(col)
    }
    fn int(&self, col: &str) -> anyhow::Result<i64> {
        self.get(col)
    }
    fn opt_int(&self, col: &str) -> anyhow::Result<Option<i64>> {
        self.get(col)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_row_read_in_order_or_out_of_it_gives_each_column_by_its_name() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let read = |order: [&str; 3]| {
            conn.query_row("SELECT 1 AS a, 'two' AS b, NULL AS c", [], |r| {
                let r = InOrder::new(r);
                Ok(order.map(|col| match col {
                    "b" => r.text(col).unwrap(),
                    col => format!("{:?}", r.opt_int(col).unwrap()),
                }))
            })
            .unwrap()
        };
        assert_eq!(read(["a", "b", "c"]), ["Some(1)", "two", "None"]);
        assert_eq!(read(["c", "a", "b"]), ["None", "Some(1)", "two"]);
        assert_eq!(read(["b", "b", "a"]), ["two", "two", "Some(1)"]);
        let missing = conn.query_row("SELECT 1 AS a", [], |r| {
            Ok(InOrder::new(r).int("z").is_err())
        });
        assert!(missing.unwrap());
    }

    #[test]
    fn the_data_folder_and_database_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data/qod.db");
        prepare_data_files(&db).unwrap();
        assert_eq!(mode(&db.with_file_name("")), 0o700);
        assert_eq!(mode(&db), 0o600);
        // SQLite's WAL and shared-memory files take the database's mode.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        for suffix in ["-wal", "-shm"] {
            assert_eq!(
                mode(Path::new(&format!("{}{suffix}", db.display()))),
                0o600,
                "{suffix}"
            );
        }
        // Files left world-readable by an older version are tightened.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare_data_files(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
    }
}
