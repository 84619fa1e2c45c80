//! Scoring an output against assertions, and a case's score from its assertions' results.
//!
//! Each assertion gives a score in 0..1 and a short lowercase reason saying what was expected
//! and what was found; it passes when its score reaches its threshold. Checks that call out
//! (`llm_judge`, `command`) run concurrently; results keep the assertions' order.
//!
//! Some outcomes fail an assertion whatever its threshold (even `threshold: 0`): a failed
//! run, a template that does not render, a missing judge or command runner, a judge or
//! command that could not run, and an unknown cost under `cost_max`.
//!
//! Negated checks are the logical inverse of their positive form: `not_contains: [a, b]`
//! passes when neither appears, and with `all: true` it passes unless both appear.

mod agent;
mod external;
mod json;
mod template;
#[cfg(test)]
mod tests;
mod text;

use futures::future::join_all;
use serde_json::Value;

use super::{AssertionResult, AssertionSpec, Check, CommandRunner, Judge};
use crate::cost::Cost;
use template::Templates;

/// What a case produced, as assertions see it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The output value (a string for text prompts, JSON for structured ones); `None` when
    /// the run failed.
    pub output: Option<&'a Value>,
    /// The output as text (JSON serialized compactly when it is not a string).
    pub text: &'a str,
    pub latency_ms: u64,
    pub cost: &'a Cost,
    /// The case's input values and `vars`, for templated assertion values.
    pub input: &'a Value,
    pub vars: &'a Value,
    /// Why the run failed, if it did.
    pub error: Option<&'a str>,
    /// The turns of the run's agent steps (empty when it has none).
    pub agent_turns: &'a [crate::agent::AgentTurn],
}

/// What assertions may call out to.
#[derive(Clone, Copy, Default)]
pub struct Hooks<'a> {
    pub judge: Option<&'a dyn Judge>,
    pub command: Option<&'a dyn CommandRunner>,
}

/// Scores `observed` against every assertion, in order.
pub async fn evaluate(
    assertions: &[AssertionSpec],
    observed: &Observed<'_>,
    hooks: Hooks<'_>,
) -> Vec<AssertionResult> {
    join_all(
        assertions
            .iter()
            .map(|spec| evaluate_one(spec, observed, hooks)),
    )
    .await
}

/// A case's score and verdict from its assertions' results.
///
/// The score is the mean of the scores weighted by `weight` (1.0 when there are no
/// assertions or every weight is zero). Without a case `threshold` the case passes when every
/// assertion passes; with one, when the score reaches it and no required assertion failed.
pub fn case_score(results: &[AssertionResult], threshold: Option<f64>) -> (f64, bool) {
    let weight = |r: &AssertionResult| {
        if r.weight.is_finite() && r.weight > 0.0 {
            r.weight
        } else {
            0.0
        }
    };
    let total: f64 = results.iter().map(weight).sum();
    let score = if total > 0.0 {
        let sum: f64 = results
            .iter()
            .map(|r| weight(r) * clamp_score(r.score))
            .sum();
        clamp_score(sum / total)
    } else {
        1.0
    };
    let pass = match threshold {
        None => results.iter().all(|r| r.pass),
        Some(t) => score >= t && results.iter().all(|r| r.pass || !r.required),
    };
    (score, pass)
}

async fn evaluate_one(
    spec: &AssertionSpec,
    observed: &Observed<'_>,
    hooks: Hooks<'_>,
) -> AssertionResult {
    let verdict = match observed.output {
        // Transcript checks hold for runs an agent limit ended, too.
        None if is_transcript_check(&spec.check) && !observed.agent_turns.is_empty() => {
            check(&spec.check, &serde_json::Value::Null, observed, hooks).await
        }
        None => {
            let error = observed
                .error
                .filter(|e| !e.trim().is_empty())
                .unwrap_or("no output");
            Verdict::error(format!("the run failed: {error}"))
        }
        Some(output) => check(&spec.check, output, observed, hooks).await,
    };
    let score = clamp_score(verdict.score);
    AssertionResult {
        name: spec.check.name().into(),
        score,
        pass: !verdict.force_fail && score >= spec.threshold,
        reason: verdict.reason,
        weight: spec.weight,
        required: spec.required,
    }
}

