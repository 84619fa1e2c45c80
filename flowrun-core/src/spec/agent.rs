//! Agent steps of flows (`agent:` in a step): a model that calls tools in a loop until it
//! answers, with limits on turns, cost and time.
//!
//! ```yaml
//! steps:
//!   - id: research
//!     agent:
//!       instructions: researcher        # a prompt: its messages open the conversation
//!       tools:
//!         - { name: lookup_order, flow: order_lookup }
//!         - name: weather
//!           description: Current weather of a city
//!           parameters: { type: object, properties: { city: { type: string } }, required: [city] }
//!           http: { url: "https://wttr.example/{{ args.city | urlencode }}", response: /current }
//!       max_turns: 6
//!       max_cost: 0.05
//!     with: { question: "{{ input.question }}" }
//! ```

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Duration, InputSpec};

/// The agent of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// The prompt whose rendered messages open the conversation (system instructions and the
    /// task); the step's `with` gives its inputs, and its model is the agent's unless `model`
    /// is set.
    pub instructions: String,
    /// Overrides the instructions prompt's model: an alias or `provider/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the model may call.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// Model calls allowed; the agent stops with `max_turns_reached` when the last one still
    /// asks for tools.
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    /// Spending limit in USD over the agent's model calls; once reached no further call is
    /// made and the agent stops with `budget_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    /// Time allowed for the whole loop (model calls and tools); then it stops with `timeout`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Tool calls of one turn run at once, up to this many; `1` also asks the model for one
    /// call per turn.
    #[serde(default = "default_parallel")]
    pub parallel_tool_calls: u32,
    /// `auto` (default), `required`, `none`, or a tool's name, for the first turn; later turns
    /// are `auto`, so a forced call cannot loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
    /// The final answer: text (default) or JSON matching `schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AgentOutput>,
}

/// The shape of an agent's final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentOutput {
    /// JSON Schema the final answer must match (it is then parsed as JSON).
    pub schema: Value,
}

fn default_max_turns() -> u32 {
    10
}
fn default_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_parallel() -> u32 {
    4
}

/// One tool: exactly one of `prompt`, `flow`, `http` and `command`; or the tools of an MCP
/// server (`mcp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// The name the model calls it by (letters, digits, `_` and `-`). Required, except for
    /// `mcp` entries, whose tools keep the names the server gives them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What it does, for the model; defaults to the prompt's or flow's `description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments; defaults to the prompt's or flow's inputs. Arguments are
    /// validated against it before the tool runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Runs this prompt of the project with the arguments as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Runs this flow of the project with the arguments as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Calls an HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpToolSpec>,
    /// Offers the tools of this MCP server (a name under `mcp_servers` in `flowrun.yaml`),
    /// each with its own name, description and parameters schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<String>,
    /// With `mcp`: only these of the server's tools (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Runs a local program: `[program, arg, ...]`, each a template over `args`; the
    /// arguments also arrive as JSON on its standard input, and its standard output is the
    /// result. Needs `allow_command_tools: true` in `flowrun.yaml`; never runs on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// With `command` or `mcp`: time allowed for one call (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl ToolSpec {
    /// Which target keys are set, for "exactly one of" checks.
    pub fn targets(&self) -> Vec<&'static str> {
        [
            ("prompt", self.prompt.is_some()),
            ("flow", self.flow.is_some()),
            ("http", self.http.is_some()),
            ("mcp", self.mcp.is_some()),
            ("command", self.command.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// Time allowed for one call of a command or MCP tool when the tool does not say.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP request made with the arguments; templates read them as `args.<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpToolSpec {
    #[serde(default)]
    pub method: HttpMethod,
    /// URL template, e.g. `https://api.example.com/orders/{{ args.id | urlencode }}`.
    pub url: String,
    /// Header values: a template, or `{ env: NAME }` (optionally with a `prefix` such as
    /// `"Bearer "`) for a secret read from the environment, never logged or stored.
    #[serde(default)]
    pub headers: IndexMap<String, HeaderValue>,
    /// JSON body: a value whose strings are templates (a string that is exactly one
    /// `{{ expression }}` keeps the expression's type). Omit for no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// A JSON Pointer (`/current/summary`) selecting the part of a JSON response the model
    /// gets; the whole body otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Time allowed for the request.
    #[serde(default = "default_http_timeout")]
    pub timeout: Duration,
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(30)
}

/// HTTP methods of HTTP tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A header value: a template over `args`, or a secret from the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum HeaderValue {
    Template(String),
    Env(EnvHeader),
}

/// A header whose value is an environment variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvHeader {
    /// The variable's name (the value is never written to files, logs or the history).
    pub env: String,
    /// Text before the value, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// The JSON Schema of a prompt's or flow's declared inputs, as tool parameters.
pub fn inputs_schema(inputs: &IndexMap<String, InputSpec>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, spec) in inputs {
        let mut prop = json!({ "type": spec.ty().as_str() });
        if let InputSpec::Full(detail) = spec {
            if let Some(d) = &detail.description {
                prop["description"] = Value::String(d.clone());
            }
            if let Some(allowed) = &detail.allowed {
                prop["enum"] = Value::Array(allowed.clone());
            }
        }
        if spec.default_value().is_none() {
            required.push(Value::String(name.clone()));
        }
        properties.insert(name.clone(), prop);
    }
    json!({ "type": "object", "properties": properties, "required": required })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::InputType;

    #[test]
    fn inputs_become_a_parameters_schema() {
        let inputs: IndexMap<String, InputSpec> = serde_json::from_value(json!({
            "order_id": "string",
            "limit": {"type": "integer", "default": 5, "description": "at most"},
        }))
        .unwrap();
        assert_eq!(inputs["order_id"].ty(), InputType::String);
        assert_eq!(
            inputs_schema(&inputs),
            json!({"type": "object", "properties": {
                "order_id": {"type": "string"},
                "limit": {"type": "integer", "description": "at most"},
            }, "required": ["order_id"]})
        );
    }
}
