//! Results of test runs: per case and per suite, with the summary reporters print.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::assert::AssertionResult;
use crate::cost::Cost;
use crate::event::RunStatus;
use crate::provider::Usage;

/// One run of one case (a case runs several times with `--repeat`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// The test file, relative to the project root (`tests/triage.test.yaml`).
    pub file: String,
    /// The case's name (given, or `case 3` / `row 3`).
    pub case: String,
    /// Position of the case in its file (0-based), for stable ordering.
    pub index: usize,
    /// 1-based repetition (`--repeat`).
    pub repeat: u32,
    /// `prompt/name` or `flow/name`.
    pub target: String,
    pub tags: Vec<String>,
    pub input: Value,
    /// The executor's run id, when the case got as far as running.
    pub run_id: Option<String>,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub output_text: String,
    pub error: Option<String>,
    pub assertions: Vec<AssertionResult>,
    /// Weighted score 0..1.
    pub score: f64,
    pub pass: bool,
    pub latency_ms: u64,
    pub usage: Usage,
    pub cost: Cost,
    /// Every model call was answered from the cache or a cassette.
    pub cached: bool,
}

/// Pass rate of one case over its repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseStats {
    pub file: String,
    pub case: String,
    pub runs: u32,
    pub passes: u32,
}

impl CaseStats {
    pub fn pass_rate(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            f64::from(self.passes) / f64::from(self.runs)
        }
    }

    /// Passed sometimes and failed sometimes.
    pub fn is_flaky(&self) -> bool {
        self.passes > 0 && self.passes < self.runs
    }
}

/// Totals over a set of case results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Case runs (cases × repeats).
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    /// `passed / runs`.
    pub pass_rate: f64,
    pub mean_score: f64,
    pub usage: Usage,
    pub cost: Cost,
    /// Sum of case latencies.
    pub latency_ms: u64,
    pub latency_p50_ms: u64,
    pub latency_p95_ms: u64,
    pub cached: usize,
    /// Cases with mixed results over their repeats.
    pub flaky: Vec<CaseStats>,
}

impl Summary {
    pub fn of(results: &[CaseResult]) -> Self {
        let runs = results.len();
        let passed = results.iter().filter(|r| r.pass).count();
        let mut usage = Usage::default();
        let mut cost = Cost::default();
        for r in results {
            usage.add(&r.usage);
            cost.add(&r.cost);
        }
        let mut latencies: Vec<u64> = results.iter().map(|r| r.latency_ms).collect();
        latencies.sort_unstable();
        let pct = |p: f64| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            let i = ((latencies.len() - 1) as f64 * p).round() as usize;
            latencies[i.min(latencies.len() - 1)]
        };
        let mean_score = if runs == 0 {
            0.0
        } else {
            results.iter().map(|r| r.score).sum::<f64>() / runs as f64
        };
        Summary {
            runs,
            passed,
            failed: runs - passed,
            pass_rate: if runs == 0 {
                0.0
            } else {
                passed as f64 / runs as f64
            },
            mean_score,
            usage,
            cost,
            latency_ms: latencies.iter().sum(),
            latency_p50_ms: pct(0.5),
            latency_p95_ms: pct(0.95),
            cached: results.iter().filter(|r| r.cached).count(),
            flaky: case_stats(results)
                .into_iter()
                .filter(CaseStats::is_flaky)
                .collect(),
        }
    }
}

/// Pass counts per case, in file and case order.
pub fn case_stats(results: &[CaseResult]) -> Vec<CaseStats> {
    let mut stats: Vec<CaseStats> = Vec::new();
    let mut sorted: Vec<&CaseResult> = results.iter().collect();
    sorted.sort_by(|a, b| (&a.file, a.index).cmp(&(&b.file, b.index)));
    for r in sorted {
        match stats.last_mut() {
            Some(s) if s.file == r.file && s.case == r.case => {
                s.runs += 1;
                s.passes += u32::from(r.pass);
            }
            _ => stats.push(CaseStats {
                file: r.file.clone(),
                case: r.case.clone(),
                runs: 1,
                passes: u32::from(r.pass),
            }),
        }
    }
    stats
}

/// A whole `flowrun test` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteReport {
    /// Id of the record in the local history, once stored.
    pub id: Option<String>,
    pub started_at_ms: i64,
    pub wall_ms: u64,
    /// The pass rate the suite needs (`--min-pass-rate`, default 1).
    pub min_pass_rate: f64,
    pub results: Vec<CaseResult>,
    pub summary: Summary,
}

impl SuiteReport {
    pub fn new(
        started_at_ms: i64,
        wall_ms: u64,
        min_pass_rate: f64,
        mut results: Vec<CaseResult>,
    ) -> Self {
        results.sort_by(|a, b| (&a.file, a.index, a.repeat).cmp(&(&b.file, b.index, b.repeat)));
        let summary = Summary::of(&results);
        SuiteReport {
            id: None,
            started_at_ms,
            wall_ms,
            min_pass_rate,
            results,
            summary,
        }
    }

    /// The suite passes when its pass rate reaches `min_pass_rate` (and it ran something).
    pub fn passed(&self) -> bool {
        self.summary.runs > 0 && self.summary.pass_rate + 1e-9 >= self.min_pass_rate
    }
}
