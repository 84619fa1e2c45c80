//! Reporters for `flowrun eval`: pure functions that turn an [`EvalReport`] (the same cases
//! run on a draft and on a baseline) into text.
//!
//! - [`eval_json`]: the whole report as pretty JSON.
//! - [`eval_terminal`]: the verdict, totals side by side with deltas, and one line per case
//!   that changed, optionally with ANSI colours.
//! - [`eval_markdown`]: the same as a GitHub-flavoured comment, with a summary table and a
//!   table of cases with both outputs side by side.
//! - [`eval_html`]: one self-contained page with both sides of every case next to each other.
//!
//! The helpers here (which cases changed, the metric rows, signed deltas) are shared by them;
//! the generic ones (escaping, percent and duration formats, failure reasons) come from the
//! test-run reporters.

mod html;
mod json;
mod markdown;
mod terminal;

use flowrun_core::cost::format_usd;
use flowrun_core::eval::{EvalCase, EvalReport, Preference};
use flowrun_core::testing::result::CaseResult;

use super::common;

pub use html::eval_html;
pub use json::eval_json;
pub use markdown::eval_markdown;
pub use terminal::eval_terminal;

#[cfg(test)]
mod tests;

/// Whether a case changed between the versions: it favours a side, or it passes on one side
/// only.
fn changed(c: &EvalCase) -> bool {
    c.preference != Preference::Tie || c.draft.pass != c.baseline.pass
}

/// Whether a changed case went the draft's way: by preference, or (for a tie whose pass status
/// differs) by which side passes.
fn improved(c: &EvalCase) -> bool {
    match c.preference {
        Preference::Draft => true,
        Preference::Baseline => false,
        Preference::Tie => c.draft.pass && !c.baseline.pass,
    }
}

/// `▲` for a case that got better, `▼` worse, `=` unchanged.
fn arrow(c: &EvalCase) -> &'static str {
    if !changed(c) {
        "="
    } else if improved(c) {
        "▲"
    } else {
        "▼"
    }
}

/// Which side of a changed case is the worse one.
fn worse_side(c: &EvalCase) -> Side {
    if improved(c) {
        Side::Baseline
    } else {
        Side::Draft
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Baseline,
    Draft,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Draft => "draft",
        }
    }

    fn of(self, c: &EvalCase) -> &CaseResult {
        match self {
            Side::Baseline => &c.baseline,
            Side::Draft => &c.draft,
        }
    }
}

/// The first reason a result failed (run error or failed assertion, as `name: reason`).
fn first_failure(r: &CaseResult) -> Option<String> {
    common::failure_lines(r).into_iter().next()
}

/// The preference in words.
fn preference_str(p: Preference) -> &'static str {
    match p {
        Preference::Draft => "draft",
        Preference::Baseline => "baseline",
        Preference::Tie => "tie",
    }
}

/// Display names of the cases, parallel to `report.cases` (` #<repeat>` for repeated cases).
fn labels(report: &EvalReport) -> Vec<String> {
    common::labels_of(&report.cases.iter().map(|c| &c.draft).collect::<Vec<_>>())
}

/// The text a result produced: its output text, or its JSON output when it has no text.
fn output_text(r: &CaseResult) -> String {
    match (&r.output, r.output_text.is_empty()) {
        (Some(value), true) if !value.is_null() => super::html::pretty(value),
        _ => r.output_text.clone(),
    }
}

/// `draft wins 2 · baseline wins 1 · ties 1 · sign test p = 1`.
fn tally_line(report: &EvalReport) -> String {
    format!(
        "draft wins {} · baseline wins {} · ties {} · sign test p {}",
        report.draft_wins,
        report.baseline_wins,
        report.ties,
        p_value(report.p_value)
    )
}

/// `= 0.0625`, `= 1`, `< 0.0001`.
fn p_value(p: f64) -> String {
    if p < 0.0001 {
        "< 0.0001".to_owned()
    } else {
        format!("= {}", trim_zeros(&format!("{p:.4}")))
    }
}

/// `1.2500` → `1.25`, `1.0000` → `1`.
fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s.to_owned()
    }
}

/// Which way a metric moved, for colouring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trend {
    Better,
    Worse,
    Same,
    Unknown,
}

/// One row of the totals: the metric on both sides and the difference draft minus baseline.
struct Metric {
    name: &'static str,
    baseline: String,
    draft: String,
    delta: String,
    trend: Trend,
}

