//! Helpers the reporters share: case labels, failure reasons, grouping by file, number and
//! time formats, and the verdict line.

use std::collections::HashMap;

use flowrun_core::event::RunStatus;
use flowrun_core::testing::result::{CaseResult, SuiteReport};

/// Display names of the report's results, parallel to `report.results`: the case name, with
/// ` #<repeat>` when the case ran more than once.
pub(super) fn case_labels(report: &SuiteReport) -> Vec<String> {
    labels_of(&report.results.iter().collect::<Vec<_>>())
}

/// Display names of `results`, parallel to them: the case name, with ` #<repeat>` when the
/// case ran more than once.
pub(super) fn labels_of(results: &[&CaseResult]) -> Vec<String> {
    let mut max_repeat: HashMap<(&str, usize), u32> = HashMap::new();
    for r in results {
        let m = max_repeat.entry((r.file.as_str(), r.index)).or_insert(0);
        *m = (*m).max(r.repeat);
    }
    results
        .iter()
        .map(|r| {
            let repeated = max_repeat
                .get(&(r.file.as_str(), r.index))
                .is_some_and(|&m| m > 1);
            if repeated {
                format!("{} #{}", r.case, r.repeat)
            } else {
                r.case.clone()
            }
        })
        .collect()
}

/// The error of a case whose run itself failed or was cancelled (as opposed to a run whose
/// output failed its assertions).
pub(super) fn run_error(r: &CaseResult) -> Option<&str> {
    match r.status {
        RunStatus::Failed | RunStatus::Cancelled | RunStatus::BudgetExceeded => r.error.as_deref(),
        RunStatus::Succeeded | RunStatus::Running => None,
    }
}

/// Why a case failed, one line per reason: the run error, or each failed assertion as
/// `name: reason`. Empty for a case with nothing to report.
pub(super) fn failure_lines(r: &CaseResult) -> Vec<String> {
    if let Some(e) = run_error(r) {
        return vec![format!("run {}: {e}", r.status.as_str())];
    }
    let mut lines: Vec<String> = r
        .assertions
        .iter()
        .filter(|a| !a.pass)
        .map(|a| format!("{}: {}", a.name, a.reason))
        .collect();
    if let Some(e) = &r.error {
        lines.push(format!("error: {e}"));
    }
    if lines.is_empty() && !r.pass {
        lines.push(match r.status {
            RunStatus::Succeeded => format!("score {:.2} is below the case's threshold", r.score),
            other => format!("run {}", other.as_str()),
        });
    }
    lines
}

/// The results of one test file, with their positions in `report.results`.
pub(super) struct FileGroup<'a> {
    pub file: &'a str,
    pub results: Vec<(usize, &'a CaseResult)>,
}

impl FileGroup<'_> {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|(_, r)| r.pass).count()
    }

    pub fn mean_score(&self) -> f64 {
        if self.results.is_empty() {
            0.0
        } else {
            self.results.iter().map(|(_, r)| r.score).sum::<f64>() / self.results.len() as f64
        }
    }

    pub fn latency_ms(&self) -> u64 {
        self.results
            .iter()
            .fold(0u64, |sum, (_, r)| sum.saturating_add(r.latency_ms))
    }
}

/// The results grouped by file, files in order of first appearance.
pub(super) fn by_file(report: &SuiteReport) -> Vec<FileGroup<'_>> {
    let mut groups: Vec<FileGroup<'_>> = Vec::new();
    let mut positions: HashMap<&str, usize> = HashMap::new();
    for (i, r) in report.results.iter().enumerate() {
        let at = *positions.entry(r.file.as_str()).or_insert_with(|| {
            groups.push(FileGroup {
                file: r.file.as_str(),
                results: Vec::new(),
            });
            groups.len() - 1
        });
        if let Some(g) = groups.get_mut(at) {
            g.results.push((i, r));
        }
    }
    groups
}

/// `0.923` → `92.3%`, `0.9` → `90%`.
pub(super) fn percent(rate: f64) -> String {
    let s = format!("{:.1}", rate * 100.0);
    let s = s.strip_suffix(".0").unwrap_or(&s);
    format!("{s}%")
}

/// `120` → `120 ms`, `4321` → `4.32 s`.
pub(super) fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}

/// `PASS` or `FAIL`.
pub(super) fn verdict(report: &SuiteReport) -> &'static str {
    if report.passed() { "PASS" } else { "FAIL" }
}

/// `12 passed, 1 failed (92.3% ≥ min 90%): PASS`.
pub(super) fn verdict_line(report: &SuiteReport) -> String {
    let s = &report.summary;
    let rate = if s.runs == 0 {
        "no cases ran".to_owned()
    } else {
        let cmp = if s.pass_rate + 1e-9 >= report.min_pass_rate {
            "≥"
        } else {
            "<"
        };
        format!(
            "{} {cmp} min {}",
            percent(s.pass_rate),
            percent(report.min_pass_rate)
        )
    };
    format!(
        "{} passed, {} failed ({rate}): {}",
        s.passed,
        s.failed,
        verdict(report)
    )
}

/// `tokens 1200 in / 300 out · cost $0.0012 · latency p50 120 ms, p95 900 ms · 2 cached`.
pub(super) fn stats_line(report: &SuiteReport) -> String {
    let s = &report.summary;
    format!(
        "tokens {} in / {} out · cost {} · latency p50 {}, p95 {} · {} cached",
        s.usage.input_tokens,
        s.usage.output_tokens,
        s.cost,
        duration(s.latency_p50_ms),
        duration(s.latency_p95_ms),
        s.cached
    )
}

/// The first `max_chars` characters of `text`, with `…` when cut.
pub(super) fn excerpt(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// `text` on one line for a terminal or log: newlines shown as `↵`, other control characters
/// (escape sequences included) replaced by `�`.
pub(super) fn one_line(text: &str) -> String {
    let text = text.trim_end_matches(['\r', '\n']);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str(" ↵ "),
            '\r' => {}
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `started_at_ms` as ISO 8601 UTC without a zone (`2024-05-01T12:00:00`), the form JUnit's
/// `timestamp` attribute takes.
pub(super) fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let day_secs = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
