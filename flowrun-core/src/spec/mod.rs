//! The file formats a user writes: `flowrun.yaml`, prompts, flows, test files.
//!
//! These types are the stable boundary of the project: they deserialize from YAML (through
//! [`crate::yaml`], which keeps positions) and derive the JSON Schemas that editors use.

pub mod agent;
pub mod config;
pub mod duration;
pub mod flow;
pub mod input;
pub mod prompt;
pub mod test_file;

pub use agent::{AgentSpec, HttpToolSpec, ToolSpec};
pub use config::{
    BudgetSpec, Defaults, MockRule, MockToolCall, ModelSpec, PriceSpec, ProjectConfig,
    ProviderKind, ProviderSpec,
};
pub use duration::Duration;
pub use flow::{FlowSpec, StepSpec};
pub use input::{InputSpec, InputType};
pub use prompt::{MessageSpec, OutputFormat, OutputSpec, PromptSpec};
pub use test_file::{CaseDefaults, CaseSpec, TestFileSpec};

/// The JSON Schema of each file kind, by the file name it is published under.
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "config.schema.json",
            schemars::schema_for!(ProjectConfig).to_value(),
        ),
        (
            "prompt.schema.json",
            schemars::schema_for!(PromptSpec).to_value(),
        ),
        (
            "flow.schema.json",
            schemars::schema_for!(FlowSpec).to_value(),
        ),
        (
            "test.schema.json",
            schemars::schema_for!(TestFileSpec).to_value(),
        ),
    ]
}
