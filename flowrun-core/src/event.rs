//! What the executor reports while it runs, and the trait callers implement to receive it.
//!
//! The CLI prints progress from these events and flowrun-local records them in SQLite; the
//! executor itself keeps no history.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{AgentTurn, Transcript};
use crate::cost::Cost;
use crate::provider::{Message, Usage};

/// How a run or a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Stopped before a model call that could have crossed a `budget:` limit.
    BudgetExceeded,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::BudgetExceeded => "budget_exceeded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::BudgetExceeded,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A run has begun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    pub run_id: String,
    /// `prompt` or `flow`.
    pub target_kind: String,
    pub target: String,
    /// Content hash of the files the run depends on.
    pub version: String,
    pub input: Value,
    pub started_at_ms: i64,
}

/// A step has rendered its messages and is about to call a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStart {
    pub run_id: String,
    pub step_index: u32,
    pub step_id: String,
    pub prompt: String,
    pub version: String,
    /// `provider/model` of the first model in the chain.
    pub model: String,
    pub messages: Vec<Message>,
    pub started_at_ms: i64,
}

/// Why one call attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFailure {
    /// Machine-readable kind: `rate_limited`, `server`, `timeout`, …
    pub kind: String,
    pub message: String,
}

/// One attempt to call a model, successful or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub run_id: String,
    pub step_index: u32,
    /// 1-based, counting every attempt of the step (retries, fallbacks, repair).
    pub attempt: u32,
    pub provider: String,
    pub model: String,
    pub started_at_ms: i64,
    pub latency_ms: u64,
    pub usage: Usage,
    pub cost: Cost,
    pub error: Option<CallFailure>,
    /// The provider's response body (successful attempts only).
    pub raw_response: Option<Value>,
    /// Whether this call asked the model to repair an invalid structured output.
    pub repair: bool,
    /// Whether the reply came from the response cache (or a replayed cassette) instead of the
    /// provider: the provider was not called, the cost is zero, `usage` is the original call's.
    #[serde(default)]
    pub cached: bool,
}

/// A step is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    pub step_index: u32,
    pub step_id: String,
    pub prompt: String,
    pub status: RunStatus,
    /// The reply text as the model wrote it.
    pub output_text: Option<String>,
    /// The step's output value: the text, or the parsed JSON.
    pub output: Option<Value>,
    /// `provider/model` that produced the output.
    pub model: Option<String>,
    pub usage: Usage,
    pub cost: Cost,
    pub latency_ms: u64,
    pub attempts: u32,
    pub error: Option<String>,
    /// Whether every successful call of the step was answered from the cache (false when no
    /// call succeeded).
    #[serde(default)]
    pub cached: bool,
    /// Agent steps: why the loop ended and every turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Transcript>,
}

/// A run is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    pub run_id: String,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub usage: Usage,
    pub cost: Cost,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub finished_at_ms: i64,
}

/// Everything the executor reports, in order.
///
/// A run is `RunStarted`, then for each step either `StepStarted`, its `CallAttempt`s and
/// `StepFinished`, or (when resuming) `StepReused`, then `RunFinished`. An agent step emits
/// an `AgentTurn` after each turn's calls (model and tools), before its `StepFinished`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run has begun. A resumed run ([`crate::RunRequest::resuming`]) emits it again
    /// under the same `run_id`, so sinks must treat it as an upsert: a run they may already
    /// have recorded is running again (keep its original start time).
    RunStarted(RunStart),
    StepStarted(StepStart),
    CallAttempt(CallRecord),
    /// A turn of an agent step is complete: the model's reply and the tool results, emitted
    /// as soon as they are in (see [`AgentTurn`] for rebuilding the conversation from them).
    AgentTurn(AgentTurn),
    StepFinished(StepRecord),
    /// A resumed run took this step's result from a previous attempt instead of calling a
    /// model: the record is the one that attempt finished with (its usage, cost, latency and
    /// attempts describe that work, and count toward this run's totals), under this run's id.
    /// No `StepStarted` or `CallAttempt` precedes it. Sinks should upsert the step: they may
    /// hold it from the previous attempt already, or not at all.
    StepReused(StepRecord),
    RunFinished(RunEnd),
}

/// Receives run events. Implementations must be quick; they are called inline.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &RunEvent);
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSink;

impl EventSink for NoSink {
    fn emit(&self, _: &RunEvent) {}
}

/// Sends every event to several sinks in order.
pub struct FanOut(pub Vec<std::sync::Arc<dyn EventSink>>);

impl EventSink for FanOut {
    fn emit(&self, event: &RunEvent) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
