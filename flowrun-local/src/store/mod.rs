//! The local history: every run, step and call attempt in SQLite.
//!
//! One file per project (`.flowrun/flowrun.db`), WAL mode with a busy timeout so several
//! `flowrun` processes can write at once, schema under versioned migrations. Each event is
//! written in its own short transaction, so a record is never half-written. The same database
//! holds the response cache (`cache.rs`). With [`Store::write_behind`] the events and cached
//! replies are written in batches by a thread of their own instead (`behind.rs`).

mod behind;
mod cache;
mod evals;
mod query;
mod schema;
mod sink;
mod sync;
mod test_runs;
mod usage;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::config::DbConfig;

pub use evals::EvalRow;
pub use query::{CallRow, RunDetail, RunRow, StepRow};
pub use sync::{LocalRecord, PulledDeployment, withhold_content};
pub use test_runs::TestRunRow;
pub use usage::LOCAL_ENVIRONMENT;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the history database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot migrate the history database: {0}")]
    Migrate(#[from] rusqlite_migration::Error),
    #[error("history database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotFound(String),
}

/// The SQLite history of one project.
pub struct Store {
    conn: Mutex<Connection>,
    /// The first error a sink write hit (events cannot return errors).
    sink_error: Mutex<Option<String>>,
    /// The database file (none in memory).
    path: Option<PathBuf>,
    /// Set by [`Store::write_behind`].
    behind: OnceLock<behind::WriteBehind>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut store = Self::setup(connect(path)?)?;
        store.path = Some(path.to_path_buf());
        Ok(store)
    }

    /// An in-memory store, for tests and throwaway runs.
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Store, StoreError> {
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            sink_error: Mutex::new(None),
            path: None,
            behind: OnceLock::new(),
        })
    }

    /// From now on, recorded events ([`flowrun_core::EventSink`]) and cached replies
    /// ([`flowrun_core::cache::ResponseCache::put`]) are queued for a thread of their own,
    /// which writes them in batches on a second connection, instead of being written by the
    /// caller. For many concurrent runs (`flowrun test`): the async workers running them no
    /// longer wait for SQLite. Writes still reach the database in order, each atomically,
    /// milliseconds later; cache lookups see the replies still queued; write errors still show
    /// in [`Store::take_sink_error`]. Other reads may not see the latest writes until
    /// [`Store::flush`]. An in-memory store keeps writing inline. Calling it again does nothing.
    pub fn write_behind(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if self.behind.get().is_some() {
            return Ok(());
        }
        let conn = connect(path)?;
        configure(&conn)?;
        let _ = self.behind.set(behind::WriteBehind::start(conn)?);
        Ok(())
    }

    /// Waits until every write queued by [`Store::write_behind`] so far is in the database.
    pub fn flush(&self) {
        if let Some(writer) = self.behind.get() {
            writer.flush();
        }
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut conn)
    }

    /// The first error that recording events hit, if any (cleared by the call). Waits for
    /// the writes queued by [`Store::write_behind`] first.
    pub fn take_sink_error(&self) -> Option<String> {
        let behind = self.behind.get().and_then(|writer| {
            writer.flush();
            writer.take_error()
        });
        let inline = self
            .sink_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        inline.or(behind)
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    Connection::open(path).map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// The settings every connection gets.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Closing leaves the write-ahead log for the next open instead of checkpointing it (two
    // fsyncs, tens of milliseconds at every command's exit). Commits still checkpoint once the
    // log passes SQLite's 1,000-page threshold, so it stays small.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    Ok(())
}

/// Brings the schema up to date. Two processes opening a new database at once may both try;
/// the loser's transaction rolls back, and on retry it sees the schema already there.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let migrations = schema::migrations();
    let mut tries = 0;
    loop {
        match migrations.to_latest(conn) {
            Ok(()) => return Ok(()),
            Err(_) if tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20 * tries));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
