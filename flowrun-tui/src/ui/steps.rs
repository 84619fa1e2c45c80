//! The run behind one side of the detail view, as loaded from the history: each step with
//! its rendered messages, its output (flows), tokens, cost and latency, and every call
//! attempt with the provider's raw response, pretty-printed and cut to a readable length. An
//! agent step also shows its transcript: each turn's reply, tool calls and their results.

use flowrun_core::agent::AgentTurn;
use flowrun_core::cost::format_usd;
use flowrun_local::store::{CallRow, RunDetail, StepRow};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use serde_json::Value;

use super::{bold, clean, dim, fail_style, fmt_ms, pass_style, truncate};
use crate::app::RunLoad;

/// Lines of a raw response shown before it is cut.
const RAW_LINES: usize = 30;
/// Columns of one line of a raw response shown before it is cut.
const RAW_COLUMNS: usize = 160;
/// Lines of one message shown before it is cut.
const MESSAGE_LINES: usize = 200;
/// Width of the labels (`system`, `response`) before their text.
const LABEL: usize = 10;

/// The lines of `load` (the side's run), appended to `lines`.
pub(super) fn lines(load: &RunLoad, lines: &mut Vec<Line<'_>>) {
    match load {
        // The side has no run: the detail view says why already.
        RunLoad::None => {}
        RunLoad::Loading(_) => lines.push(Line::styled("loading…", dim())),
        RunLoad::Failed { message, .. } => lines.push(Line::from(vec![
            Span::styled("✗ ", fail_style()),
            Span::styled(clean(message).into_owned(), dim()),
        ])),
        RunLoad::Loaded(detail) => run(detail, lines),
    }
}

fn run(detail: &RunDetail, lines: &mut Vec<Line<'_>>) {
    if detail.steps.is_empty() {
        lines.push(Line::styled("(no steps recorded)", dim()));
        return;
    }
    let count = detail.steps.len();
    for step in &detail.steps {
        step_lines(detail, step, count, lines);
    }
}

fn step_lines(detail: &RunDetail, step: &StepRow, count: usize, lines: &mut Vec<Line<'_>>) {
    let succeeded = step.status == "succeeded";
    let mut head = vec![
        Span::styled(
            format!("step {}/{count} ", step.step_index.saturating_add(1)),
            bold(),
        ),
        Span::styled(clean(&step.step_id).into_owned(), bold()),
    ];
    if step.prompt != step.step_id {
        head.push(Span::styled(
            format!(" · prompt {}", clean(&step.prompt)),
            dim(),
        ));
    }
    if let Some(model) = &step.model {
        head.push(Span::styled(format!(" · {}", clean(model)), dim()));
    }
    head.push(Span::raw(" · "));
    head.push(Span::styled(
        step.status.clone(),
        if succeeded {
            pass_style()
        } else {
            fail_style()
        },
    ));
    lines.push(Line::from(head));
    let attempts = if step.attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{} attempts", step.attempts)
    };
    lines.push(Line::from(vec![
        Span::raw("  "),
        Span::styled(
            format!(
                "{} · {}→{} tok · {} · {attempts}",
                step.latency_ms.map_or_else(|| "–".into(), fmt_ms),
                step.input_tokens,
                step.output_tokens,
                cost(step.cost_usd, &step.cost_unknown),
            ),
            dim(),
        ),
    ]));
    for message in step.messages.as_array().into_iter().flatten() {
        let role = message["role"].as_str().unwrap_or("?");
        let content = match &message["content"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        labelled(
            role,
            Style::new().fg(Color::Cyan),
            &content,
            MESSAGE_LINES,
            usize::MAX,
            lines,
        );
    }
    for turn in detail
        .turns
        .iter()
        .filter(|t| t.step_index == step.step_index)
    {
        turn_lines(turn, lines);
    }
    // A one-step run's output is the case's, shown above already.
    if count > 1 {
        let output = step
            .output_text
            .clone()
            .or_else(|| step.output.as_ref().map(Value::to_string));
        if let Some(output) = output {
            labelled("output", bold(), &output, MESSAGE_LINES, usize::MAX, lines);
        }
    }
    if let Some(error) = &step.error {
        labelled(
            "error",
            fail_style(),
            error,
            MESSAGE_LINES,
            usize::MAX,
            lines,
        );
    }
    for call in detail
        .calls
        .iter()
        .filter(|c| c.step_index == step.step_index)
    {
        call_lines(&detail.run.id, call, lines);
    }
}

