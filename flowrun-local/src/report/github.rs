//! The GitHub Actions reporter: workflow commands that annotate failing cases in the run's
//! summary and the pull request (`::error file=…,title=…::…`).

use flowrun_core::testing::result::SuiteReport;

use super::common;

/// One `::error` command per failing case run (file = test file, title = case, message = the
/// failed assertions or the run error), one `::warning` per flaky case, and a `::notice`
/// with the summary.
pub fn github_annotations(report: &SuiteReport) -> String {
    let labels = common::case_labels(report);
    let mut out = String::new();
    for (i, r) in report.results.iter().enumerate() {
        if r.pass {
            continue;
        }
        let label = labels.get(i).map_or(r.case.as_str(), String::as_str);
        out.push_str(&format!(
            "::error file={},title={}::{}\n",
            property(&r.file),
            property(label),
            data(&common::failure_lines(r).join("\n")),
        ));
    }
    for s in &report.summary.flaky {
        out.push_str(&format!(
            "::warning file={},title={}::{}\n",
            property(&s.file),
            property(&format!("flaky: {}", s.case)),
            data(&format!(
                "passed {} of {} runs ({})",
                s.passes,
                s.runs,
                common::percent(s.pass_rate())
            )),
        ));
    }
    out.push_str(&format!(
        "::notice::{}\n",
        data(&format!(
            "flowrun test: {} · {}",
            common::verdict_line(report),
            common::stats_line(report)
        ))
    ));
    out
}

/// A command's message: `%`, CR and LF percent-encoded.
fn data(s: &str) -> String {
    escape(s, false)
}

/// A command property value: like [`data`], plus `:` and `,`.
fn property(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, is_property: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            ':' if is_property => out.push_str("%3A"),
            ',' if is_property => out.push_str("%2C"),
            // Escape sequences and other controls would garble the log.
            c if c.is_control() && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}
