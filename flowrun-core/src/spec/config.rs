//! `flowrun.yaml`: providers, model aliases with fallbacks, defaults and price overrides.

use std::num::NonZeroU32;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;
use crate::provider::Params;

/// The project file, `flowrun.yaml`, at the project root.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// A name for the project, shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// LLM APIs by the name prompts and models refer to them with.
    #[serde(default)]
    pub providers: IndexMap<String, ProviderSpec>,
    /// Model aliases: what prompts name in `model:`. Swap every prompt's model by editing one.
    #[serde(default)]
    pub models: IndexMap<String, ModelSpec>,
    #[serde(default)]
    pub defaults: Defaults,
    /// Price overrides in USD per million tokens, by model name (takes precedence over the
    /// shipped price table).
    #[serde(default)]
    pub pricing: IndexMap<String, PriceSpec>,
    /// A price table in LiteLLM's `model_prices_and_context_window.json` format, relative to the
    /// project root, used instead of the one flowrun ships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_file: Option<String>,
    /// Spending limits for every run of the project (a flow may set stricter ones of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// OpenTelemetry export (on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
    #[serde(default, skip_serializing_if = "Telemetry::is_default")]
    pub telemetry: Telemetry,
    /// What `flowrun sync` may push to a server.
    #[serde(default, skip_serializing_if = "SyncSpec::is_default")]
    pub sync: SyncSpec,
    /// MCP servers (Model Context Protocol) whose tools agents may call, by name: a local
    /// program spoken to over stdio (`command`) or a streamable HTTP endpoint (`url`).
    /// Started on first use, once per run of `flowrun`, and stopped at its end.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub mcp_servers: IndexMap<String, McpServerSpec>,
    /// Allows agents' `command` tools, which run local programs. Off by default; the server
    /// never runs them whatever this says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_command_tools: bool,
}

/// `telemetry:` in `flowrun.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// Put rendered prompts and completions on the exported spans. Off by default: spans
    /// then carry names, models, tokens and costs only.
    #[serde(default)]
    pub capture_content: bool,
}

impl Telemetry {
    fn is_default(&self) -> bool {
        *self == Telemetry::default()
    }
}

/// `sync:` in `flowrun.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    /// Push rendered prompts, inputs and outputs with the runs. Off by default: the server
    /// then gets names, versions, models, statuses, tokens, costs and latencies only.
    #[serde(default)]
    pub content: bool,
}

impl SyncSpec {
    fn is_default(&self) -> bool {
        *self == SyncSpec::default()
    }
}

/// Spending limits. A run stops before the model call that could cross one, with the status
/// `budget_exceeded` and an error naming the limit. A call's worst case is its rendered
/// prompt's estimated tokens (characters / 4) plus its `max_tokens` (or `max_tokens_per_call`,
/// else 4096) at the model's price.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Most USD one run may spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_per_run: Option<f64>,
    /// Most USD spent per UTC day: by the whole project locally (by the environment on the
    /// server) in `flowrun.yaml`, by the flow's runs in a flow file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_per_day: Option<f64>,
    /// Most tokens in one call: the rendered prompt (estimated) may not exceed it, and the
    /// reply is capped to it (sent as `max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_call: Option<NonZeroU32>,
}

/// An MCP server: exactly one of `command` (stdio) and `url` (streamable HTTP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerSpec {
    /// A program and its arguments, started in the project root; it speaks MCP on its
    /// standard input and output. Not available on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables added for `command`: a value, or `{ env: NAME }` to pass on a
    /// secret from flowrun's environment.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, SettingValue>,
    /// The endpoint of a streamable HTTP MCP server, e.g. `https://example.com/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP headers sent with every request to `url`: a value, or `{ env: NAME, prefix:
    /// "Bearer " }` for a secret read from the environment (never logged or stored).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, SettingValue>,
    /// Time allowed to start and connect (the MCP handshake and the tools list).
    #[serde(default = "default_mcp_timeout")]
    pub timeout: Duration,
}

fn default_mcp_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A setting's value: literal text, or an environment variable's (secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SettingValue {
    Text(String),
    Env(super::agent::EnvHeader),
}

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions; with `base_url` also OpenRouter, Ollama, vLLM, LiteLLM, Groq…
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Deterministic and offline: echoes, or answers from `rules`. Needs no key.
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Mock => "mock",
        }
    }
}

/// One LLM API endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub kind: ProviderKind,
    /// API root, e.g. `https://openrouter.ai/api/v1` or `http://localhost:11434/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Name of an environment variable that, when set, replaces `base_url` (a proxy, a local
    /// gateway, a recording server). Caches and cassettes still identify the provider by its
    /// `base_url` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url_env: Option<String>,
    /// Name of the environment variable that holds the API key (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Mock only: canned replies, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<MockRule>,
    /// Client-side rate limit in requests per minute, shared by every call to this provider
    /// (concurrent ones included): calls start evenly spaced, at least `60 s / rate_limit`
    /// apart; retries count. Omit for no limit. Cached and replayed replies do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<NonZeroU32>,
}

/// A canned reply of the mock provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MockRule {
    /// Matches when the latest user message or tool result contains this text
    /// (case-insensitive). Omit to match every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The reply text (with `tool_calls`: the text written alongside them).
    #[serde(default)]
    pub reply: String,
    /// Tools to call instead of answering, so agents run offline. The rule applies only to
    /// requests that offer every tool it calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<MockToolCall>,
}

/// A tool call the mock provider makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MockToolCall {
    /// The tool's name, as the agent step lists it.
    pub name: String,
    /// The arguments (a JSON object).
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A model alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A provider name from `providers`.
    pub provider: String,
    /// The model as the provider names it, e.g. `gpt-4o-mini`.
    pub model: String,
    /// Models tried in order when this one keeps failing: aliases or `provider/model`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    /// Parameters applied to every prompt using this alias (a prompt's own win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
}

/// Settings every prompt inherits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The model of prompts that name none: an alias or `provider/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Time allowed for one call attempt.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Attempts after the first one, on 429, 5xx, timeouts and broken connections.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff step; doubled each retry, with full jitter.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// Longest wait between attempts; a `Retry-After` longer than this moves on to the fallback.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            model: None,
            timeout: default_timeout(),
            retries: default_retries(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// A price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Price of input tokens read from the provider's cache; defaults to `input_per_mtok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
}
