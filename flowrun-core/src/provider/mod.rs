//! The model-provider boundary: what the executor needs from an LLM API.
//!
//! Wire formats stay inside each provider module (`openai`, `anthropic`, `mock`) and map into
//! the small provider-neutral types defined here. Errors are shaped for the retry loop, not by
//! the transport: the executor decides what to retry from [`ProviderError`] alone.

pub mod anthropic;
pub mod http;
pub mod limit;
pub mod mock;
pub mod openai;
pub mod sse;

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering an assistant message's [`ToolCall`].
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message: rendered from a prompt, or a turn of an agent's conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Assistant messages: the tools the model asked to call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the id of the call this result answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Tool messages: whether the result is an error (Anthropic's `is_error`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            is_error: false,
        }
    }

    /// An assistant message that calls tools (with the text the model wrote alongside).
    pub fn assistant_calls(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The result of tool call `call_id`.
    pub fn tool_result(
        call_id: impl Into<String>,
        content: impl Into<String>,
        is_error: bool,
    ) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            is_error,
            ..Self::new(Role::Tool, content)
        }
    }
}

/// A tool the model asked to call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call; the result refers to it.
    pub id: String,
    pub name: String,
    /// The arguments as JSON; arguments that were not valid JSON are kept as the string the
    /// model wrote (they fail validation and go back to the model as an error).
    pub arguments: serde_json::Value,
}

/// A tool offered to the model: its name, what it is for, and a JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (the default when tools are offered).
    Auto,
    /// The model must call at least one tool.
    Required,
    /// The model must not call tools.
    None,
    /// The model must call this tool.
    Tool(String),
}

/// Sampling parameters a prompt may set; each provider sends the ones its API knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Upper bound of tokens in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

/// What shape of reply the caller wants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum ResponseFormat {
    #[default]
    Text,
    /// A JSON value, matching `schema` when one is given.
    Json { schema: Option<serde_json::Value> },
}

/// A provider-neutral chat completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model name as the provider knows it (`gpt-4o-mini`), not a project alias.
    pub model: String,
    pub messages: Vec<Message>,
    pub params: Params,
    pub response_format: ResponseFormat,
    /// Tools the model may call (native function calling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn (`None`: the provider's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

impl ChatRequest {
    /// A request without tools.
    pub fn new(
        model: impl Into<String>,
        messages: Vec<Message>,
        params: Params,
        response_format: ResponseFormat,
    ) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            params,
            response_format,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
        }
    }
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache (a subset of `input_tokens`).
    pub cached_tokens: u64,
    /// Output tokens spent on hidden reasoning (a subset of `output_tokens`).
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_tokens += other.cached_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }
}

/// A provider-neutral chat completion reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub usage: Usage,
    pub finish_reason: Option<String>,
    /// The model that answered, as the provider named it.
    pub model: String,
    /// The provider's response body (for streams, the reassembled final message).
    pub raw: serde_json::Value,
    /// Tools the model asked to call, in order (several: parallel calls).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// Receives text as a streaming reply arrives.
pub type DeltaFn = dyn Fn(&str) + Send + Sync;

/// Why a call failed, shaped for the retry loop.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    #[error("rate limited (HTTP 429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("server error (HTTP {status}): {message}")]
    Server {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("authentication failed (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    #[error("request rejected (HTTP {status}): {message}")]
    InvalidRequest { status: u16, message: String },
    #[error("unexpected response: {0}")]
    BadResponse(String),
    #[error("{0}")]
    Config(String),
    #[error("cancelled")]
    Cancelled,
    /// A budget limit refused the call before it was made (never sent to a provider).
    #[error("{0}")]
    BudgetExceeded(String),
}

impl ProviderError {
    /// Whether trying the same call again may succeed: 429, 5xx, timeouts and broken
    /// connections are; 400/401/403/404 and configuration mistakes are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Server { .. }
                | ProviderError::Timeout(_)
                | ProviderError::Transport(_)
        )
    }

    /// The wait the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short machine-readable name for records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Server { .. } => "server",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Transport(_) => "transport",
            ProviderError::Auth { .. } => "auth",
            ProviderError::InvalidRequest { .. } => "invalid_request",
            ProviderError::BadResponse(_) => "bad_response",
            ProviderError::Config(_) => "config",
            ProviderError::Cancelled => "cancelled",
            ProviderError::BudgetExceeded(_) => "budget_exceeded",
        }
    }
}

/// An LLM API. Implementations map [`ChatRequest`] to their wire format and back.
///
/// When `on_delta` is given the provider streams (SSE) and reports text as it arrives; the
/// returned [`ChatResponse`] is the same as without streaming. Timeouts, retries and fallbacks
/// are the executor's job, not the provider's.
///
/// Client-side waits (a rate limit) are in [`Provider::ready`], which the executor awaits before
/// each attempt, outside the attempt's timeout and latency.
#[async_trait]
pub trait Provider: Send + Sync {
    async fn chat(
        &self,
        request: &ChatRequest,
        on_delta: Option<&DeltaFn>,
    ) -> Result<ChatResponse, ProviderError>;

    /// Waits until one request may be sent, and takes that turn. Call it once before each
    /// [`chat`](Self::chat). The default is ready at once; [`limit::RateLimited`] spaces calls.
    async fn ready(&self) {}
}
