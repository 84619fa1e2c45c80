//! Reading the history back: run lists and one run in full.

use flowrun_core::agent::AgentTurn;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::Value;

use super::{Store, StoreError};

/// One run, as listed by `flowrun runs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub id: String,
    pub target_kind: String,
    pub target: String,
    pub version: String,
    pub status: String,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    /// USD; `None` when a model had no price (see `cost_unknown`) or the run is unfinished.
    pub cost_usd: Option<f64>,
    /// Models without a price, when the cost is unknown.
    pub cost_unknown: Vec<String>,
    pub latency_ms: Option<u64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRow {
    pub step_index: u32,
    pub step_id: String,
    pub prompt: String,
    pub version: String,
    pub model: Option<String>,
    pub messages: Value,
    pub status: String,
    pub output_text: Option<String>,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: Option<f64>,
    pub cost_unknown: Vec<String>,
    pub latency_ms: Option<u64>,
    pub attempts: u32,
    /// Agent steps: why the loop stopped (`answered`, `max_turns_reached`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_stop: Option<String>,
}

/// One call attempt of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRow {
    pub step_index: u32,
    pub attempt: u32,
    pub provider: String,
    pub model: String,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub latency_ms: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    pub repair: bool,
    /// Answered from the response cache: the provider was not called.
    pub cached: bool,
    /// The provider's response body, as it came (successful attempts only).
    pub raw_response: Option<Value>,
}

/// A run with its steps and call attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunRow,
    pub steps: Vec<StepRow>,
    pub calls: Vec<CallRow>,
    /// Turns of agent steps, by step and turn.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<AgentTurn>,
}

/// A non-negative integer column (SQLite stores i64).
fn n(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(i)?.max(0) as u64)
}

fn opt_n(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
}

fn parse_json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn parse_list(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

const RUN_COLUMNS: &str =
    "id, target_kind, target, version, status, input, output, error, input_tokens, output_tokens,
    cached_tokens, reasoning_tokens, cost_usd, cost_unknown, latency_ms, started_at, finished_at";

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        target_kind: r.get(1)?,
        target: r.get(2)?,
        version: r.get(3)?,
        status: r.get(4)?,
        input: parse_json(r.get(5)?).unwrap_or(Value::Null),
        output: parse_json(r.get(6)?),
        error: r.get(7)?,
        input_tokens: n(r, 8)?,
        output_tokens: n(r, 9)?,
        cached_tokens: n(r, 10)?,
        reasoning_tokens: n(r, 11)?,
        cost_usd: r.get(12)?,
        cost_unknown: parse_list(r.get(13)?),
        latency_ms: opt_n(r, 14)?,
        started_at: r.get(15)?,
        finished_at: r.get(16)?,
    })
}

fn step_row(r: &Row<'_>) -> rusqlite::Result<StepRow> {
    Ok(StepRow {
        step_index: r.get(0)?,
        step_id: r.get(1)?,
        prompt: r.get(2)?,
        version: r.get(3)?,
        model: r.get(4)?,
        messages: parse_json(r.get(5)?).unwrap_or(Value::Null),
        status: r.get(6)?,
        output_text: r.get(7)?,
        output: parse_json(r.get(8)?),
        error: r.get(9)?,
        input_tokens: n(r, 10)?,
        output_tokens: n(r, 11)?,
        cached_tokens: n(r, 12)?,
        reasoning_tokens: n(r, 13)?,
        cost_usd: r.get(14)?,
        cost_unknown: parse_list(r.get(15)?),
        latency_ms: opt_n(r, 16)?,
        attempts: r.get(17)?,
        agent_stop: r.get(18)?,
    })
}

fn call_row(r: &Row<'_>) -> rusqlite::Result<CallRow> {
    Ok(CallRow {
        step_index: r.get(0)?,
        attempt: r.get(1)?,
        provider: r.get(2)?,
        model: r.get(3)?,
        error_kind: r.get(4)?,
        error: r.get(5)?,
        latency_ms: n(r, 6)?,
        input_tokens: n(r, 7)?,
        output_tokens: n(r, 8)?,
        cost_usd: r.get(9)?,
        repair: r.get(10)?,
        cached: r.get(11)?,
        raw_response: parse_json(r.get(12)?),
    })
}

