//! The Markdown reporter for `flowrun eval`: a GitHub-friendly comment with the verdict, a
//! summary table (metric | baseline | draft | delta) and a table of cases with both outputs
//! excerpted side by side; unchanged cases fold away under `<details>`.

use flowrun_core::eval::{EvalCase, EvalReport, Verdict};
use flowrun_core::testing::result::CaseResult;

use super::super::markdown::cell;
use super::common;

/// How much of an output a cell shows.
const OUTPUT_CHARS: usize = 120;
/// How much of a reason a cell shows.
const REASON_CHARS: usize = 200;

const CASES_HEADER: &str = "| | File | Case | Baseline output | Draft output | Baseline | Draft | Preference |\n\
                            |:-:|---|---|---|---|:-:|:-:|---|\n";

/// The evaluation as GitHub-flavoured Markdown. Text from cases is escaped so that `|`,
/// newlines, HTML and Markdown syntax cannot break the tables.
pub fn eval_markdown(report: &EvalReport) -> String {
    let icon = match report.verdict {
        Verdict::Better => "✅",
        Verdict::Worse => "❌",
        Verdict::NoSignificantChange => "➖",
    };
    let mut out = format!("## {icon} flowrun eval: {}\n\n", report.verdict.as_str());
    out.push_str(&format!(
        "Draft vs baseline **{}** · {} cases · {}\n\n",
        cell(&report.baseline),
        report.cases.len(),
        super::tally_line(report),
    ));

    out.push_str("| Metric | Baseline | Draft | Delta |\n|---|--:|--:|--:|\n");
    for m in super::metrics(report) {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            m.name,
            cell(&m.baseline),
            cell(&m.draft),
            cell(&m.delta),
        ));
    }
    out.push('\n');

    if report.cases.is_empty() {
        out.push_str("No cases ran.\n");
        return out;
    }
    let labels = super::labels(report);
    let rows = |changed: bool| -> Vec<String> {
        report
            .cases
            .iter()
            .enumerate()
            .filter(|(_, c)| super::changed(c) == changed)
            .map(|(i, c)| row(c, labels.get(i).map_or(c.case.as_str(), String::as_str)))
            .collect()
    };
    let changed = rows(true);
    let unchanged = rows(false);
    if changed.is_empty() {
        out.push_str("No case changed.\n");
    } else {
        out.push_str(&format!("### Changed cases ({})\n\n", changed.len()));
        out.push_str(CASES_HEADER);
        out.push_str(&changed.concat());
    }
    if !unchanged.is_empty() {
        // A blank line after `<summary>` lets GitHub render the table inside.
        out.push_str(&format!(
            "\n<details><summary>Unchanged cases ({})</summary>\n\n",
            unchanged.len()
        ));
        out.push_str(CASES_HEADER);
        out.push_str(&unchanged.concat());
        out.push_str("\n</details>\n");
    }
    out
}

/// One table row: both outputs, both results, and the preference with the judge's reason.
fn row(c: &EvalCase, label: &str) -> String {
    let mut preference = super::preference_str(c.preference).to_owned();
    if let Some(line) = super::pairwise_line(c) {
        preference.push_str("<br>");
        preference.push_str(&cell(&common::excerpt(
            &common::one_line(&line),
            REASON_CHARS,
        )));
    }
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {preference} |\n",
        super::arrow(c),
        cell(&c.file),
        cell(label),
        output(&c.baseline),
        output(&c.draft),
        result(&c.baseline),
        result(&c.draft),
    )
}

/// An output excerpt on one line, or *(no output)*.
fn output(r: &CaseResult) -> String {
    let text = super::output_text(r);
    if text.is_empty() {
        "*(no output)*".to_owned()
    } else {
        cell(&common::excerpt(&common::one_line(&text), OUTPUT_CHARS))
    }
}

/// `✅ 1.00`, or `❌ 0.50` with the first reason it failed.
fn result(r: &CaseResult) -> String {
    let mark = if r.pass { "✅" } else { "❌" };
    let mut text = format!("{mark} {:.2}", r.score);
    if !r.pass
        && let Some(reason) = super::first_failure(r)
    {
        text.push_str("<br>");
        text.push_str(&cell(&common::excerpt(
            &common::one_line(&reason),
            REASON_CHARS,
        )));
    }
    text
}
