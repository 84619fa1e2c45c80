//! Stored evaluations (`flowrun eval`): a summary row each plus the whole report.

use flowrun_core::eval::EvalReport;
use rusqlite::params;
use serde::Serialize;

use super::query::{Named, resolve_id};
use super::{Store, StoreError};

/// One evaluation, as `flowrun evals` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    pub id: String,
    pub started_at: i64,
    pub wall_ms: u64,
    pub baseline: String,
    pub verdict: String,
    pub cases: u64,
    pub draft_pass_rate: f64,
    pub baseline_pass_rate: f64,
    pub draft_wins: u64,
    pub baseline_wins: u64,
    pub p_value: f64,
}

impl Store {
    /// Stores an evaluation and returns its new id.
    pub fn save_eval(&self, report: &EvalReport) -> Result<String, StoreError> {
        let id = flowrun_core::new_id();
        let mut stored = report.clone();
        stored.id = Some(id.clone());
        let json = serde_json::to_string(&stored)
            .map_err(|e| StoreError::NotFound(format!("cannot encode the report: {e}")))?;
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO evals (id, started_at, wall_ms, baseline, verdict, cases, draft_pass_rate, baseline_pass_rate,
                    draft_wins, baseline_wins, p_value, report)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    id,
                    report.started_at_ms,
                    report.wall_ms,
                    report.baseline,
                    report.verdict.as_str(),
                    report.cases.len() as u64,
                    report.draft.pass_rate,
                    report.baseline_summary.pass_rate,
                    report.draft_wins as u64,
                    report.baseline_wins as u64,
                    report.p_value,
                    json
                ],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    /// The most recent evaluations, newest first.
    pub fn evals(&self, limit: usize) -> Result<Vec<EvalRow>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, started_at, wall_ms, baseline, verdict, cases, draft_pass_rate, baseline_pass_rate, draft_wins,
                    baseline_wins, p_value
                 FROM evals ORDER BY started_at DESC, id DESC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map(params![limit as i64], |r| {
                    Ok(EvalRow {
                        id: r.get(0)?,
                        started_at: r.get(1)?,
                        wall_ms: r.get(2)?,
                        baseline: r.get(3)?,
                        verdict: r.get(4)?,
                        cases: r.get(5)?,
                        draft_pass_rate: r.get(6)?,
                        baseline_pass_rate: r.get(7)?,
                        draft_wins: r.get(8)?,
                        baseline_wins: r.get(9)?,
                        p_value: r.get(10)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// One evaluation's full report, by id or unique id prefix.
    pub fn eval(&self, id_or_prefix: &str) -> Result<EvalReport, StoreError> {
        const KIND: Named = Named {
            table: "evals",
            noun: "evaluation",
            list: "evals",
        };
        let text: String = self.with_conn(|conn| {
            let id = resolve_id(conn, &KIND, id_or_prefix)?;
            Ok(
                conn.query_row("SELECT report FROM evals WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })?,
            )
        })?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::NotFound(format!("the stored evaluation is unreadable: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_lists_and_reads_back() {
        let store = Store::in_memory().unwrap();
        let report = EvalReport::new(
            1_700_000_000_000,
            10,
            "git:main (abc)".into(),
            Vec::new(),
            Vec::new(),
            &|_, _| None,
        );
        let id = store.save_eval(&report).unwrap();
        let rows = store.evals(5).unwrap();
        assert_eq!(
            (rows.len(), rows[0].verdict.as_str()),
            (1, "no significant change")
        );
        assert_eq!(store.eval(&id[..10]).unwrap().baseline, "git:main (abc)");
        assert!(store.eval("abc").is_err());
    }
}
