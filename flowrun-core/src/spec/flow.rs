//! Flow files (`flows/<name>.yaml`): steps run in sequence, each feeding the next.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AgentSpec, InputSpec};

/// A sequence of steps with typed inputs and an output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Declared inputs, available to steps as `input.<name>`.
    #[serde(default)]
    pub input: IndexMap<String, InputSpec>,
    pub steps: Vec<StepSpec>,
    /// The flow's result: a template such as `"{{ steps.reply.output }}"`, or a mapping of
    /// templates. Defaults to the last step's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Spending limits of this flow's runs, on top of those of `flowrun.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<super::BudgetSpec>,
}

/// One step: runs a prompt, another flow, or an agent (exactly one of the three).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Name later steps use: `steps.<id>.output`.
    pub id: String,
    /// The prompt this step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The flow this step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// An agent: a model calling tools in a loop until it answers. Its output is the final
    /// answer; `steps.<id>.transcript` holds the turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Box<AgentSpec>>,
    /// Inputs of the prompt, flow, or agent's instructions prompt. A string is a template over `input` and `steps`; a string
    /// that is exactly one `{{ expression }}` keeps the expression's type (object, number…).
    #[serde(default, rename = "with")]
    pub with: IndexMap<String, Value>,
    /// Overrides the prompt's model for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}
