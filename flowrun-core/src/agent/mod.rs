//! Agents: what an agent step records (turns, tool results, why it stopped) and the tools it
//! can call.
//!
//! The loop itself is in `exec/agent.rs`; it sees tools only through the [`Tool`] trait:
//! prompt and flow tools (`project.rs`), HTTP tools (`http.rs`), the tools of MCP servers
//! (`mcp.rs`) and local commands (`command.rs`, through the injected [`ProcessHost`]).

mod command;
mod http;
pub mod mcp;
pub mod process;
mod project;
mod tool;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cost::Cost;
use crate::provider::{Message, Usage};

pub use command::CommandTool;
pub use http::HttpTool;
pub use mcp::{McpServers, McpTool};
pub use process::{ProcessHandle, ProcessHost, ProcessOutput, ProcessSpec, SpawnedProcess};
pub use project::ProjectTool;
pub use tool::{Tool, ToolContext, ToolOutcome};

/// Why an agent's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStop {
    /// The model gave a final answer (valid against the output schema, if any).
    Answered,
    /// `max_turns` model calls and the last one still asked for tools.
    MaxTurnsReached,
    /// `max_cost` was reached; no further call was made.
    BudgetExceeded,
    /// The agent's `timeout` elapsed.
    Timeout,
    /// A model call failed for good (after retries and fallbacks), or the run was cancelled.
    Failed,
    Cancelled,
}

impl AgentStop {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStop::Answered => "answered",
            AgentStop::MaxTurnsReached => "max_turns_reached",
            AgentStop::BudgetExceeded => "budget_exceeded",
            AgentStop::Timeout => "timeout",
            AgentStop::Failed => "failed",
            AgentStop::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AgentStop::Answered,
            AgentStop::MaxTurnsReached,
            AgentStop::BudgetExceeded,
            AgentStop::Timeout,
            AgentStop::Failed,
            AgentStop::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// One tool call of a turn and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The provider's id of the call.
    pub call_id: String,
    pub name: String,
    /// The arguments as the model gave them.
    pub arguments: Value,
    /// What was sent back to the model: the tool's output, or why the call failed.
    pub output: String,
    /// Whether `output` is an error (invalid arguments, unknown tool, a failing tool).
    pub is_error: bool,
    pub latency_ms: u64,
    /// The run a prompt or flow tool started (its own record in the history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// What that run cost (counts toward the agent's `max_cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

/// One completed turn: the model's reply and the results of the tools it called.
///
/// The conversation after turn N is the step's rendered messages (its `StepStarted` event)
/// followed, for turns 1..=N, by [`AgentTurn::messages`]: enough to rebuild it and continue
/// after the last committed turn without repeating its model call or tool calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTurn {
    pub run_id: String,
    pub step_index: u32,
    /// 1-based.
    pub turn: u32,
    /// `provider/model` that answered.
    pub model: String,
    /// The model's message: its text and the tool calls it asked for.
    pub assistant: Message,
    /// One per tool call, in the calls' order.
    #[serde(default)]
    pub tool_results: Vec<ToolResult>,
    /// Messages appended after the tool results (a request to fix an invalid final answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback: Vec<Message>,
    /// Usage and cost of this turn's model calls (retries included).
    pub usage: Usage,
    pub cost: Cost,
    pub started_at_ms: i64,
    pub latency_ms: u64,
}

impl AgentTurn {
    /// The messages this turn adds to the conversation.
    pub fn messages(&self) -> Vec<Message> {
        let mut out = vec![self.assistant.clone()];
        out.extend(
            self.tool_results
                .iter()
                .map(|r| Message::tool_result(&r.call_id, &r.output, r.is_error)),
        );
        out.extend(self.feedback.iter().cloned());
        out
    }

    /// Names of the tools called in this turn.
    pub fn tool_names(&self) -> impl Iterator<Item = &str> {
        self.assistant.tool_calls.iter().map(|c| c.name.as_str())
    }
}

/// An agent step's transcript, carried by its [`crate::event::StepRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub stop: AgentStop,
    pub turns: Vec<AgentTurn>,
}

impl Transcript {
    /// The transcript as flow templates see it (`steps.<id>.transcript`): one entry per turn
    /// with the text and each call's name, arguments and result.
    pub fn to_value(&self) -> Value {
        let turns: Vec<Value> = self
            .turns
            .iter()
            .map(|t| {
                let calls: Vec<Value> = t
                    .tool_results
                    .iter()
                    .map(|r| {
                        json!({"name": r.name, "arguments": r.arguments, "output": r.output, "is_error": r.is_error})
                    })
                    .collect();
                json!({"turn": t.turn, "text": t.assistant.content, "tool_calls": calls})
            })
            .collect();
        json!({"stop": self.stop.as_str(), "turns": turns})
    }
}
