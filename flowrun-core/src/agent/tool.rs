//! The `Tool` trait: what the agent loop needs from anything the model can call.

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cost::Cost;
use crate::exec::Executor;
use crate::provider::ToolDef;

/// What a tool call may use.
pub struct ToolContext<'a> {
    /// Runs prompt and flow tools (and gives access to the environment lookup).
    pub executor: &'a Executor,
    /// Cancelled when the run is, or when the agent stops (limit or timeout).
    pub cancel: CancellationToken,
    /// How many runs deep the calling agent is (bounds tools that run flows with agents).
    pub depth: usize,
}

/// What a tool call produced; an error goes back to the model like any output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolOutcome {
    pub output: String,
    pub is_error: bool,
    /// The run a prompt or flow tool started.
    pub run_id: Option<String>,
    /// What the tool spent on models (prompt and flow tools).
    pub cost: Option<Cost>,
}

impl ToolOutcome {
    pub fn ok(output: impl Into<String>) -> Self {
        ToolOutcome {
            output: output.into(),
            ..ToolOutcome::default()
        }
    }

    pub fn error(output: impl Into<String>) -> Self {
        ToolOutcome {
            output: output.into(),
            is_error: true,
            ..ToolOutcome::default()
        }
    }
}

/// Something the model can call. The loop validates the arguments against
/// [`ToolDef::parameters`] before [`Tool::call`], so implementations get valid arguments.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Name, description and parameters schema, as offered to the model.
    fn def(&self) -> &ToolDef;

    /// Runs the call. Failures are outcomes with `is_error`, never panics; secrets the tool
    /// used must not appear in the output.
    async fn call(&self, args: &Value, cx: &ToolContext<'_>) -> ToolOutcome;
}
