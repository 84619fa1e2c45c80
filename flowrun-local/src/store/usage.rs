//! Cost and usage from the history: the call attempts `flowrun cost` and `flowrun stats`
//! aggregate (with [`flowrun_core::usage`]), and today's spend for `budget:` limits (the store
//! as a [`SpendLedger`]).

use async_trait::async_trait;
use flowrun_core::cost::Cost;
use flowrun_core::spend::{SpendLedger, SpendQuery};
use flowrun_core::usage::UsageRow;
use rusqlite::params;

use super::{Store, StoreError};

/// The environment of local runs in usage reports.
pub const LOCAL_ENVIRONMENT: &str = "local";

impl Store {
    /// Every call attempt that started at or after `since_ms` (all with `None`), one row each.
    /// Cache hits count as calls that cost nothing.
    pub fn usage_rows(&self, since_ms: Option<i64>) -> Result<Vec<UsageRow>, StoreError> {
        self.flush();
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT r.target_kind, r.target, COALESCE(s.prompt, r.target), r.version, c.provider, c.model,
                        c.started_at, c.error_kind IS NOT NULL, c.input_tokens, c.output_tokens, c.cached_tokens,
                        c.cost_usd, c.cost_unknown, c.latency_ms
                 FROM calls c
                 JOIN runs r ON r.id = c.run_id
                 LEFT JOIN steps s ON s.run_id = c.run_id AND s.step_index = c.step_index
                 WHERE c.started_at >= ?1
                 ORDER BY c.started_at, c.run_id, c.step_index, c.attempt",
            )?;
            let rows = stmt.query_map(params![since_ms.unwrap_or(i64::MIN)], |row| {
                let kind: String = row.get(0)?;
                let target: String = row.get(1)?;
                let usd: Option<f64> = row.get(11)?;
                let unknown: Option<String> = row.get(12)?;
                let cost = match unknown {
                    Some(list) => Cost {
                        usd: usd.unwrap_or(0.0),
                        unknown_models: serde_json::from_str(&list).unwrap_or_default(),
                    },
                    None => Cost::known(usd.unwrap_or(0.0)),
                };
                Ok(UsageRow {
                    flow: (kind == "flow").then_some(target),
                    prompt: row.get(2)?,
                    version: row.get(3)?,
                    provider: row.get(4)?,
                    model: row.get(5)?,
                    environment: LOCAL_ENVIRONMENT.into(),
                    at_ms: row.get(6)?,
                    calls: 1,
                    errors: u64::from(row.get::<_, bool>(7)?),
                    input_tokens: row.get(8)?,
                    output_tokens: row.get(9)?,
                    cached_tokens: row.get(10)?,
                    cost,
                    latency_ms: row.get(13)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The known USD spent by calls that started at or after `query.since_ms`, in runs other
    /// than `query.exclude_run` (of the flow `query.flow`, when given).
    pub fn spent(&self, query: &SpendQuery<'_>) -> Result<f64, StoreError> {
        self.flush();
        self.with_conn(|conn| {
            let usd: Option<f64> = conn
                .prepare_cached(
                    "SELECT SUM(c.cost_usd) FROM calls c JOIN runs r ON r.id = c.run_id
                     WHERE c.started_at >= ?1 AND c.run_id <> ?2
                       AND (?3 IS NULL OR (r.target_kind = 'flow' AND r.target = ?3))",
                )?
                .query_row(
                    params![query.since_ms, query.exclude_run, query.flow],
                    |r| r.get(0),
                )?;
            Ok(usd.unwrap_or(0.0))
        })
    }
}

#[async_trait]
impl SpendLedger for Store {
    async fn spent(&self, query: &SpendQuery<'_>) -> Result<f64, String> {
        Store::spent(self, query).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowrun_core::project::SourceFile;
    use flowrun_core::usage::{Dimension, aggregate};
    use flowrun_core::{Executor, Project, RunRequest};
    use serde_json::json;

    use super::*;

    /// Offline runs (the mock provider, priced through an override) recorded in a real store.
    #[tokio::test]
    async fn rows_and_spend_follow_the_recorded_calls() {
        let files = vec![
            SourceFile::new(
                "flowrun.yaml",
                "providers: {m: {kind: mock}}\ndefaults: {model: m/echo}\n",
            ),
            SourceFile::new("prompts/p.yaml", "messages: [{user: hello there}]\n"),
            SourceFile::new(
                "flows/f.yaml",
                "steps: [{id: a, prompt: p}, {id: b, prompt: p}]\n",
            ),
        ];
        let project = Arc::new(Project::load(files).unwrap());
        let store = Arc::new(Store::in_memory().unwrap());
        let exec = Executor::builder(project)
            .sink(store.clone())
            .build()
            .unwrap();
        let first = exec
            .run(RunRequest::new("flow/f", json!({})))
            .await
            .unwrap();
        exec.run(RunRequest::new("p", json!({}))).await.unwrap();
        let rows = store.usage_rows(None).unwrap();
        assert_eq!(rows.len(), 3);
        let report = aggregate(&rows, &[Dimension::Flow], None);
        let flows: Vec<(&str, u64)> = report
            .groups
            .iter()
            .map(|g| (g.key["flow"].as_str(), g.calls))
            .collect();
        assert_eq!(flows, [("-", 1), ("f", 2)]);
        assert_eq!(report.total.cost, Cost::known(0.0));
        // Mock calls are free; the query still runs over the right runs.
        let query = SpendQuery {
            flow: Some("f"),
            since_ms: 0,
            exclude_run: &first.run_id,
        };
        assert_eq!(store.spent(&query).unwrap(), 0.0);
        assert!(store.usage_rows(Some(i64::MAX)).unwrap().is_empty());
    }
}
