//! Prompt files (`prompts/<name>.yaml`): model, parameters, typed inputs, output format and
//! templated messages.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, InputSpec};
use crate::provider::{Params, Role};

/// One prompt: a single model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A model alias from `flowrun.yaml` or `provider/model`; defaults to `defaults.model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub params: Params,
    /// Declared inputs, usable as variables in the messages.
    #[serde(default)]
    pub input: IndexMap<String, InputSpec>,
    /// Text (the default) or JSON checked against a schema.
    #[serde(default)]
    pub output: OutputSpec,
    /// Chat messages; each is a minijinja template.
    pub messages: Vec<MessageSpec>,
    /// Overrides `defaults.timeout` for this prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Overrides `defaults.retries` for this prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// One templated message, written `- system: ...`, `- user: ...` or `- assistant: ...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageSpec {
    System(String),
    User(String),
    Assistant(String),
}

impl MessageSpec {
    pub fn role(&self) -> Role {
        match self {
            MessageSpec::System(_) => Role::System,
            MessageSpec::User(_) => Role::User,
            MessageSpec::Assistant(_) => Role::Assistant,
        }
    }

    pub fn template(&self) -> &str {
        match self {
            MessageSpec::System(t) | MessageSpec::User(t) | MessageSpec::Assistant(t) => t,
        }
    }
}

/// What a prompt returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    #[serde(default)]
    pub format: OutputFormat,
    /// JSON Schema the reply must match (JSON format only). Requested from providers that
    /// support structured output; always validated, with one repair attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// The format of a prompt's reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}
