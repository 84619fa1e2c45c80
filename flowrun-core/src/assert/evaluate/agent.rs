//! Transcript checks of agent steps: `tool_called` (optionally with arguments),
//! `tool_not_called` and `turns`.

use serde_json::Value;

use super::{Verdict, show};
use crate::agent::AgentTurn;

pub(super) fn tool_called(
    turns: &[AgentTurn],
    name: &str,
    args: Option<&Value>,
    negate: bool,
) -> Verdict {
    if turns.is_empty() {
        return Verdict::error(
            "the run has no agent turns to check (is the target a flow with an agent step?)",
        );
    }
    let calls: Vec<&Value> = turns
        .iter()
        .flat_map(|t| t.assistant.tool_calls.iter())
        .filter(|c| c.name == name)
        .map(|c| &c.arguments)
        .collect();
    let matching = calls
        .iter()
        .filter(|a| args.is_none_or(|want| contains(a, want)))
        .count();
    let with = args
        .map(|a| format!(" with {}", show(a)))
        .unwrap_or_default();
    match (negate, matching) {
        (false, 0) if calls.is_empty() => Verdict::fail(format!(
            "`{name}` was not called (called: {})",
            called(turns)
        )),
        (false, 0) => Verdict::fail(format!(
            "`{name}` was called {} time(s), never{with}; arguments: {}",
            calls.len(),
            calls.iter().map(|a| show(a)).collect::<Vec<_>>().join(", ")
        )),
        (false, n) => Verdict::pass(format!("`{name}` was called{with} ({n} time(s))")),
        (true, 0) => Verdict::pass(format!("`{name}` was not called")),
        (true, n) => Verdict::fail(format!("`{name}` was called {n} time(s)")),
    }
}

pub(super) fn turns(turns: &[AgentTurn], min: Option<u32>, max: Option<u32>) -> Verdict {
    if turns.is_empty() {
        return Verdict::error(
            "the run has no agent turns to check (is the target a flow with an agent step?)",
        );
    }
    let n = turns.len() as u32;
    if let Some(max) = max
        && n > max
    {
        return Verdict::fail(format!("{n} turns, more than the maximum {max}"));
    }
    if let Some(min) = min
        && n < min
    {
        return Verdict::fail(format!("{n} turns, fewer than the minimum {min}"));
    }
    Verdict::pass(format!("{n} turns"))
}

/// Every tool called, in order, for reasons.
fn called(turns: &[AgentTurn]) -> String {
    let names: Vec<&str> = turns.iter().flat_map(AgentTurn::tool_names).collect();
    if names.is_empty() {
        "no tool".into()
    } else {
        names.join(", ")
    }
}

/// Whether `value` contains `want`: equal, or for objects every key of `want` with a value
/// `value` contains (recursively).
fn contains(value: &Value, want: &Value) -> bool {
    match (value, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| contains(h, w))),
        _ => value == want,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cost::Cost;
    use crate::provider::{Message, ToolCall, Usage};

    fn turn(calls: &[(&str, Value)]) -> AgentTurn {
        let calls = calls
            .iter()
            .enumerate()
            .map(|(i, (name, arguments))| ToolCall {
                id: format!("c{i}"),
                name: (*name).into(),
                arguments: arguments.clone(),
            })
            .collect();
        AgentTurn {
            run_id: "r".into(),
            step_index: 0,
            turn: 1,
            model: "m".into(),
            assistant: Message::assistant_calls("", calls),
            tool_results: Vec::new(),
            feedback: Vec::new(),
            usage: Usage::default(),
            cost: Cost::default(),
            started_at_ms: 0,
            latency_ms: 0,
        }
    }

    #[test]
    fn tool_calls_and_argument_subsets() {
        let turns = [
            turn(&[(
                "search",
                json!({"q": "rust", "opts": {"n": 3, "lang": "en"}}),
            )]),
            turn(&[]),
        ];
        assert_eq!(tool_called(&turns, "search", None, false).score, 1.0);
        let subset = json!({"opts": {"n": 3}});
        assert_eq!(
            tool_called(&turns, "search", Some(&subset), false).score,
            1.0
        );
        let other = json!({"q": "go"});
        let v = tool_called(&turns, "search", Some(&other), false);
        assert_eq!(v.score, 0.0);
        assert!(v.reason.contains("never with"), "{}", v.reason);
        let v = tool_called(&turns, "fetch", None, false);
        assert_eq!(v.reason, "`fetch` was not called (called: search)");
        assert_eq!(tool_called(&turns, "fetch", None, true).score, 1.0);
        assert_eq!(tool_called(&turns, "search", None, true).score, 0.0);
        assert!(tool_called(&[], "search", None, true).force_fail);
    }

    #[test]
    fn turn_bounds() {
        let turns = [turn(&[]), turn(&[]), turn(&[])];
        assert_eq!(turns_check(&turns, None, Some(3)), (1.0, "3 turns".into()));
        assert_eq!(
            turns_check(&turns, None, Some(2)),
            (0.0, "3 turns, more than the maximum 2".into())
        );
        assert_eq!(
            turns_check(&turns, Some(4), None),
            (0.0, "3 turns, fewer than the minimum 4".into())
        );
    }

    fn turns_check(t: &[AgentTurn], min: Option<u32>, max: Option<u32>) -> (f64, String) {
        let v = turns(t, min, max);
        (v.score, v.reason)
    }
}
