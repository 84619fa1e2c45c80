//! Write-behind: events and cached replies handed to a thread of their own, which writes them
//! in batches on its own connection.
//!
//! A test suite runs hundreds of cases at once, and each case is about six writes (run, step,
//! call, step end, run end, cached reply). Written inline, each in its own transaction, they
//! take the async worker that runs the cases for most of its time, and every commit holds up
//! every case in flight. Here the caller only queues a copy; the writer takes whatever has
//! queued up, writes it in one transaction, commits, and starts again. Should a write fail,
//! the batch is written again with each write under its own savepoint, so that the failing one
//! alone is lost and reported, as inline. Writes reach the database in the order they were
//! queued, a few milliseconds later.
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
    Cache(String, Arc<CacheEntry>),
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
    pending: HashMap<String, (u64, Arc<CacheEntry>)>,
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
            state.pending.insert(key.clone(), (seq, Arc::clone(entry)));
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
            .map(|(_, entry)| entry.response.clone())
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
    // The queue and the batch being written swap buffers, so neither grows again each time.
    let mut spare = Vec::new();
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
            let batch = std::mem::replace(&mut state.queue, std::mem::take(&mut spare));
            (batch, state.submitted)
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
        drop(state);
        let mut batch = batch;
        batch.clear();
        spare = batch;
    }
}

/// Writes `batch` in one transaction. Should a write fail, the transaction is rolled back and
/// the batch written again with each write under its own savepoint, so that only the writes
/// that fail are lost, as when each is written in its own transaction. Returns the first
/// error.
fn write_batch(conn: &mut Connection, batch: &[Write]) -> Result<(), String> {
    let all = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for write in batch {
            write_one(&tx, write)?;
        }
        tx.commit()
    })();
    match all {
        Ok(()) => Ok(()),
        Err(_) => write_each(conn, batch),
    }
}

fn write_one(conn: &Connection, write: &Write) -> rusqlite::Result<usize> {
    match write {
        Write::Event(event) => write_event(conn, event),
        Write::Cache(key, entry) => write_entry(conn, key, entry),
    }
}

