//! Prompt and flow tools: another prompt or flow of the project, run with the call's
//! arguments as its input, as a run of its own.

use async_trait::async_trait;
use serde_json::Value;

use super::{Tool, ToolContext, ToolOutcome};
use crate::RunStatus;
use crate::exec::{ExecError, RunRequest};
use crate::provider::ToolDef;

/// Runs `target` (`prompt/<name>` or `flow/<name>`).
pub struct ProjectTool {
    pub def: ToolDef,
    pub target: String,
}

#[async_trait]
impl Tool for ProjectTool {
    fn def(&self) -> &ToolDef {
        &self.def
    }

    async fn call(&self, args: &Value, cx: &ToolContext<'_>) -> ToolOutcome {
        let request =
            RunRequest::new(&self.target, args.clone()).with_cancel(cx.cancel.child_token());
        match cx.executor.run_nested(request, cx.depth + 1).await {
            Ok(outcome) => {
                let mut result = if outcome.status == RunStatus::Succeeded {
                    ToolOutcome::ok(outcome.output_text())
                } else {
                    ToolOutcome::error(outcome.error.clone().unwrap_or_else(|| {
                        format!("`{}` ended {}", self.target, outcome.status.as_str())
                    }))
                };
                result.run_id = Some(outcome.run_id);
                result.cost = Some(outcome.cost);
                result
            }
            Err(ExecError::InvalidInput(errors)) => ToolOutcome::error(format!(
                "invalid arguments: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Err(e) => ToolOutcome::error(e.to_string()),
        }
    }
}
