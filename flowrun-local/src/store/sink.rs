//! Recording executor events: the store as an [`EventSink`].

use flowrun_core::EventSink;
use flowrun_core::agent::AgentTurn;
use flowrun_core::cost::Cost;
use flowrun_core::event::{CallRecord, RunEnd, RunEvent, RunStart, StepRecord, StepStart};
use rusqlite::{Connection, TransactionBehavior, params};

use super::behind::Write;
use super::{Store, StoreError};

/// `cost_usd` (NULL when unknown) and `cost_unknown` (JSON list of unpriced models).
fn cost_columns(cost: &Cost) -> (Option<f64>, Option<String>) {
    let unknown =
        (!cost.is_known()).then(|| serde_json::to_string(&cost.unknown_models).unwrap_or_default());
    (cost.usd_if_known(), unknown)
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl Store {
    /// Writes one event in its own transaction (a step's end is two statements; a crash
    /// between them must not leave the placeholder row behind).
    pub fn record(&self, event: &RunEvent) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            // IMMEDIATE takes the write lock up front, so another process holding it makes
            // this wait (busy timeout) rather than fail on a read-to-write upgrade.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            write_event(&tx, event)?;
            tx.commit()?;
            Ok(())
        })
    }
}

/// The statements that record `event`, in the caller's transaction.
pub(super) fn write_event(conn: &Connection, event: &RunEvent) -> rusqlite::Result<usize> {
    match event {
        RunEvent::RunStarted(e) => run_started(conn, e),
        RunEvent::StepStarted(e) => step_started(conn, e),
        RunEvent::CallAttempt(e) => call_attempt(conn, e),
        RunEvent::AgentTurn(e) => agent_turn(conn, e),
        // A reused step's row may be there from the attempt that finished it, or not.
        RunEvent::StepFinished(e) | RunEvent::StepReused(e) => step_finished(conn, e),
        RunEvent::RunFinished(e) => run_finished(conn, e),
    }
}

impl EventSink for Store {
    fn emit(&self, event: &RunEvent) {
        if let Some(writer) = self.behind.get() {
            writer.push(Write::Event(Box::new(event.clone())));
            return;
        }
        if let Err(e) = self.record(event) {
            let mut slot = self
                .sink_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slot.get_or_insert_with(|| e.to_string());
        }
    }
}

/// An upsert: a resumed run starts again under its id (keeping its first start time).
fn run_started(conn: &Connection, e: &RunStart) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO runs (id, target_kind, target, version, status, input, started_at) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET target_kind = excluded.target_kind, target = excluded.target,
            version = excluded.version, status = 'running', input = excluded.input, finished_at = NULL",
    )?
    .execute(params![e.run_id, e.target_kind, e.target, e.version, json(&e.input), e.started_at_ms])
}

/// An upsert: a resumed run starts again the step its previous attempt was killed in.
fn step_started(conn: &Connection, e: &StepStart) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO steps (run_id, step_index, step_id, prompt, version, model, messages, status, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8)
         ON CONFLICT(run_id, step_index) DO UPDATE SET step_id = excluded.step_id, prompt = excluded.prompt,
            version = excluded.version, model = excluded.model, messages = excluded.messages, status = 'running',
            started_at = excluded.started_at",
    )?
    .execute(params![e.run_id, e.step_index, e.step_id, e.prompt, e.version, e.model, json(&e.messages), e.started_at_ms])
}

fn call_attempt(conn: &Connection, e: &CallRecord) -> rusqlite::Result<usize> {
    let (usd, unknown) = cost_columns(&e.cost);
    let (kind, message) = match &e.error {
        Some(f) => (Some(f.kind.as_str()), Some(f.message.as_str())),
        None => (None, None),
    };
    conn.prepare_cached(
        "INSERT INTO calls (run_id, step_index, attempt, provider, model, error_kind, error, latency_ms, input_tokens,
            output_tokens, cached_tokens, reasoning_tokens, cost_usd, cost_unknown, raw_response, repair, started_at, cached)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        e.run_id,
        e.step_index,
        e.attempt,
        e.provider,
        e.model,
        kind,
        message,
        e.latency_ms,
        e.usage.input_tokens,
        e.usage.output_tokens,
        e.usage.cached_tokens,
        e.usage.reasoning_tokens,
        usd,
        unknown,
        e.raw_response.as_ref().map(json),
        e.repair,
        e.started_at_ms,
        e.cached
    ])
}