/// One turn of an agent step: what the model said, each tool it called with the arguments,
/// and what went back to it.
fn turn_lines(turn: &AgentTurn, lines: &mut Vec<Line<'_>>) {
    lines.push(Line::from(vec![
        Span::raw("  "),
        Span::styled(format!("turn {}", turn.turn), bold()),
        Span::styled(
            format!(
                " · {} · {} · {}→{} tok",
                clean(&turn.model),
                fmt_ms(turn.latency_ms),
                turn.usage.input_tokens,
                turn.usage.output_tokens
            ),
            dim(),
        ),
    ]));
    if !turn.assistant.content.is_empty() {
        labelled(
            "assistant",
            Style::new().fg(Color::Cyan),
            &turn.assistant.content,
            MESSAGE_LINES,
            usize::MAX,
            lines,
        );
    }
    for result in &turn.tool_results {
        labelled(
            "tool",
            Style::new().fg(Color::Magenta),
            &format!("{}({})", result.name, result.arguments),
            MESSAGE_LINES,
            usize::MAX,
            lines,
        );
        labelled(
            if result.is_error { "error" } else { "result" },
            if result.is_error { fail_style() } else { dim() },
            &result.output,
            MESSAGE_LINES,
            usize::MAX,
            lines,
        );
    }
}

fn call_lines(run_id: &str, call: &CallRow, lines: &mut Vec<Line<'_>>) {
    let mut spans = vec![
        Span::raw("  "),
        Span::styled(
            format!("{:<LABEL$}", format!("attempt {}", call.attempt)),
            dim(),
        ),
        Span::raw(clean(&format!("{}/{}", call.provider, call.model)).into_owned()),
        Span::styled(format!(" · {}", fmt_ms(call.latency_ms)), dim()),
    ];
    match &call.error {
        Some(error) => spans.push(Span::styled(
            format!(" · failed: {}", clean(error)),
            fail_style(),
        )),
        None => spans.push(Span::styled(
            format!(" · ok · {}→{} tok", call.input_tokens, call.output_tokens),
            dim(),
        )),
    }
    if call.repair {
        spans.push(Span::styled(" · repair", dim()));
    }
    if call.cached {
        spans.push(Span::styled(" · ", dim()));
        spans.push(super::cached());
    }
    lines.push(Line::from(spans));
    let Some(raw) = &call.raw_response else {
        return;
    };
    let pretty = serde_json::to_string_pretty(raw).unwrap_or_else(|_| raw.to_string());
    let shown = labelled("response", dim(), &pretty, RAW_LINES, RAW_COLUMNS, lines);
    if shown < pretty.lines().count() {
        lines.push(Line::styled(
            format!(
                "{}(all of it: flowrun show {run_id} --json)",
                " ".repeat(LABEL + 2)
            ),
            dim(),
        ));
    }
}

/// `text` under a label (`  user      Hello`), continuation lines indented to the text;
/// at most `max_lines` lines of at most `max_columns` columns. Returns how many lines of
/// `text` were shown.
fn labelled(
    label: &str,
    style: Style,
    text: &str,
    max_lines: usize,
    max_columns: usize,
    lines: &mut Vec<Line<'_>>,
) -> usize {
    let text = clean(text);
    let total = text.lines().count();
    let indent = " ".repeat(LABEL + 2);
    let label = format!("  {:<LABEL$}", truncate(&clean(label), LABEL - 1));
    if total == 0 {
        lines.push(Line::from(vec![
            Span::styled(label, style),
            Span::styled("(empty)", dim()),
        ]));
        return 0;
    }
    for (i, line) in text.lines().take(max_lines).enumerate() {
        let lead = if i == 0 {
            Span::styled(label.clone(), style)
        } else {
            Span::raw(indent.clone())
        };
        lines.push(Line::from(vec![
            lead,
            Span::raw(truncate(line, max_columns).into_owned()),
        ]));
    }
    if total > max_lines {
        lines.push(Line::styled(
            format!("{indent}… {} more lines", total - max_lines),
            dim(),
        ));
    }
    total.min(max_lines)
}

/// A step's cost: dollars, `cost unknown` when a model had no price, `–` before it ends.
fn cost(usd: Option<f64>, unknown: &[String]) -> String {
    if !unknown.is_empty() {
        return format!("cost unknown (no price for {})", unknown.join(", "));
    }
    usd.map_or_else(|| "–".into(), |v| format!("${}", format_usd(v)))
}
