//! Step-by-step progress of a run on stderr, from the executor's events.

use flowrun_core::EventSink;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flowrun_core::event::{RunEvent, RunStatus};

use super::format_ms;
use crate::style::{self, DIM, GREEN, RED, YELLOW, paint};

/// Prints run progress to stderr.
pub struct Progress {
    pub color: bool,
    /// Set while streamed text on stdout has not ended its line; progress lines start on a
    /// fresh line then.
    pub mid_line: Arc<AtomicBool>,
}

impl EventSink for Progress {
    fn emit(&self, event: &RunEvent) {
        if self.mid_line.swap(false, Ordering::SeqCst) {
            println!();
        }
        let c = self.color;
        match event {
            RunEvent::RunStarted(e) => {
                eprintln!(
                    "{} {} {} {}",
                    paint(c, style::BOLD, "run"),
                    e.target_kind,
                    e.target,
                    paint(
                        c,
                        DIM,
                        &format!("· version {} · id {}", e.version, e.run_id)
                    )
                );
            }
            RunEvent::StepStarted(e) => eprintln!(
                "  {} {} {}",
                paint(c, DIM, "●"),
                e.step_id,
                paint(c, DIM, &format!("→ {}", e.model))
            ),
            RunEvent::CallAttempt(e) => {
                if let Some(f) = &e.error {
                    eprintln!(
                        "    {} attempt {} on {}/{} failed: {}",
                        paint(c, YELLOW, "↻"),
                        e.attempt,
                        e.provider,
                        e.model,
                        f.message
                    );
                }
            }
            RunEvent::AgentTurn(e) => {
                let calls: Vec<String> = e
                    .tool_results
                    .iter()
                    .map(|r| {
                        if r.is_error {
                            format!("{} (error)", r.name)
                        } else {
                            r.name.clone()
                        }
                    })
                    .collect();
                let what = if calls.is_empty() {
                    "answer".to_string()
                } else {
                    calls.join(", ")
                };
                eprintln!(
                    "    {} turn {} {}",
                    paint(c, DIM, "↳"),
                    e.turn,
                    paint(c, DIM, &format!("· {what} · {}", format_ms(e.latency_ms)))
                );
            }
            RunEvent::StepFinished(e) => match e.status {
                RunStatus::Succeeded => eprintln!(
                    "  {} {} {}",
                    paint(c, GREEN, "✓"),
                    e.step_id,
                    paint(
                        c,
                        DIM,
                        &format!(
                            "· {} · {} in / {} out tokens · {}",
                            format_ms(e.latency_ms),
                            e.usage.input_tokens,
                            e.usage.output_tokens,
                            e.cost
                        )
                    )
                ),
                _ => eprintln!(
                    "  {} {} {}",
                    paint(c, RED, "✗"),
                    e.step_id,
                    e.error.as_deref().unwrap_or("failed")
                ),
            },
            RunEvent::StepReused(e) => eprintln!(
                "  {} {} {}",
                paint(c, DIM, "↺"),
                e.step_id,
                paint(c, DIM, "· step reused from a previous attempt")
            ),
            RunEvent::RunFinished(e) => {
                let (mark, code) = match e.status {
                    RunStatus::Succeeded => ("✓", GREEN),
                    RunStatus::Cancelled => ("■", YELLOW),
                    _ => ("✗", RED),
                };
                eprintln!(
                    "{} {} in {} · {} in / {} out tokens · {}",
                    paint(c, code, mark),
                    e.status.as_str(),
                    format_ms(e.latency_ms),
                    e.usage.input_tokens,
                    e.usage.output_tokens,
                    e.cost
                );
            }
        }
    }
}
