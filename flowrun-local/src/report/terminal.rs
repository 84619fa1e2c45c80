//! The terminal reporter: the human summary `flowrun test` prints after a run: failing case
//! runs, flaky cases, per-file totals and the verdict.

use flowrun_core::testing::result::SuiteReport;

use super::common;

/// How much of a failure reason a line shows.
const REASON_CHARS: usize = 200;

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The summary printed after a run; ANSI colours only when `color`. Text from cases is put
/// on one line with control characters (escape sequences included) replaced.
pub fn terminal(report: &SuiteReport, color: bool) -> String {
    let paint = |style: &str, text: &str| {
        if color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };
    let labels = common::case_labels(report);
    let mut out = String::new();

    for (i, r) in report.results.iter().enumerate() {
        if r.pass {
            continue;
        }
        let label = labels.get(i).map_or(r.case.as_str(), String::as_str);
        let lines = common::failure_lines(r);
        let mut reason = lines
            .first()
            .map(|l| common::excerpt(&common::one_line(l), REASON_CHARS))
            .unwrap_or_default();
        if lines.len() > 1 {
            reason.push_str(&format!(" (+{} more)", lines.len() - 1));
        }
        out.push_str(&format!(
            "{} {} › {}: {reason}\n",
            paint(RED, "✗"),
            common::one_line(&r.file),
            paint(BOLD, &common::one_line(label)),
        ));
    }
    for f in &report.summary.flaky {
        out.push_str(&format!(
            "{} {} › {}: passed {}/{} ({})\n",
            paint(YELLOW, "~ flaky"),
            common::one_line(&f.file),
            common::one_line(&f.case),
            f.passes,
            f.runs,
            common::percent(f.pass_rate()),
        ));
    }
    if !out.is_empty() {
        out.push('\n');
    }

    let groups = common::by_file(report);
    if !groups.is_empty() {
        let files: Vec<String> = groups.iter().map(|g| common::one_line(g.file)).collect();
        let width = files
            .iter()
            .map(|f| f.chars().count())
            .max()
            .unwrap_or(0)
            .max("File".len());
        out.push_str(&paint(
            DIM,
            &format!("{:<width$}  Runs  Passed  Failed  Score", "File"),
        ));
        out.push('\n');
        for (g, file) in groups.iter().zip(&files) {
            let passed = g.passed();
            let failed = g.results.len() - passed;
            let failed_text = format!("{failed:>6}");
            let failed_text = if failed > 0 {
                paint(RED, &failed_text)
            } else {
                failed_text
            };
            out.push_str(&format!(
                "{file:<width$}  {:>4}  {passed:>6}  {failed_text}  {:>5.2}\n",
                g.results.len(),
                g.mean_score(),
            ));
        }
        out.push('\n');
    }

    let style = if report.passed() { GREEN } else { RED };
    out.push_str(&paint(
        &format!("{BOLD}{style}"),
        &common::verdict_line(report),
    ));
    out.push('\n');
    out.push_str(&paint(DIM, &common::stats_line(report)));
    out.push('\n');
    out
}
