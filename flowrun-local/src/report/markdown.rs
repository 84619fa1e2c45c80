//! The Markdown reporter: a heading, a summary line and a table of case runs, for
//! `$GITHUB_STEP_SUMMARY`, pull request comments or any GitHub-flavoured Markdown viewer.

use flowrun_core::testing::result::SuiteReport;

use super::common;

/// The report as GitHub-flavoured Markdown. Text from cases is escaped so that `|`,
/// newlines, HTML and Markdown syntax cannot break the table.
pub fn markdown(report: &SuiteReport) -> String {
    let s = &report.summary;
    let labels = common::case_labels(report);
    let icon = if report.passed() { "✅" } else { "❌" };
    let mut out = format!("## {icon} flowrun test: {}\n\n", common::verdict(report));

    let flaky = if s.flaky.is_empty() {
        "none".to_owned()
    } else {
        s.flaky
            .iter()
            .map(|f| {
                format!(
                    "{} › {} ({}/{})",
                    cell(&f.file),
                    cell(&f.case),
                    f.passes,
                    f.runs
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "**{}/{} passed** · pass rate {} (min {}) · mean score {:.2} · tokens {} in / {} out · \
         cost {} · latency p50 {}, p95 {} · {} cached · flaky: {flaky}\n\n",
        s.passed,
        s.runs,
        common::percent(s.pass_rate),
        common::percent(report.min_pass_rate),
        s.mean_score,
        s.usage.input_tokens,
        s.usage.output_tokens,
        cell(&s.cost.to_string()),
        common::duration(s.latency_p50_ms),
        common::duration(s.latency_p95_ms),
        s.cached,
    ));

    if report.results.is_empty() {
        out.push_str("No cases ran.\n");
        return out;
    }
    out.push_str("| | File | Case | Score | Failed assertions | Latency | Cost |\n");
    out.push_str("|:-:|---|---|--:|---|--:|--:|\n");
    for (i, r) in report.results.iter().enumerate() {
        let label = labels.get(i).map_or(r.case.as_str(), String::as_str);
        let reasons = common::failure_lines(r)
            .iter()
            .map(|l| cell(l))
            .collect::<Vec<_>>()
            .join("<br>");
        let latency = if r.cached {
            format!("{} (cached)", common::duration(r.latency_ms))
        } else {
            common::duration(r.latency_ms)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {reasons} | {latency} | {} |\n",
            if r.pass { "✅" } else { "❌" },
            cell(&r.file),
            cell(label),
            r.score,
            cell(&r.cost.to_string()),
        ));
    }
    out
}

/// `text` safe inside a table cell: Markdown punctuation backslash-escaped (a `|` would end
/// the cell), HTML special characters as entities, newlines as `<br>`, control characters
/// replaced.
pub(super) fn cell(text: &str) -> String {
    let text = text.trim_end_matches(['\r', '\n']);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '~' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}