fn step_finished(conn: &Connection, e: &StepRecord) -> rusqlite::Result<usize> {
    let (usd, unknown) = cost_columns(&e.cost);
    // A step that failed before it started (rendering) has no row yet.
    conn.prepare_cached(
        "INSERT INTO steps (run_id, step_index, step_id, prompt, version, messages, status, started_at)
         VALUES (?1, ?2, ?3, ?4, '', '[]', 'running', 0) ON CONFLICT DO NOTHING",
    )?
    .execute(params![e.run_id, e.step_index, e.step_id, e.prompt])?;
    conn.prepare_cached(
        "UPDATE steps SET status = ?3, output_text = ?4, output = ?5, model = COALESCE(?6, model), error = ?7,
            input_tokens = ?8, output_tokens = ?9, cached_tokens = ?10, reasoning_tokens = ?11, cost_usd = ?12,
            cost_unknown = ?13, latency_ms = ?14, attempts = ?15, agent_stop = ?16
         WHERE run_id = ?1 AND step_index = ?2",
    )?
    .execute(params![
        e.run_id,
        e.step_index,
        e.status.as_str(),
        e.output_text,
        e.output.as_ref().map(json),
        e.model,
        e.error,
        e.usage.input_tokens,
        e.usage.output_tokens,
        e.usage.cached_tokens,
        e.usage.reasoning_tokens,
        usd,
        unknown,
        e.latency_ms,
        e.attempts,
        e.agent.as_ref().map(|t| t.stop.as_str())
    ])?;
    // A reused agent step brings its turns along (they may be missing here).
    if let Some(transcript) = &e.agent {
        for turn in &transcript.turns {
            let mut turn = turn.clone();
            turn.run_id.clone_from(&e.run_id);
            agent_turn(conn, &turn)?;
        }
    }
    Ok(1)
}

/// An upsert: a resumed agent may record a turn again.
fn agent_turn(conn: &Connection, e: &AgentTurn) -> rusqlite::Result<usize> {
    let (usd, unknown) = cost_columns(&e.cost);
    let tools: Vec<&str> = e.tool_names().collect();
    conn.prepare_cached(
        "INSERT INTO agent_turns (run_id, step_index, turn, model, tools, input_tokens, output_tokens, cost_usd,
            cost_unknown, latency_ms, started_at, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(run_id, step_index, turn) DO UPDATE SET model = excluded.model, tools = excluded.tools,
            input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, cost_usd = excluded.cost_usd,
            cost_unknown = excluded.cost_unknown, latency_ms = excluded.latency_ms, started_at = excluded.started_at,
            record = excluded.record",
    )?
    .execute(params![
        e.run_id,
        e.step_index,
        e.turn,
        e.model,
        json(&tools),
        e.usage.input_tokens,
        e.usage.output_tokens,
        usd,
        unknown,
        e.latency_ms,
        e.started_at_ms,
        json(e)
    ])
}