/// Writes `batch` in one transaction, each write under its own savepoint. Returns the first
/// error (the writes that hit none are kept).
fn write_each(conn: &mut Connection, batch: &[Write]) -> Result<(), String> {
    let mut first_error = None;
    let result = (|| -> rusqlite::Result<()> {
        // IMMEDIATE takes the write lock up front, so another process holding it makes this
        // wait (busy timeout) rather than fail on a read-to-write upgrade.
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for write in batch {
            let sp = tx.savepoint()?;
            match write_one(&sp, write) {
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use flowrun_core::cache::ResponseCache;
    use flowrun_core::project::SourceFile;
    use flowrun_core::provider::{ChatRequest, Message, Params, ResponseFormat, Role, Usage};
    use flowrun_core::spec::ProviderKind;
    use flowrun_core::{EventSink, Executor, Project, RunRequest};
    use serde_json::json;

    use super::*;
    use crate::Store;

    /// Keeps every event.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<RunEvent>>);

    impl EventSink for Recorder {
        fn emit(&self, event: &RunEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    /// The events of `runs` one-step and three-step runs on the mock provider.
    async fn events(runs: usize) -> Vec<RunEvent> {
        let files = vec![
            SourceFile::new(
                "flowrun.yaml",
                "providers: {offline: {kind: mock}}\ndefaults: {model: offline/echo}\n",
            ),
            SourceFile::new(
                "prompts/p.yaml",
                "input: {q: string}\nmessages: [{user: \"{{ q }}\"}]\n",
            ),
            SourceFile::new(
                "flows/f.yaml",
                "input: {q: string}\nsteps:\n  - {id: a, prompt: p, with: {q: \"{{ input.q }}\"}}\n  - {id: b, prompt: p, with: {q: b}}\n",
            ),
        ];
        let recorder = Arc::new(Recorder::default());
        let exec = Executor::builder(Arc::new(Project::load(files).unwrap()))
            .sink(recorder.clone())
            .build()
            .unwrap();
        for i in 0..runs {
            let target = if i % 2 == 0 { "p" } else { "flow/f" };
            exec.run(RunRequest::new(
                target,
                json!({"q": format!("question {i}")}),
            ))
            .await
            .unwrap();
        }
        std::mem::take(&mut *recorder.0.lock().unwrap())
    }

    /// Every row of the history tables, as text, in insertion order.
    fn dump(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut rows = Vec::new();
        for table in ["runs", "steps", "calls", "response_cache"] {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
                .unwrap();
            let columns = stmt.column_count();
            let mut query = stmt.query([]).unwrap();
            while let Some(row) = query.next().unwrap() {
                let values: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                rows.push(format!("{table}: {}", values.join(", ")));
            }
        }
        rows
    }

    fn entry(reply: &str) -> CacheEntry {
        CacheEntry {
            provider: "openai".into(),
            kind: ProviderKind::Openai,
            model: "gpt-4o-mini".into(),
            request: ChatRequest {
                model: "gpt-4o-mini".into(),
                messages: vec![Message::new(Role::User, reply)],
                params: Params::default(),
                response_format: ResponseFormat::Text,
                tools: Vec::new(),
                tool_choice: None,
                parallel_tool_calls: None,
            },
            response: ChatResponse {
                text: reply.into(),
                usage: Usage::default(),
                finish_reason: Some("stop".into()),
                model: "gpt-4o-mini".into(),
                raw: json!({"id": reply}),
                tool_calls: Vec::new(),
            },
        }
    }

    #[tokio::test]
    async fn writes_behind_leave_the_rows_inline_writes_leave() {
        let events = events(40).await;
        let dir = tempfile::tempdir().unwrap();
        let (inline_path, behind_path) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let inline = Store::open(&inline_path).unwrap();
        let behind = Store::open(&behind_path).unwrap();
        behind.write_behind().unwrap();
        for (i, event) in events.iter().enumerate() {
            for store in [&inline, &behind] {
                store.emit(event);
                if i % 7 == 0 {
                    store.put(&format!("key {i}"), &entry(&format!("reply {i}")));
                }
            }
        }
        behind.flush();
        assert_eq!(inline.take_sink_error(), None);
        assert_eq!(behind.take_sink_error(), None);
        let rows = dump(&inline_path);
        assert!(rows.len() > 100, "{}", rows.len());
        // `created_at` of cached replies is the time of writing: leave it out.
        let strip = |rows: Vec<String>| -> Vec<String> {
            rows.into_iter()
                .map(|r| match r.strip_prefix("response_cache: ") {
                    Some(rest) => rest.rsplit_once(", ").map_or(r.clone(), |(k, _)| k.into()),
                    None => r,
                })
                .collect()
        };
        assert_eq!(strip(dump(&behind_path)), strip(rows));
    }

    #[tokio::test]
    async fn a_failing_write_is_reported_and_only_it_is_lost() {
        let events = events(1).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let store = Store::open(&path).unwrap();
        store.write_behind().unwrap();
        for event in &events {
            store.emit(event);
            if let RunEvent::RunStarted(start) = event {
                // A step of a run that does not exist breaks the foreign key.
                let mut orphan = events
                    .iter()
                    .find_map(|e| match e {
                        RunEvent::StepStarted(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap();
                orphan.run_id = format!("{}-missing", start.run_id);
                store.emit(&RunEvent::StepStarted(orphan));
            }
        }
        let error = store.take_sink_error().expect("the orphan step fails");
        assert!(error.contains("FOREIGN KEY"), "{error}");
        assert_eq!(store.take_sink_error(), None);
        let runs = store.runs(10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, "succeeded");
        let detail = store.run(&runs[0].id).unwrap();
        assert_eq!(detail.steps.len(), 1);
        assert_eq!(detail.calls.len(), 1);
    }

    #[test]
    fn cached_replies_are_found_while_queued_and_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let store = Store::open(&path).unwrap();
        store.write_behind().unwrap();
        assert_eq!(store.get("k"), None);
        store.put("k", &entry("first"));
        store.put("k", &entry("second"));
        assert_eq!(store.get("k").map(|r| r.text), Some("second".into()));
        store.flush();
        assert_eq!(store.get("k").map(|r| r.text), Some("second".into()));
        drop(store);
        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.get("k").map(|r| r.text), Some("second".into()));
    }

    #[tokio::test]
    async fn dropping_the_store_writes_what_is_queued() {
        let events = events(10).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let store = Store::open(&path).unwrap();
        store.write_behind().unwrap();
        for event in &events {
            store.emit(event);
        }
        drop(store);
        let runs = Store::open(&path).unwrap().runs(100).unwrap();
        assert_eq!(runs.len(), 10);
        assert!(runs.iter().all(|r| r.status == "succeeded"));
    }

    #[tokio::test]
    async fn an_in_memory_store_keeps_writing_inline() {
        let store = Store::in_memory().unwrap();
        store.write_behind().unwrap();
        for event in events(2).await {
            store.emit(&event);
        }
        // No flush: inline writes are there at once.
        assert_eq!(store.runs(10).unwrap().len(), 2);
    }
}