impl Store {
    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        self.with_conn(|conn| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT ?1"
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt
                .query_map(params![limit as i64], run_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// One run by its id or a unique prefix of it (as shown by `flowrun runs`).
    pub fn run(&self, id_or_prefix: &str) -> Result<RunDetail, StoreError> {
        self.with_conn(|conn| {
            let id = resolve_id(conn, &RUNS, id_or_prefix)?;
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
            let run = conn.query_row(&sql, params![id], run_row)?;
            let steps = conn
                .prepare(
                    "SELECT step_index, step_id, prompt, version, model, messages, status, output_text, output, error,
                        input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_usd, cost_unknown, latency_ms, attempts,
                        agent_stop
                     FROM steps WHERE run_id = ?1 ORDER BY step_index",
                )?
                .query_map(params![id], step_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let calls = conn
                .prepare(
                    "SELECT step_index, attempt, provider, model, error_kind, error, latency_ms, input_tokens, output_tokens,
                        cost_usd, repair, cached, raw_response
                     FROM calls WHERE run_id = ?1 ORDER BY step_index, attempt",
                )?
                .query_map(params![id], call_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let turns = conn
                .prepare(
                    "SELECT record FROM agent_turns WHERE run_id = ?1 ORDER BY step_index, turn",
                )?
                .query_map(params![id], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter_map(|text| serde_json::from_str::<AgentTurn>(&text).ok())
                .collect();
            Ok(RunDetail {
                run,
                steps,
                calls,
                turns,
            })
        })
    }
}

/// A kind of stored record that users name by id or unique id prefix.
pub(super) struct Named {
    pub table: &'static str,
    /// What one is called in messages (`run`, `test run`, `evaluation`).
    pub noun: &'static str,
    /// The command that lists them (`runs`, `tests`, `evals`).
    pub list: &'static str,
}

pub(super) const RUNS: Named = Named {
    table: "runs",
    noun: "run",
    list: "runs",
};

/// The full id of the `kind` record whose id is `prefix` or starts with it.
pub(super) fn resolve_id(
    conn: &Connection,
    kind: &Named,
    prefix: &str,
) -> Result<String, StoreError> {
    let (noun, list) = (kind.noun, kind.list);
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(StoreError::NotFound(format!(
            "`{prefix}` is not a {noun} id; `flowrun {list}` lists them"
        )));
    }
    // `table` is one of our constants, never user input.
    let exact: Option<String> = conn
        .query_row(
            &format!("SELECT id FROM {} WHERE id = ?1", kind.table),
            params![prefix],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = exact {
        return Ok(id);
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT id FROM {} WHERE id LIKE ?1 || '%' LIMIT 2",
        kind.table
    ))?;
    let ids = stmt
        .query_map(params![prefix], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(StoreError::NotFound(format!(
            "no {noun} with id `{prefix}`; `flowrun {list}` lists them"
        ))),
        _ => Err(StoreError::NotFound(format!(
            "`{prefix}` matches several {noun}s; give more of the id"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
            SourceFile::new(
                "prompts/hello.yaml",
                "input: {name: string}\nmessages:\n  - user: \"Hello {{ name }}\"\n",
            ),
        ];
        Arc::new(Project::load(files).unwrap())
    }

    #[tokio::test]
    async fn records_a_run_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join(".flowrun/flowrun.db")).unwrap());
        let exec = Executor::builder(project())
            .sink(store.clone())
            .build()
            .unwrap();
        let outcome = exec
            .run(RunRequest::new("hello", json!({"name": "Ada"})))
            .await
            .unwrap();
        assert_eq!(store.take_sink_error(), None);

        let runs = store.runs(10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].id, outcome.run_id);
        assert_eq!(runs[0].status, "succeeded");
        assert_eq!(runs[0].output, Some(json!("echo: Hello Ada")));
        assert_eq!((runs[0].input_tokens, runs[0].output_tokens), (2, 3));
        assert_eq!(runs[0].cost_usd, Some(0.0));

        let detail = store.run(&outcome.run_id[..8]).unwrap();
        assert_eq!(detail.steps.len(), 1);
        assert_eq!(
            detail.steps[0].messages,
            json!([{"role": "user", "content": "Hello Ada"}])
        );
        assert_eq!(detail.steps[0].model.as_deref(), Some("offline/echo"));
        assert_eq!(detail.calls.len(), 1);
        assert_eq!(detail.calls[0].attempt, 1);
        let raw = detail.calls[0]
            .raw_response
            .as_ref()
            .expect("the raw response");
        assert!(raw.to_string().contains("echo: Hello Ada"), "{raw}");
    }

    #[test]
    fn unknown_ids_are_explained() {
        let store = Store::in_memory().unwrap();
        let err = store.run("abc123").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no run with id `abc123`; `flowrun runs` lists them"
        );
        assert!(store.run("'; drop").is_err());
    }

    #[test]
    fn two_connections_write_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = Store::open(&path).unwrap();
                    for i in 0..200 {
                        let start = flowrun_core::event::RunStart {
                            run_id: format!("{t:x}{i:07x}"),
                            target_kind: "prompt".into(),
                            target: "p".into(),
                            version: "v".into(),
                            input: json!({}),
                            started_at_ms: i,
                        };
                        store
                            .record(&flowrun_core::RunEvent::RunStarted(start))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(Store::open(&path).unwrap().runs(1000).unwrap().len(), 400);
    }
}
