//! The HTML reporter: one self-contained page (inline CSS, no scripts, no external resources)
//! with the summary and a table of case runs, each expandable to its input, output and
//! assertions.

use flowrun_core::assert::AssertionResult;
use flowrun_core::testing::result::{CaseResult, SuiteReport};
use serde_json::Value;

use super::common;

pub(super) const STYLE: &str = r#"
:root { color-scheme: light dark; --pass: #1a7f37; --fail: #cf222e; --muted: #6e7781;
  --line: #d0d7de; --code: #f6f8fa; }
@media (prefers-color-scheme: dark) {
  :root { --pass: #3fb950; --fail: #f85149; --muted: #8b949e; --line: #30363d; --code: #161b22; }
}
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; line-height: 1.4; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
.meta { color: var(--muted); margin: 0 0 1rem; }
.badge { display: inline-block; padding: .1rem .6rem; border-radius: 1rem; color: #fff; font-size: 1rem; vertical-align: middle; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0 0 1.5rem; }
dl.summary dt { color: var(--muted); } dl.summary dd { margin: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.fail td.status { color: var(--fail); } tr.pass td.status { color: var(--pass); }
.reasons { white-space: pre-wrap; color: var(--fail); }
details summary { cursor: pointer; }
details h4 { margin: .75rem 0 .25rem; font-size: .9rem; }
pre { background: var(--code); padding: .5rem; margin: 0; white-space: pre-wrap; word-break: break-word; max-height: 30rem; overflow: auto; }
table.assertions { width: auto; }
table.assertions td { white-space: pre-wrap; }
.muted { color: var(--muted); }
"#;

/// The report as one self-contained HTML page. All text from cases is escaped.
pub fn html(report: &SuiteReport) -> String {
    let s = &report.summary;
    let verdict = common::verdict(report);
    let class = if report.passed() { "pass" } else { "fail" };
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>flowrun test: {verdict}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    ));
    out.push_str(&format!(
        "<h1>flowrun test <span class=\"badge {class}\">{verdict}</span></h1>\n"
    ));
    let mut meta = format!(
        "started {} UTC · wall time {}",
        common::iso8601(report.started_at_ms).replace('T', " "),
        common::duration(report.wall_ms)
    );
    if let Some(id) = &report.id {
        meta.push_str(&format!(" · report {id}"));
    }
    out.push_str(&format!("<p class=\"meta\">{}</p>\n", esc(&meta)));

    let flaky = if s.flaky.is_empty() {
        "none".to_owned()
    } else {
        s.flaky
            .iter()
            .map(|f| {
                format!(
                    "{} › {}: passed {}/{} ({})",
                    esc(&f.file),
                    esc(&f.case),
                    f.passes,
                    f.runs,
                    common::percent(f.pass_rate())
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let items = [
        ("Result", esc(&common::verdict_line(report))),
        ("Passed", format!("{}/{}", s.passed, s.runs)),
        (
            "Pass rate",
            format!(
                "{} (min {})",
                common::percent(s.pass_rate),
                common::percent(report.min_pass_rate)
            ),
        ),
        ("Mean score", format!("{:.2}", s.mean_score)),
        (
            "Tokens",
            format!(
                "{} in / {} out",
                s.usage.input_tokens, s.usage.output_tokens
            ),
        ),
        ("Cost", esc(&s.cost.to_string())),
        (
            "Latency",
            format!(
                "p50 {}, p95 {}",
                common::duration(s.latency_p50_ms),
                common::duration(s.latency_p95_ms)
            ),
        ),
        ("Cached", s.cached.to_string()),
        ("Flaky", flaky),
    ];
    out.push_str("<dl class=\"summary\">\n");
    for (term, value) in items {
        out.push_str(&format!("<dt>{term}</dt><dd>{value}</dd>\n"));
    }
    out.push_str("</dl>\n");

    if report.results.is_empty() {
        out.push_str("<p>No cases ran.</p>\n");
    } else {
        out.push_str(
            "<table class=\"cases\">\n<thead><tr><th></th><th>File</th><th>Case</th>\
             <th class=\"num\">Score</th><th>Failed assertions</th><th class=\"num\">Latency</th>\
             <th class=\"num\">Cost</th></tr></thead>\n<tbody>\n",
        );
        let labels = common::case_labels(report);
        for (i, r) in report.results.iter().enumerate() {
            let label = labels.get(i).map_or(r.case.as_str(), String::as_str);
            write_row(&mut out, r, label);
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn write_row(out: &mut String, r: &CaseResult, label: &str) {
    let (class, mark) = if r.pass {
        ("pass", "✅")
    } else {
        ("fail", "❌")
    };
    let latency = if r.cached {
        format!(
            "{}<br><span class=\"muted\">cached</span>",
            common::duration(r.latency_ms)
        )
    } else {
        common::duration(r.latency_ms)
    };
    out.push_str(&format!(
        "<tr class=\"{class}\"><td class=\"status\">{mark}</td><td>{}</td><td><details><summary>{}</summary>\n",
        esc(&r.file),
        esc(label),
    ));
    out.push_str(&format!(
        "<p class=\"muted\">{} · run {}</p>\n",
        esc(&r.target),
        esc(r.run_id.as_deref().unwrap_or("none")),
    ));
    out.push_str(&format!(
        "<h4>Input</h4><pre>{}</pre>\n",
        esc(&pretty(&r.input))
    ));
    let output = match (&r.output, r.output_text.is_empty()) {
        (Some(value), true) if !value.is_null() => pretty(value),
        _ => r.output_text.clone(),
    };
    out.push_str(&format!("<h4>Output</h4><pre>{}</pre>\n", esc(&output)));
    if let Some(error) = &r.error {
        out.push_str(&format!(
            "<h4>Error ({})</h4><pre>{}</pre>\n",
            r.status.as_str(),
            esc(error)
        ));
    }
    out.push_str("<h4>Assertions</h4>\n");
    write_assertions(out, &r.assertions);
    let reasons = common::failure_lines(r).join("\n");
    out.push_str(&format!(
        "</details></td><td class=\"num\">{:.2}</td><td class=\"reasons\">{}</td>\
         <td class=\"num\">{latency}</td><td class=\"num\">{}</td></tr>\n",
        r.score,
        esc(&reasons),
        esc(&r.cost.to_string()),
    ));
}

/// A table of assertion results (name, score, pass, reason), or "none evaluated".
pub(super) fn write_assertions(out: &mut String, assertions: &[AssertionResult]) {
    if assertions.is_empty() {
        out.push_str("<p class=\"muted\">none evaluated</p>\n");
    } else {
        out.push_str(
            "<table class=\"assertions\"><thead><tr><th>Assertion</th><th class=\"num\">Score</th>\
             <th>Pass</th><th>Reason</th></tr></thead><tbody>\n",
        );
        for a in assertions {
            let mut name = esc(&a.name);
            if a.required {
                name.push_str(" <span class=\"muted\">(required)</span>");
            }
            out.push_str(&format!(
                "<tr class=\"{}\"><td>{name}</td><td class=\"num\">{:.2}</td><td class=\"status\">{}</td><td>{}</td></tr>\n",
                if a.pass { "pass" } else { "fail" },
                a.score,
                if a.pass { "✅" } else { "❌" },
                esc(&a.reason),
            ));
        }
        out.push_str("</tbody></table>\n");
    }
}

pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `text` escaped for HTML element content and attribute values; control characters other
/// than tab and newline replaced.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\r' => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}
