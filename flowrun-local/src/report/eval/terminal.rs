//! The terminal reporter for `flowrun eval`: the verdict, both sides' totals with deltas, the
//! win/loss tally with its sign test, and one line per case that changed.

use flowrun_core::eval::{EvalReport, Verdict};

use super::{Trend, common};

/// How much of a reason a line shows.
const REASON_CHARS: usize = 200;

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The comparison printed after `flowrun eval`; ANSI colours only when `color`. Text from
/// cases is put on one line with control characters (escape sequences included) replaced.
pub fn eval_terminal(report: &EvalReport, color: bool) -> String {
    let paint = |style: &str, text: &str| {
        if color && !style.is_empty() {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();

    let verdict_style = match report.verdict {
        Verdict::Better => format!("{BOLD}{GREEN}"),
        Verdict::Worse => format!("{BOLD}{RED}"),
        Verdict::NoSignificantChange => BOLD.to_owned(),
    };
    out.push_str(&paint(
        &verdict_style,
        &format!("flowrun eval: {}", report.verdict.as_str()),
    ));
    out.push('\n');
    let mut meta = format!(
        "draft vs baseline {} · {} cases · started {} UTC · wall time {}",
        common::one_line(&report.baseline),
        report.cases.len(),
        common::iso8601(report.started_at_ms).replace('T', " "),
        common::duration(report.wall_ms),
    );
    if let Some(id) = &report.id {
        meta.push_str(&format!(" · eval {}", common::one_line(id)));
    }
    out.push_str(&paint(DIM, &meta));
    out.push_str("\n\n");

    // Totals side by side: pad the plain text first, colour after, so columns line up.
    let metrics = super::metrics(report);
    let width = |f: &dyn Fn(&super::Metric) -> usize, title: &str| {
        metrics
            .iter()
            .map(f)
            .max()
            .unwrap_or(0)
            .max(title.chars().count())
    };
    let name_w = width(&|m| m.name.chars().count(), "");
    let base_w = width(&|m| m.baseline.chars().count(), "baseline");
    let draft_w = width(&|m| m.draft.chars().count(), "draft");
    out.push_str(&paint(
        DIM,
        &format!(
            "{:<name_w$}  {:<base_w$}  {:<draft_w$}  delta",
            "", "baseline", "draft"
        ),
    ));
    out.push('\n');
    for m in &metrics {
        let style = match m.trend {
            Trend::Better => GREEN,
            Trend::Worse => RED,
            Trend::Same | Trend::Unknown => "",
        };
        out.push_str(&format!(
            "{:<name_w$}  {:<base_w$}  {:<draft_w$}  {}\n",
            m.name,
            m.baseline,
            m.draft,
            paint(style, &m.delta),
        ));
    }
    out.push_str(&super::tally_line(report));
    out.push_str("\n\n");

    let labels = super::labels(report);
    let mut unchanged = 0usize;
    for (i, c) in report.cases.iter().enumerate() {
        if !super::changed(c) {
            unchanged += 1;
            continue;
        }
        let label = labels.get(i).map_or(c.case.as_str(), String::as_str);
        let (arrow, style) = if super::improved(c) {
            ("▲", GREEN)
        } else {
            ("▼", RED)
        };
        let mut line = format!(
            "{} {} › {}  {:.2} → {:.2}",
            paint(style, arrow),
            common::one_line(&c.file),
            paint(BOLD, &common::one_line(label)),
            c.baseline.score,
            c.draft.score,
        );
        match (c.baseline.pass, c.draft.pass) {
            (false, true) => line.push_str(" (now passes)"),
            (true, false) => line.push_str(" (now fails)"),
            _ => {}
        }
        let worse = super::worse_side(c);
        let mut notes = Vec::new();
        if let Some(reason) = super::first_failure(worse.of(c)) {
            notes.push(format!("{}: {reason}", worse.as_str()));
        }
        notes.extend(super::pairwise_line(c));
        for note in notes {
            line.push_str("  ");
            line.push_str(&paint(
                DIM,
                &common::excerpt(&common::one_line(&note), REASON_CHARS),
            ));
        }
        out.push_str(&line);
        out.push('\n');
    }
    let changed = report.cases.len() - unchanged;
    let summary = match (changed, unchanged) {
        (0, 0) => "no cases ran".to_owned(),
        (0, _) => format!("no case changed ({unchanged} unchanged)"),
        _ => format!("{changed} changed, {unchanged} unchanged"),
    };
    out.push_str(&paint(DIM, &summary));
    out.push('\n');
    out
}
