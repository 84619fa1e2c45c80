//! Write-behind: events and cached replies handed to a thread of their own, which writes them
//! in batches on its own connection.
//!
//! A test suite runs hundreds of cases at once, and each case is about six writes (run, step,
//! call, step end, run end, cached reply). Written inline, each in its own transaction, they
//! take the async worker that runs the cases for most of its time, and every commit holds up
//! every case in flight. Here the caller only queues a copy; the writer takes whatever has
//! queued up, writes it in one transaction (each write under its own savepoint, so one that
//! fails is rolled back alone and is reported, as inline), commits, and starts again. Writes
//! reach the database in the order they were queued, a few milliseconds later.
//!
//! Cache lookups see the replies still queued ([`WriteBehind::pending_reply`]), so turning
//! write-behind on changes no answer. Everything queued is written before [`WriteBehind::flush`]
//! returns, and when the writer is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use flowrun_core::cache::CacheEntry;
use flowrun_core::event::RunEvent;
use flowrun_core::provider::ChatResponse;
use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;
use super::cache::write_entry;
use super::sink::write_event;

/// One queued write.
pub(super) enum Write {
    Event(Box<RunEvent>),
    /// A reply for the response cache, under its key.
    Cache(String, Box<CacheEntry>),
}

/// The writer thread and its queue.
pub(super) struct WriteBehind {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when writes are queued or the writer must stop.
    queued: Condvar,
    /// Signalled when a batch is written.
    written: Condvar,
}

#[derive(Default)]
struct State {
    queue: Vec<Write>,
    /// Writes queued so far, and writes done (or failed) so far.
    submitted: u64,
    done: u64,
    /// Cache replies queued and not yet written, with the number of the write that carries
    /// each (a newer reply for the same key replaces an older one).
    pending: HashMap<String, (u64, ChatResponse)>,
    /// The first error a write hit.
    error: Option<String>,
    closing: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WriteBehind {
    /// Starts the writer on `conn`, a connection of its own to the database.
    pub(super) fn start(conn: Connection) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            queued: Condvar::new(),
            written: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("flowrun-history".into())
            .spawn(move || write_loop(conn, &for_thread))
            .map_err(|source| StoreError::Io {
                path: "the history writer thread".into(),
                source,
            })?;
        Ok(WriteBehind {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `write`.
    pub(super) fn push(&self, write: Write) {
        let mut state = lock(&self.shared.state);
        state.submitted += 1;
        if let Write::Cache(key, entry) = &write {
            let seq = state.submitted;
            state
                .pending
                .insert(key.clone(), (seq, entry.response.clone()));
        }
        state.queue.push(write);
        // Wake the writer only when it may be waiting for work: it is idle exactly when the
        // queue was empty.
        if state.queue.len() == 1 {
            self.shared.queued.notify_one();
        }
    }

    /// The reply queued for the cache under `key`, not yet in the database.
    pub(super) fn pending_reply(&self, key: &str) -> Option<ChatResponse> {
        lock(&self.shared.state)
            .pending
            .get(key)
            .map(|(_, reply)| reply.clone())
    }

    /// Waits until everything queued so far is written.
    pub(super) fn flush(&self) {
        let mut state = lock(&self.shared.state);
        let target = state.submitted;
        while state.done < target {
            state = self
                .shared
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The first error a write hit, if any (cleared by the call).
    pub(super) fn take_error(&self) -> Option<String> {
        lock(&self.shared.state).error.take()
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.queued.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn write_loop(mut conn: Connection, shared: &Shared) {
    loop {
        let (batch, last) = {
            let mut state = lock(&shared.state);
            while state.queue.is_empty() && !state.closing {
                state = shared
                    .queued
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.queue.is_empty() {
                return;
            }
            (std::mem::take(&mut state.queue), state.submitted)
        };
        let error = write_batch(&mut conn, &batch).err();
        let mut state = lock(&shared.state);
        let first = last + 1 - batch.len() as u64;
        for (seq, write) in (first..).zip(&batch) {
            if let Write::Cache(key, _) = write
                && state.pending.get(key).is_some_and(|(s, _)| *s == seq)
            {
                state.pending.remove(key);
            }
        }
        if let Some(e) = error
            && state.error.is_none()
        {
            state.error = Some(e);
        }
        state.done = last;
        shared.written.notify_all();
    }
}

/// Writes `batch` in one transaction, each write under its own savepoint. Returns the first
/// error (the writes that hit none are kept).
fn write_batch(conn: &mut Connection, batch: &[Write]) -> Result<(), String> {
    let mut first_error = None;
    let result = (|| -> rusqlite::Result<()> {
        // IMMEDIATE takes the write lock up front, so another process holding it makes this
        // wait (busy timeout) rather than fail on a read-to-write upgrade.
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for write in batch {
            let sp = tx.savepoint()?;
            let written = match write {
                Write::Event(event) => write_event(&sp, event),
                Write::Cache(key, entry) => write_entry(&sp, key, entry),
            };
            match written {
                Ok(_) => sp.commit()?,
                // Dropping the savepoint rolls this write back; the others stay.
                Err(e) => {
                    let what = match write {
                        Write::Event(_) => StoreError::Sql(e).to_string(),
                        Write::Cache(..) => {
                            format!("response cache write: {}", StoreError::Sql(e))
                        }
                    };
                    first_error.get_or_insert(what);
                }
            }
        }
        tx.commit()
    })();
    if let Err(e) = result {
        first_error.get_or_insert(StoreError::Sql(e).to_string());
    }
    first_error.map_or(Ok(()), Err)
}
