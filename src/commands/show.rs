//! `flowrun show`: one run in full: each step's rendered prompt, output, tokens, cost,
//! latency and every call attempt.

use std::path::Path;

use flowrun_core::agent::AgentTurn;
use flowrun_local::store::RunDetail;
use serde_json::Value;

use super::{format_cost, format_ms, format_time};
use crate::cli::ShowArgs;
use crate::exit::Exit;

pub fn show(start: &Path, args: &ShowArgs) -> Exit {
    let store = match super::load_project(start).and_then(|l| super::open_store(&l)) {
        Ok(s) => s,
        Err(e) => return e,
    };
    match store.run(&args.run_id) {
        Ok(detail) if args.json => {
            super::print_json(&detail);
            Exit::Success
        }
        Ok(detail) => {
            print!("{}", render(&detail));
            Exit::Success
        }
        Err(e) => {
            super::error(&e.to_string(), None);
            Exit::Usage
        }
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// The run as readable text.
pub fn render(d: &RunDetail) -> String {
    let r = &d.run;
    let mut out = format!("run {}\n", r.id);
    out += &format!(
        "  target   {}/{}  (version {})\n",
        r.target_kind, r.target, r.version
    );
    out += &format!("  status   {}\n", r.status);
    out += &format!("  started  {}\n", format_time(r.started_at));
    out += &format!(
        "  latency  {}\n",
        r.latency_ms.map(format_ms).unwrap_or_else(|| "-".into())
    );
    out += &format!("  tokens   {} in / {} out", r.input_tokens, r.output_tokens);
    if r.cached_tokens + r.reasoning_tokens > 0 {
        out += &format!(
            " ({} cached, {} reasoning)",
            r.cached_tokens, r.reasoning_tokens
        );
    }
    out += &format!(
        "\n  cost     {}\n",
        format_cost(r.cost_usd, &r.cost_unknown)
    );
    out += &format!("\ninput:\n{}", indent(&value_text(&r.input), "  "));
    for s in &d.steps {
        let what = match &s.agent_stop {
            Some(_) => format!("agent, instructions {}", s.prompt),
            None => format!("prompt {}", s.prompt),
        };
        out += &format!(
            "\nstep {} `{}` ({what}) on {}: {}\n",
            s.step_index + 1,
            s.step_id,
            s.model.as_deref().unwrap_or("-"),
            s.status
        );
        out += &format!(
            "  {} attempt(s) · {} · {} in / {} out tokens · {}\n",
            s.attempts,
            s.latency_ms.map(format_ms).unwrap_or_else(|| "-".into()),
            s.input_tokens,
            s.output_tokens,
            format_cost(s.cost_usd, &s.cost_unknown)
        );
        for m in s.messages.as_array().into_iter().flatten() {
            let role = m["role"].as_str().unwrap_or("?");
            out += &format!(
                "  [{role}]\n{}",
                indent(m["content"].as_str().unwrap_or(""), "    ")
            );
        }
        let turns: Vec<&AgentTurn> = d
            .turns
            .iter()
            .filter(|t| t.step_index == s.step_index)
            .collect();
        if let Some(stop) = &s.agent_stop {
            out += &format!("  [agent] {stop} after {} turn(s)\n", turns.len());
        }
        for t in turns {
            out += &render_turn(t);
        }
        if let Some(text) = &s.output_text {
            out += &format!("  [output]\n{}", indent(text, "    "));
        }
        if let Some(e) = &s.error {
            out += &format!("  [error] {e}\n");
        }
        for c in d.calls.iter().filter(|c| c.step_index == s.step_index) {
            let result = match (&c.error_kind, &c.error) {
                (Some(_), Some(msg)) => format!("failed: {msg}"),
                _ => format!(
                    "ok · {} in / {} out tokens",
                    c.input_tokens, c.output_tokens
                ),
            };
            let repair = if c.repair { " (repair)" } else { "" };
            out += &format!(
                "  attempt {}{repair} {}/{} · {} · {result}\n",
                c.attempt,
                c.provider,
                c.model,
                format_ms(c.latency_ms)
            );
        }
    }
    match (&r.output, &r.error) {
        (Some(v), _) => out += &format!("\noutput:\n{}", indent(&value_text(v), "  ")),
        (None, Some(e)) => out += &format!("\nerror: {e}\n"),
        _ => {}
    }
    out
}

/// One agent turn: the model's text, then each tool call with its arguments and result.
fn render_turn(t: &AgentTurn) -> String {
    let mut out = format!(
        "  turn {} on {} · {} · {} in / {} out tokens · {}\n",
        t.turn,
        t.model,
        format_ms(t.latency_ms),
        t.usage.input_tokens,
        t.usage.output_tokens,
        format_cost(
            t.cost.usd_if_known(),
            &t.cost.unknown_models.iter().cloned().collect::<Vec<_>>()
        )
    );
    if !t.assistant.content.is_empty() {
        out += &format!(
            "    [assistant]\n{}",
            indent(&t.assistant.content, "      ")
        );
    }
    for r in &t.tool_results {
        let args = serde_json::to_string(&r.arguments).unwrap_or_default();
        out += &format!("    [tool call] {} {args}\n", r.name);
        let label = if r.is_error {
            "[tool error]"
        } else {
            "[tool result]"
        };
        out += &format!("    {label}\n{}", indent(&r.output, "      "));
        if let Some(run) = &r.run_id {
            out += &format!("      (run {run})\n");
        }
    }
    for m in &t.feedback {
        out += &format!(
            "    [{}]\n{}",
            m.role.as_str(),
            indent(&m.content, "      ")
        );
    }
    out
}