/// The trend of a difference: `higher_is_better` says which way is good.
fn trend(diff: f64, zero: bool, higher_is_better: bool) -> Trend {
    if zero {
        Trend::Same
    } else if (diff > 0.0) == higher_is_better {
        Trend::Better
    } else {
        Trend::Worse
    }
}

/// `+` or `-` and `magnitude`, or `±0` when `magnitude` is zero as shown.
fn signed(negative: bool, magnitude: &str, zero: bool) -> String {
    if zero {
        "±0".to_owned()
    } else if negative {
        format!("-{magnitude}")
    } else {
        format!("+{magnitude}")
    }
}

/// The totals of both sides with their deltas: pass rate, mean score, tokens, cost (unknown
/// stays unknown) and median latency.
fn metrics(report: &EvalReport) -> Vec<Metric> {
    let (b, d, delta) = (&report.baseline_summary, &report.draft, &report.deltas);

    let pp = trim_zeros(&format!("{:.1}", delta.pass_rate.abs() * 100.0));
    let pp_zero = pp == "0";
    let score = format!("{:.2}", delta.mean_score.abs());
    let score_zero = score == "0.00";
    let tokens = |diff: i64| Metric {
        name: "",
        baseline: String::new(),
        draft: String::new(),
        delta: signed(diff < 0, &diff.unsigned_abs().to_string(), diff == 0),
        trend: trend(diff as f64, diff == 0, false),
    };
    let (cost_delta, cost_trend) = match delta.cost_usd {
        Some(usd) => {
            let magnitude = format_usd(usd.abs());
            let zero = magnitude.chars().all(|c| c == '0' || c == '.');
            (
                signed(usd < 0.0, &format!("${magnitude}"), zero),
                trend(usd, zero, false),
            )
        }
        None => ("unknown".to_owned(), Trend::Unknown),
    };
    let latency = delta.latency_p50_ms;

    vec![
        Metric {
            name: "pass rate",
            baseline: format!("{} ({}/{})", common::percent(b.pass_rate), b.passed, b.runs),
            draft: format!("{} ({}/{})", common::percent(d.pass_rate), d.passed, d.runs),
            delta: format!("{} pp", signed(delta.pass_rate < 0.0, &pp, pp_zero)),
            trend: trend(delta.pass_rate, pp_zero, true),
        },
        Metric {
            name: "mean score",
            baseline: format!("{:.2}", b.mean_score),
            draft: format!("{:.2}", d.mean_score),
            delta: signed(delta.mean_score < 0.0, &score, score_zero),
            trend: trend(delta.mean_score, score_zero, true),
        },
        Metric {
            name: "input tokens",
            baseline: b.usage.input_tokens.to_string(),
            draft: d.usage.input_tokens.to_string(),
            ..tokens(delta.input_tokens)
        },
        Metric {
            name: "output tokens",
            baseline: b.usage.output_tokens.to_string(),
            draft: d.usage.output_tokens.to_string(),
            ..tokens(delta.output_tokens)
        },
        Metric {
            name: "cost",
            baseline: b.cost.to_string(),
            draft: d.cost.to_string(),
            delta: cost_delta,
            trend: cost_trend,
        },
        Metric {
            name: "latency p50",
            baseline: common::duration(b.latency_p50_ms),
            draft: common::duration(d.latency_p50_ms),
            delta: signed(
                latency < 0,
                &common::duration(latency.unsigned_abs()),
                latency == 0,
            ),
            trend: trend(latency as f64, latency == 0, false),
        },
    ]
}

/// `tokens 100 in / 20 out · cost $0.000150 · latency 120 ms` for one side of a case.
fn usage_line(r: &CaseResult) -> String {
    let mut line = format!(
        "tokens {} in / {} out · cost {} · latency {}",
        r.usage.input_tokens,
        r.usage.output_tokens,
        r.cost,
        common::duration(r.latency_ms)
    );
    if r.cached {
        line.push_str(" (cached)");
    }
    line
}

/// `judge: draft (consistent): reason`, or `judge: tie (order-dependent): reason`.
fn pairwise_line(c: &EvalCase) -> Option<String> {
    c.pairwise.as_ref().map(|p| {
        let consistency = if p.consistent {
            ""
        } else {
            " (order-dependent)"
        };
        if p.reason.trim().is_empty() {
            format!("judge: {}{consistency}", preference_str(p.preference))
        } else {
            format!(
                "judge: {}{consistency}: {}",
                preference_str(p.preference),
                p.reason
            )
        }
    })
}
