//! The HTML reporter for `flowrun eval`: one self-contained page (inline CSS, no scripts, no
//! external resources) with the verdict, the totals of both sides, and every case with its
//! baseline and draft results side by side.

use flowrun_core::eval::{EvalCase, EvalReport, Verdict};
use flowrun_core::testing::result::CaseResult;

use super::super::html::{STYLE, esc, pretty, write_assertions};
use super::{Trend, common};

/// What the eval page adds to the test-run page's style.
const EVAL_STYLE: &str = r#"
.badge.same { background: var(--muted); }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
table.totals { width: auto; margin: 0 0 .75rem; }
.better { color: var(--pass); } .worse { color: var(--fail); }
.status.pass { color: var(--pass); font-weight: 600; } .status.fail { color: var(--fail); font-weight: 600; }
table.eval > tbody > tr > td { border-bottom: 2px solid var(--line); }
table.eval > tbody > tr > td.side { width: 38%; }
table.eval > tbody > tr.changed.up > td { background: rgba(26, 127, 55, .09);
  background: color-mix(in srgb, var(--pass) 9%, transparent); }
table.eval > tbody > tr.changed.down > td { background: rgba(207, 34, 46, .09);
  background: color-mix(in srgb, var(--fail) 9%, transparent); }
table.eval > tbody > tr.changed.up > td.case { border-left: 4px solid var(--pass); }
table.eval > tbody > tr.changed.down > td.case { border-left: 4px solid var(--fail); }
td.side pre { margin: .25rem 0; }
td.side h4 { margin: .5rem 0 .2rem; font-size: .85rem; }
.arrow { font-size: 1.1rem; }
.case-name { font-weight: 600; }
"#;

/// The evaluation as one self-contained HTML page that opens from disk. All text from cases
/// is escaped.
pub fn eval_html(report: &EvalReport) -> String {
    let verdict = report.verdict.as_str();
    let class = match report.verdict {
        Verdict::Better => "pass",
        Verdict::Worse => "fail",
        Verdict::NoSignificantChange => "same",
    };
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>flowrun eval: {verdict}</title>\n<style>{STYLE}{EVAL_STYLE}</style>\n</head>\n<body>\n"
    ));
    out.push_str(&format!(
        "<h1>flowrun eval <span class=\"badge {class}\">{verdict}</span></h1>\n"
    ));
    let mut meta = format!(
        "draft vs baseline {} · {} cases · started {} UTC · wall time {}",
        report.baseline,
        report.cases.len(),
        common::iso8601(report.started_at_ms).replace('T', " "),
        common::duration(report.wall_ms)
    );
    if let Some(id) = &report.id {
        meta.push_str(&format!(" · eval {id}"));
    }
    out.push_str(&format!("<p class=\"meta\">{}</p>\n", esc(&meta)));

    out.push_str(
        "<table class=\"totals\">\n<thead><tr><th>Metric</th><th class=\"num\">Baseline</th>\
         <th class=\"num\">Draft</th><th class=\"num\">Delta</th></tr></thead>\n<tbody>\n",
    );
    for m in super::metrics(report) {
        let trend = match m.trend {
            Trend::Better => " better",
            Trend::Worse => " worse",
            Trend::Same | Trend::Unknown => "",
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num{trend}\">{}</td></tr>\n",
            m.name,
            esc(&m.baseline),
            esc(&m.draft),
            esc(&m.delta),
        ));
    }
    out.push_str("</tbody>\n</table>\n");
    out.push_str(&format!("<p>{}</p>\n", esc(&super::tally_line(report))));

    out.push_str("<h2>Cases</h2>\n");
    if report.cases.is_empty() {
        out.push_str("<p>No cases ran.</p>\n");
    } else {
        out.push_str(
            "<table class=\"eval\">\n<thead><tr><th>Case</th><th>Baseline</th><th>Draft</th>\
             <th>Preference</th></tr></thead>\n<tbody>\n",
        );
        let labels = super::labels(report);
        for (i, c) in report.cases.iter().enumerate() {
            let label = labels.get(i).map_or(c.case.as_str(), String::as_str);
            write_case(&mut out, c, label);
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// One row: the case and its inputs, both sides, and the preference.
fn write_case(out: &mut String, c: &EvalCase, label: &str) {
    let row_class = if !super::changed(c) {
        "same"
    } else if super::improved(c) {
        "changed up"
    } else {
        "changed down"
    };
    out.push_str(&format!(
        "<tr class=\"{row_class}\"><td class=\"case\"><span class=\"arrow\">{}</span> \
         <span class=\"case-name\">{}</span><br><span class=\"muted\">{}<br>{}</span>\n",
        super::arrow(c),
        esc(label),
        esc(&c.file),
        esc(&c.draft.target),
    ));
    out.push_str(&format!(
        "<details><summary>Input</summary><pre>{}</pre></details>\n",
        esc(&pretty(&c.draft.input))
    ));
    if c.baseline.input != c.draft.input {
        out.push_str(&format!(
            "<details><summary>Baseline input</summary><pre>{}</pre></details>\n",
            esc(&pretty(&c.baseline.input))
        ));
    }
    out.push_str("</td>\n");
    write_side(out, &c.baseline);
    write_side(out, &c.draft);

    out.push_str(&format!(
        "<td class=\"preference\"><strong>{}</strong>\n",
        super::preference_str(c.preference)
    ));
    match &c.pairwise {
        Some(p) => {
            let order = if p.consistent {
                "same answer in both orders"
            } else {
                "changed its answer with the order, so a tie"
            };
            out.push_str(&format!(
                "<p>judge: {} <span class=\"muted\">({order})</span></p>\n",
                super::preference_str(p.preference)
            ));
            if !p.reason.trim().is_empty() {
                out.push_str(&format!("<pre>{}</pre>\n", esc(&p.reason)));
            }
        }
        None => out.push_str("<p class=\"muted\">no pairwise judge</p>\n"),
    }
    out.push_str("</td></tr>\n");
}

/// One side of a case: pass/fail and score, output, run error, assertions, usage.
fn write_side(out: &mut String, r: &CaseResult) {
    let (class, mark, word) = if r.pass {
        ("pass", "✅", "pass")
    } else {
        ("fail", "❌", "fail")
    };
    out.push_str(&format!(
        "<td class=\"side\"><span class=\"status {class}\">{mark} {word}</span> · score {:.2}\n",
        r.score
    ));
    let output = super::output_text(r);
    if output.is_empty() {
        out.push_str("<p class=\"muted\">no output</p>\n");
    } else {
        out.push_str(&format!("<pre>{}</pre>\n", esc(&output)));
    }
    if let Some(error) = &r.error {
        out.push_str(&format!(
            "<h4>Error ({})</h4><pre class=\"reasons\">{}</pre>\n",
            r.status.as_str(),
            esc(error)
        ));
    }
    out.push_str("<h4>Assertions</h4>\n");
    write_assertions(out, &r.assertions);
    out.push_str(&format!(
        "<p class=\"muted\">{}</p></td>\n",
        esc(&super::usage_line(r))
    ));
}