fn run_finished(conn: &Connection, e: &RunEnd) -> rusqlite::Result<usize> {
    let (usd, unknown) = cost_columns(&e.cost);
    conn.prepare_cached(
        "UPDATE runs SET status = ?2, output = ?3, error = ?4, input_tokens = ?5, output_tokens = ?6, cached_tokens = ?7,
            reasoning_tokens = ?8, cost_usd = ?9, cost_unknown = ?10, latency_ms = ?11, finished_at = ?12
         WHERE id = ?1",
    )?
    .execute(params![
        e.run_id,
        e.status.as_str(),
        e.output.as_ref().map(json),
        e.error,
        e.usage.input_tokens,
        e.usage.output_tokens,
        e.usage.cached_tokens,
        e.usage.reasoning_tokens,
        usd,
        unknown,
        e.latency_ms,
        e.finished_at_ms
    ])
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use flowrun_core::project::SourceFile;
    use flowrun_core::{Executor, Project, RunRequest};
    use serde_json::json;

    use super::*;

    fn project() -> Arc<Project> {
        let files = vec![
            SourceFile::new(
                "flowrun.yaml",
                "providers: {offline: {kind: mock}}\ndefaults: {model: offline/echo}\n",
            ),
            SourceFile::new("prompts/p.yaml", "messages: [{user: hi}]\n"),
            SourceFile::new(
                "flows/f.yaml",
                "steps: [{id: a, prompt: p}, {id: b, prompt: p}, {id: c, prompt: p}]\n",
            ),
        ];
        Arc::new(Project::load(files).unwrap())
    }

    /// The store until the process "dies" just after step `dies_in` started; the step records
    /// it committed by then.
    struct Killed {
        store: Arc<Store>,
        dies_in: u32,
        dead: AtomicBool,
        committed: Mutex<Vec<StepRecord>>,
    }

    impl EventSink for Killed {
        fn emit(&self, event: &RunEvent) {
            if self.dead.load(Ordering::SeqCst) {
                return;
            }
            self.store.emit(event);
            match event {
                RunEvent::StepFinished(r) => self.committed.lock().unwrap().push(r.clone()),
                RunEvent::StepStarted(s) if s.step_index == self.dies_in => {
                    self.dead.store(true, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store
            .with_conn(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
            .unwrap()
    }

    #[tokio::test]
    async fn resuming_leaves_one_row_per_step_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let killed = Arc::new(Killed {
            store: Arc::new(Store::open(&path).unwrap()),
            dies_in: 2,
            dead: AtomicBool::new(false),
            committed: Mutex::new(Vec::new()),
        });
        let exec = Executor::builder(project())
            .sink(killed.clone())
            .build()
            .unwrap();
        let first = exec
            .run(RunRequest::new("flow/f", json!({})))
            .await
            .unwrap();
        assert_eq!(killed.store.take_sink_error(), None);
        let committed = killed.committed.lock().unwrap().clone();
        assert_eq!(committed.len(), 2);
        let before = killed.store.run(&first.run_id).unwrap();
        assert_eq!(before.run.status, "running");
        assert_eq!(before.steps.len(), 3, "step 2 started, never finished");

        // A new process: the same database, the same run id, the committed steps.
        let store = Arc::new(Store::open(&path).unwrap());
        let exec = Executor::builder(project())
            .sink(store.clone())
            .build()
            .unwrap();
        let req = RunRequest::new("flow/f", json!({})).with_run_id(first.run_id.clone());
        let resumed = exec.run(req.clone().resuming(committed)).await.unwrap();
        assert_eq!(store.take_sink_error(), None);
        assert_eq!(resumed.output, first.output);

        let after = store.run(&first.run_id).unwrap();
        assert_eq!(after.run.status, "succeeded");
        assert_eq!(after.run.started_at, before.run.started_at);
        assert_eq!(
            (after.run.input_tokens, after.run.output_tokens),
            (first.usage.input_tokens, first.usage.output_tokens)
        );
        let steps: Vec<(u32, &str)> = after
            .steps
            .iter()
            .map(|s| (s.step_index, s.status.as_str()))
            .collect();
        assert_eq!(
            steps,
            [(0, "succeeded"), (1, "succeeded"), (2, "succeeded")]
        );
        assert_eq!(
            after.calls.len(),
            3,
            "one call per step, over both attempts"
        );

        // Resuming the finished run again reuses every step and adds no row.
        let again = exec.run(req.resuming(resumed.steps.clone())).await.unwrap();
        assert_eq!(store.take_sink_error(), None);
        assert_eq!(again.output, first.output);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM steps"), 3);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM calls"), 3);
        let finished = store.run(&first.run_id).unwrap();
        assert_eq!(finished.run.status, "succeeded");
        assert_eq!(finished.steps, after.steps);
    }

    /// Records from elsewhere (another store) are written as new step rows.
    #[tokio::test]
    async fn reused_steps_missing_from_the_store_are_inserted() {
        let exec = Executor::builder(project()).build().unwrap();
        let first = exec
            .run(RunRequest::new("flow/f", json!({})))
            .await
            .unwrap();

        let store = Arc::new(Store::in_memory().unwrap());
        let exec = Executor::builder(project())
            .sink(store.clone())
            .build()
            .unwrap();
        let resumed = exec
            .run(
                RunRequest::new("flow/f", json!({}))
                    .with_run_id(first.run_id.clone())
                    .resuming(first.steps.clone()),
            )
            .await
            .unwrap();
        assert_eq!(store.take_sink_error(), None);
        let detail = store.run(&resumed.run_id).unwrap();
        assert_eq!(detail.steps.len(), 3);
        assert!(detail.steps.iter().all(|s| s.status == "succeeded"));
        assert_eq!(detail.calls.len(), 0);
        assert_eq!(detail.run.status, "succeeded");
    }
}
