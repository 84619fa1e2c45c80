//! Recording executor events: the store as an [`EventSink`].

use flowrun_core::EventSink;
use flowrun_core::cost::Cost;
use flowrun_core::event::{CallRecord, RunEnd, RunEvent, RunStart, StepRecord, StepStart};
use rusqlite::{Connection, TransactionBehavior, params};

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
            match event {
                RunEvent::RunStarted(e) => run_started(&tx, e),
                RunEvent::StepStarted(e) => step_started(&tx, e),
                RunEvent::CallAttempt(e) => call_attempt(&tx, e),
                RunEvent::StepFinished(e) => step_finished(&tx, e),
                RunEvent::RunFinished(e) => run_finished(&tx, e),
            }?;
            tx.commit()?;
            Ok(())
        })
    }
}

impl EventSink for Store {
    fn emit(&self, event: &RunEvent) {
        if let Err(e) = self.record(event) {
            let mut slot = self
                .sink_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slot.get_or_insert_with(|| e.to_string());
        }
    }
}

fn run_started(conn: &Connection, e: &RunStart) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO runs (id, target_kind, target, version, status, input, started_at) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
    )?
    .execute(params![e.run_id, e.target_kind, e.target, e.version, json(&e.input), e.started_at_ms])
}

fn step_started(conn: &Connection, e: &StepStart) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO steps (run_id, step_index, step_id, prompt, version, model, messages, status, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8)",
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
            cost_unknown = ?13, latency_ms = ?14, attempts = ?15
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
        e.attempts
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
