//! The SQLite store's connections: one writer thread that owns the write connection and
//! commits every pending write in one transaction (group commit), a small pool of read-only
//! connections for reads (WAL lets them run beside the writer), and a checkpointer thread, so
//! WAL checkpoints never run on the writer's commit path.
//!
//! Each write is a closure run inside its own `SAVEPOINT`: one that fails is rolled back alone
//! and the others of its batch still commit. A caller gets its answer only after the batch's
//! `COMMIT`, so an answered write is as durable as the store's [`super::Durability`] makes it:
//! on disk with `Full` (one flush per batch), safe from a killed process with `Normal`.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::store::StoreError;

/// The most writes committed in one transaction: bounds how long one batch holds the others.
const MAX_BATCH: usize = 512;
/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Read-only connections in the pool.
const READERS: usize = 4;
/// Prepared statements kept per connection (the store has about 40).
const STATEMENTS: usize = 64;

/// A write waiting for the writer thread.
trait Op: Send {
    /// Whether the caller still waits for the answer (one that stopped waiting, as a task
    /// aborted in a simulated crash, gets nothing written).
    fn wanted(&self) -> bool;
    /// Runs the write; false when it failed (its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch is committed (`Err`: it was not).
    fn answer(self: Box<Self>, committed: Result<(), String>);
}

struct WriteOp<T, F> {
    f: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Op for WriteOp<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn wanted(&self) -> bool {
        !self.reply.is_closed()
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(StoreError::Task("a database write panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), String>) {
        let answer = match (self.result, committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(StoreError::Commit(e)),
            (None, Ok(())) => Err(StoreError::Commit("the write did not run".into())),
        };
        let _ = self.reply.send(answer);
    }
}

/// The writer thread, the read pool and the checkpointer of one database.
pub(super) struct Connections {
    writes: Option<Sender<Box<dyn Op>>>,
    writer: Option<JoinHandle<()>>,
    /// `None` for an in-memory database: reads go through the writer.
    readers: Option<Pool>,
    /// Dropped to stop the checkpointer.
    stop_checkpoints: Option<Sender<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

impl Connections {
    /// Starts the writer on `conn` (already tuned and migrated). With a `path`, opens the
    /// read pool and the checkpointer on the same file.
    pub(super) fn start(
        conn: Connection,
        path: Option<&std::path::Path>,
    ) -> Result<Connections, StoreError> {
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        let (stop_checkpoints, checkpointer, readers) = match path {
            Some(path) => {
                // The checkpointer does the work SQLite would do inside a commit.
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                let ckpt = Connection::open(path)?;
                ckpt.busy_timeout(Duration::from_secs(1))?;
                let (tx, rx) = mpsc::channel();
                let handle = std::thread::Builder::new()
                    .name("flowrun-sqlite-checkpoint".into())
                    .spawn(move || checkpoints(ckpt, rx))
                    .map_err(|e| StoreError::Task(e.to_string()))?;
                (Some(tx), Some(handle), Some(Pool::open(path, READERS)?))
            }
            None => (None, None, None),
        };
        let (writes, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("flowrun-sqlite-writer".into())
            .spawn(move || write_batches(conn, rx))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(Connections {
            writes: Some(writes),
            writer: Some(writer),
            readers,
            stop_checkpoints,
            checkpointer,
        })
    }

    /// Runs `f` on the writer in the next batch; answers once that batch is committed.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let op: Box<dyn Op> = Box::new(WriteOp {
            f: Some(f),
            result: None,
            reply,
        });
        let stopped = || StoreError::Task("the database writer has stopped".into());
        self.writes
            .as_ref()
            .ok_or_else(stopped)?
            .send(op)
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `f` on a read-only connection (on the writer for an in-memory database).
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(pool) = &self.readers else {
            return self.write(f).await;
        };
        pool.run(f).await
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        // The writer ends when its channel closes, after answering what was sent.
        self.writes = None;
        self.stop_checkpoints = None;
        for handle in [self.writer.take(), self.checkpointer.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
    }
}

fn write_batches(conn: Connection, rx: Receiver<Box<dyn Op>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&conn, &mut batch);
        for op in batch {
            op.answer(committed.clone());
        }
    }
}

/// Runs every op of `batch` in one transaction, each inside its own savepoint.
fn commit_batch(conn: &Connection, batch: &mut [Box<dyn Op>]) -> Result<(), String> {
    let step = |sql: &str| conn.execute_batch(sql).map_err(|e| e.to_string());
    step("BEGIN IMMEDIATE")?;
    let ran = batch.iter_mut().try_for_each(|op| {
        if !op.wanted() {
            return Ok(());
        }
        step("SAVEPOINT op")?;
        if !op.run(conn) {
            step("ROLLBACK TO op")?;
        }
        step("RELEASE op")
    });
    match ran.and_then(|()| step("COMMIT")) {
        Ok(()) => Ok(()),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

fn checkpoints(conn: Connection, stop: Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint failed; trying again later");
        }
    }
}

/// Read-only connections, one caller each at a time.
struct Pool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl Pool {
    fn open(path: &std::path::Path, size: usize) -> Result<Pool, StoreError> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| read_only(path))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Pool {
            path: path.to_path_buf(),
            idle: Mutex::new(idle),
            permits: tokio::sync::Semaphore::new(size),
        })
    }

    /// Runs `f` on an idle connection in a blocking thread, waiting while all are in use.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        let idle = self.lock().pop();
        // A connection is missing when a caller was dropped while its read ran: open anew.
        let conn = match idle {
            Some(conn) => conn,
            None => read_only(&self.path)?,
        };
        let (result, conn) = tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            (result, conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        self.lock().push(conn);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn read_only(path: &std::path::Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS);
    Ok(conn)
}
