//! Stored `flowrun test` runs: a summary row per run plus the whole report.

use flowrun_core::testing::SuiteReport;
use rusqlite::params;
use serde::Serialize;

use super::query::{Named, resolve_id};
use super::{Store, StoreError};

/// One test run, as `flowrun tests` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestRunRow {
    pub id: String,
    pub started_at: i64,
    pub wall_ms: u64,
    pub min_pass_rate: f64,
    pub runs: u64,
    pub passed: u64,
    pub failed: u64,
    pub pass_rate: f64,
    pub mean_score: f64,
    pub cost_usd: Option<f64>,
    pub cost_unknown: Vec<String>,
}

impl Store {
    /// Stores a test run in one transaction and returns its new id.
    pub fn save_test_run(&self, report: &SuiteReport) -> Result<String, StoreError> {
        let id = uuid_v7();
        let s = &report.summary;
        let unknown = (!s.cost.is_known())
            .then(|| serde_json::to_string(&s.cost.unknown_models).unwrap_or_default());
        let mut stored = report.clone();
        stored.id = Some(id.clone());
        let json = serde_json::to_string(&stored)
            .map_err(|e| StoreError::NotFound(format!("cannot encode the report: {e}")))?;
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO test_runs (id, started_at, wall_ms, min_pass_rate, runs, passed, failed, pass_rate, mean_score,
                    cost_usd, cost_unknown, report)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    id,
                    report.started_at_ms,
                    report.wall_ms,
                    report.min_pass_rate,
                    s.runs as u64,
                    s.passed as u64,
                    s.failed as u64,
                    s.pass_rate,
                    s.mean_score,
                    s.cost.usd_if_known(),
                    unknown,
                    json
                ],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    /// The most recent test runs, newest first.
    pub fn test_runs(&self, limit: usize) -> Result<Vec<TestRunRow>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, started_at, wall_ms, min_pass_rate, runs, passed, failed, pass_rate, mean_score, cost_usd, cost_unknown
                 FROM test_runs ORDER BY started_at DESC, id DESC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map(params![limit as i64], |r| {
                    Ok(TestRunRow {
                        id: r.get(0)?,
                        started_at: r.get(1)?,
                        wall_ms: r.get(2)?,
                        min_pass_rate: r.get(3)?,
                        runs: r.get(4)?,
                        passed: r.get(5)?,
                        failed: r.get(6)?,
                        pass_rate: r.get(7)?,
                        mean_score: r.get(8)?,
                        cost_usd: r.get(9)?,
                        cost_unknown: r
                            .get::<_, Option<String>>(10)?
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or_default(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// One test run's full report, by id or unique id prefix.
    pub fn test_run(&self, id_or_prefix: &str) -> Result<SuiteReport, StoreError> {
        const KIND: Named = Named {
            table: "test_runs",
            noun: "test run",
            list: "tests",
        };
        let text: String = self.with_conn(|conn| {
            let id = resolve_id(conn, &KIND, id_or_prefix)?;
            Ok(conn.query_row(
                "SELECT report FROM test_runs WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )?)
        })?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::NotFound(format!("the stored report is unreadable: {e}")))
    }
}

fn uuid_v7() -> String {
    flowrun_core::new_id()
}

#[cfg(test)]
mod tests {
    use flowrun_core::testing::SuiteReport;

    use super::*;

    #[test]
    fn saves_lists_and_reads_back() {
        let store = Store::in_memory().unwrap();
        let report = SuiteReport::new(1_700_000_000_000, 1234, 0.9, Vec::new());
        let id = store.save_test_run(&report).unwrap();
        let rows = store.test_runs(10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, id);
        assert_eq!((rows[0].wall_ms, rows[0].min_pass_rate), (1234, 0.9));
        let back = store.test_run(&id[..13]).unwrap();
        assert_eq!(back.id.as_deref(), Some(id.as_str()));
        assert_eq!(back.wall_ms, 1234);
        assert!(store.test_run("ffff").is_err());
    }
}