async fn check(
    check: &Check,
    output: &Value,
    observed: &Observed<'_>,
    hooks: Hooks<'_>,
) -> Verdict {
    let templates = Templates::new(observed.input, observed.vars);
    let text = observed.text;
    match check {
        Check::Equals(expected, negate) => {
            text::equals(&templates, expected, output, text, *negate)
        }
        Check::Contains {
            values,
            all,
            ignore_case,
            negate,
        } => text::contains(
            &templates,
            values,
            text,
            text::ContainsMode {
                all: *all,
                ignore_case: *ignore_case,
                negate: *negate,
            },
        ),
        Check::Regex(pattern, negate) => text::regex(&templates, pattern, text, *negate),
        Check::StartsWith(prefix, negate) => text::starts_with(&templates, prefix, text, *negate),
        Check::Length { min, max } => text::length(text, *min, *max),
        Check::IsJson(negate) => json::is_json(output, *negate),
        Check::JsonSchema(schema) => json::schema(schema, output),
        Check::JsonPath { path, op } => json::path(&templates, path, op, output),
        Check::LatencyMax(max) => latency(observed.latency_ms, *max),
        Check::CostMax(max) => cost(observed.cost, *max),
        Check::LlmJudge { rubric, model } => {
            external::judge(
                hooks.judge,
                &templates,
                rubric,
                model.as_deref(),
                text,
                observed.input,
            )
            .await
        }
        Check::Command(command) => {
            external::command(hooks.command, &templates, command, text).await
        }
        Check::ToolCalled { name, args, negate } => {
            agent::tool_called(observed.agent_turns, name, args.as_ref(), *negate)
        }
        Check::Turns { min, max } => agent::turns(observed.agent_turns, *min, *max),
    }
}

fn is_transcript_check(check: &Check) -> bool {
    matches!(check, Check::ToolCalled { .. } | Check::Turns { .. })
}

fn latency(latency_ms: u64, max: std::time::Duration) -> Verdict {
    let max_ms = max.as_secs_f64() * 1000.0;
    let shown = format_ms(max_ms);
    if (latency_ms as f64) <= max_ms {
        Verdict::pass(format!("latency {latency_ms} ms is within {shown}"))
    } else {
        Verdict::fail(format!(
            "latency {latency_ms} ms exceeds the maximum {shown}"
        ))
    }
}

fn format_ms(ms: f64) -> String {
    if ms.fract() == 0.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms} ms")
    }
}

fn cost(cost: &Cost, max: f64) -> Verdict {
    let Some(usd) = cost.usd_if_known() else {
        let models: Vec<&str> = cost.unknown_models.iter().map(String::as_str).collect();
        return Verdict::error(format!(
            "the cost is unknown: no price for {}; add it under `pricing:` in flowrun.yaml",
            models.join(", ")
        ));
    };
    let (spent, limit) = (crate::cost::format_usd(usd), crate::cost::format_usd(max));
    if usd <= max {
        Verdict::pass(format!("cost ${spent} is within ${limit}"))
    } else {
        Verdict::fail(format!("cost ${spent} exceeds the maximum ${limit}"))
    }
}

/// 0..1, NaN as 0.
fn clamp_score(score: f64) -> f64 {
    if score.is_nan() {
        0.0
    } else {
        score.clamp(0.0, 1.0)
    }
}

/// One assertion's outcome before its threshold is applied.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    score: f64,
    reason: String,
    /// Fails the assertion whatever its threshold (the check could not be carried out).
    force_fail: bool,
}

impl Verdict {
    fn pass(reason: impl Into<String>) -> Self {
        Verdict {
            score: 1.0,
            reason: reason.into(),
            force_fail: false,
        }
    }

    fn fail(reason: impl Into<String>) -> Self {
        Verdict {
            score: 0.0,
            reason: reason.into(),
            force_fail: false,
        }
    }

    fn scored(score: f64, reason: impl Into<String>) -> Self {
        Verdict {
            score: clamp_score(score),
            reason: reason.into(),
            force_fail: false,
        }
    }

    fn error(reason: impl Into<String>) -> Self {
        Verdict {
            score: 0.0,
            reason: reason.into(),
            force_fail: true,
        }
    }
}

/// How much of an output or value a reason quotes, in characters.
const QUOTE_CHARS: usize = 80;

/// `s` in double quotes, escaped onto one line, cut to [`QUOTE_CHARS`] with an ellipsis.
fn quote(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(QUOTE_CHARS).collect();
    let quoted = format!("{head:?}");
    match (chars.next(), quoted.strip_suffix('"')) {
        (Some(_), Some(open)) => format!("{open}…\""),
        _ => quoted,
    }
}

/// A JSON value for a reason: strings quoted, anything else compact JSON, both cut short.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        other => cut(&other.to_string()),
    }
}

/// `s` cut to [`QUOTE_CHARS`] characters with an ellipsis, unquoted.
fn cut(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}
