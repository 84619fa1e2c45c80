//! The JUnit reporter: XML in the common Jenkins/Ant shape CI systems read
//! (`testsuites > testsuite > testcase` with `failure`, `error` and `system-out`).

use flowrun_core::testing::result::{CaseResult, SuiteReport};

use super::common::{self, FileGroup};

/// How much of the output a failure body quotes.
const OUTPUT_EXCERPT_CHARS: usize = 2000;

/// The report as JUnit XML: one `<testsuite>` per test file (named by its path) and one
/// `<testcase>` per case run. A case whose run failed gets `<error>`, a case whose output
/// failed gets `<failure>` listing the failed assertions and an output excerpt.
pub fn junit(report: &SuiteReport) -> String {
    let labels = common::case_labels(report);
    let groups = common::by_file(report);
    let (failures, errors) = counts(report.results.iter());
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"flowrun\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" \
         skipped=\"0\" time=\"{}\" timestamp=\"{}\">\n",
        report.results.len(),
        seconds(report.wall_ms),
        common::iso8601(report.started_at_ms),
    ));
    for group in &groups {
        write_suite(&mut out, report, group, &labels);
    }
    out.push_str("</testsuites>\n");
    out
}

fn write_suite(out: &mut String, report: &SuiteReport, group: &FileGroup<'_>, labels: &[String]) {
    let (failures, errors) = counts(group.results.iter().map(|(_, r)| *r));
    out.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" \
         skipped=\"0\" time=\"{}\" timestamp=\"{}\">\n",
        attr(group.file),
        group.results.len(),
        seconds(group.latency_ms()),
        common::iso8601(report.started_at_ms),
    ));
    for (i, r) in &group.results {
        let label = labels.get(*i).map_or(r.case.as_str(), String::as_str);
        write_case(out, r, label);
    }
    out.push_str("  </testsuite>\n");
}

fn write_case(out: &mut String, r: &CaseResult, label: &str) {
    out.push_str(&format!(
        "    <testcase classname=\"{}\" name=\"{}\" assertions=\"{}\" time=\"{}\">\n",
        attr(&r.file),
        attr(label),
        r.assertions.len(),
        seconds(r.latency_ms),
    ));
    let lines = common::failure_lines(r);
    if let Some(error) = common::run_error(r) {
        let mut body = lines.join("\n");
        if !r.assertions.is_empty() {
            body.push_str(&format!(
                "\n{} assertion(s) not evaluated",
                r.assertions.len()
            ));
        }
        out.push_str(&format!(
            "      <error message=\"{}\" type=\"{}\">{}</error>\n",
            attr(error),
            r.status.as_str(),
            text(&body),
        ));
    } else if !r.pass {
        let mut body = lines.join("\n");
        body.push_str("\n\noutput:\n");
        body.push_str(&common::excerpt(&r.output_text, OUTPUT_EXCERPT_CHARS));
        out.push_str(&format!(
            "      <failure message=\"{}\" type=\"assertion\">{}</failure>\n",
            attr(&lines.join("; ")),
            text(&body),
        ));
    }
    if !r.output_text.is_empty() {
        out.push_str(&format!(
            "      <system-out>{}</system-out>\n",
            text(&r.output_text)
        ));
    }
    out.push_str("    </testcase>\n");
}

/// (failures, errors) among `results`: a run error counts as an error, any other failed case
/// as a failure.
fn counts<'a>(results: impl Iterator<Item = &'a CaseResult>) -> (usize, usize) {
    results.fold((0, 0), |(failures, errors), r| {
        if common::run_error(r).is_some() {
            (failures, errors + 1)
        } else if !r.pass {
            (failures + 1, errors)
        } else {
            (failures, errors)
        }
    })
}

/// Milliseconds as JUnit's decimal seconds.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Escaped for an attribute value: newlines and tabs kept as character references (a parser
/// would otherwise normalize them to spaces).
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escaped for element content.
fn text(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, in_attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A literal CR would be normalized away by the parser.
            '\r' => out.push_str("&#13;"),
            '\n' if in_attribute => out.push_str("&#10;"),
            '\t' if in_attribute => out.push_str("&#9;"),
            c if !xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Whether XML 1.0 allows `c` in a document (its `Char` production).
pub(super) fn xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}
