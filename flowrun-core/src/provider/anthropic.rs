//! Anthropic Messages API provider (`POST {base_url}/v1/messages`).
//!
//! The wire structs are private to this module. System messages go to the top-level `system`
//! field, consecutive same-role messages are merged (the API wants alternating turns), and
//! since the API has no JSON mode a JSON request becomes an instruction in the system prompt.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{self, Endpoint, MAX_BODY_EXCERPT, truncate};
use super::sse::SseStream;
use super::{
    ChatRequest, ChatResponse, DeltaFn, Message, Provider, ProviderError, ResponseFormat, Role,
    ToolCall, ToolChoice, Usage,
};

/// The public API root.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header sent with every request.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; this is sent when the prompt sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A Messages API endpoint.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    endpoint: Endpoint,
}

impl AnthropicProvider {
    /// `base_url` is the API root without `/v1` ([`DEFAULT_BASE_URL`] for the public API);
    /// `x-api-key` is sent only when a key is given.
    pub fn new(
        client: reqwest::Client,
        base_url: impl Into<String>,
        api_key: Option<String>,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(client, base_url, api_key),
        }
    }

    /// Sets a per-request timeout (a reqwest timeout maps to [`ProviderError::Timeout`] with
    /// this duration; without it a client-level timeout is reported as zero).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.timeout = Some(timeout);
        self
    }

    async fn post(&self, body: &WireRequest<'_>) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .endpoint
            .client
            .post(format!("{}/v1/messages", self.endpoint.base_url))
            .header("anthropic-version", API_VERSION)
            .json(body);
        if let Some(key) = &self.endpoint.api_key {
            request = request.header("x-api-key", key);
        }
        http::send(request, self.endpoint.timeout).await
    }

    async fn chat_once(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let response = self.post(&build_request(request, false)).await?;
        parse_response(http::read_json(response, self.endpoint.timeout).await?)
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        on_delta: &DeltaFn,
    ) -> Result<ChatResponse, ProviderError> {
        let response = self.post(&build_request(request, true)).await?;
        if http::is_json(&response) {
            // A server that ignored `stream: true` answered in one piece.
            let reply = parse_response(http::read_json(response, self.endpoint.timeout).await?)?;
            if !reply.text.is_empty() {
                on_delta(&reply.text);
            }
            return Ok(reply);
        }
        let mut events = SseStream::new(response, self.endpoint.timeout);
        let mut state = StreamState::default();
        while let Some(event) = events.next_event().await {
            if state.apply(&event?.data, on_delta)? {
                break;
            }
        }
        state.finish()
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn chat(
        &self,
        request: &ChatRequest,
        on_delta: Option<&DeltaFn>,
    ) -> Result<ChatResponse, ProviderError> {
        let result = match on_delta {
            Some(on_delta) => self.chat_stream(request, on_delta).await,
            None => self.chat_once(request).await,
        };
        let result = result.map_err(|e| http::redact(e, self.endpoint.api_key.as_deref()));
        match request.response_format {
            ResponseFormat::Json { .. } => result.map(strip_reply_fence),
            ResponseFormat::Text => result,
        }
    }
}

// ---- request ----

#[derive(Debug, Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
}

#[derive(Debug, PartialEq, Serialize)]
struct WireMessage {
    role: &'static str,
    content: WireContent,
}

/// A message's content: plain text, or blocks once tool use or tool results are involved.
#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Blocks(Vec<Value>),
}

impl WireContent {
    fn into_blocks(self) -> Vec<Value> {
        match self {
            WireContent::Text(t) if t.is_empty() => Vec::new(),
            WireContent::Text(t) => vec![serde_json::json!({"type": "text", "text": t})],
            WireContent::Blocks(b) => b,
        }
    }

    /// Appends `next` to a turn of the same role: texts joined with a blank line, otherwise
    /// as blocks.
    fn append(&mut self, next: WireContent) {
        let this = std::mem::replace(self, WireContent::Text(String::new()));
        *self = match (this, next) {
            (WireContent::Text(mut a), WireContent::Text(b)) => {
                a.push_str("\n\n");
                a.push_str(&b);
                WireContent::Text(a)
            }
            (a, b) => {
                let mut blocks = a.into_blocks();
                blocks.extend(b.into_blocks());
                WireContent::Blocks(blocks)
            }
        };
    }
}

/// The wire content of one neutral message (its role is mapped by the caller).
fn wire_content(message: &Message) -> WireContent {
    match message.role {
        Role::Tool => {
            let mut block = serde_json::json!({
                "type": "tool_result",
                "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                "content": message.content,
            });
            if message.is_error {
                block["is_error"] = Value::Bool(true);
            }
            WireContent::Blocks(vec![block])
        }
        Role::Assistant if !message.tool_calls.is_empty() => {
            let mut blocks = WireContent::Text(message.content.clone()).into_blocks();
            blocks.extend(message.tool_calls.iter().map(|c| {
                // The API wants an object; arguments that never parsed are sent wrapped.
                let input = match &c.arguments {
                    Value::Object(_) => c.arguments.clone(),
                    other => serde_json::json!({ "_raw": other }),
                };
                serde_json::json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input})
            }));
            WireContent::Blocks(blocks)
        }
        _ => WireContent::Text(message.content.clone()),
    }
}

fn wire_tools(request: &ChatRequest) -> Vec<Value> {
    request
        .tools
        .iter()
        .map(|t| {
            let mut tool = serde_json::json!({"name": t.name, "input_schema": t.parameters});
            if !t.description.is_empty() {
                tool["description"] = Value::String(t.description.clone());
            }
            tool
        })
        .collect()
}

/// `tool_choice`; parallel calls are switched off inside it (`disable_parallel_tool_use`).
fn wire_tool_choice(request: &ChatRequest) -> Option<Value> {
    if request.tools.is_empty() {
        return None;
    }
    let mut choice = match &request.tool_choice {
        None if request.parallel_tool_calls != Some(false) => return None,
        None | Some(ToolChoice::Auto) => serde_json::json!({"type": "auto"}),
        Some(ToolChoice::Required) => serde_json::json!({"type": "any"}),
        Some(ToolChoice::None) => return Some(serde_json::json!({"type": "none"})),
        Some(ToolChoice::Tool(name)) => serde_json::json!({"type": "tool", "name": name}),
    };
    if request.parallel_tool_calls == Some(false) {
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Some(choice)
}

/// The wire request; the seed has no Anthropic counterpart and is not sent.
fn build_request(request: &ChatRequest, stream: bool) -> WireRequest<'_> {
    let params = &request.params;
    WireRequest {
        model: &request.model,
        max_tokens: params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: system_prompt(request),
        messages: turns(request),
        temperature: params.temperature,
        top_p: params.top_p,
        stop_sequences: &params.stop,
        stream,
        tools: wire_tools(request),
        tool_choice: wire_tool_choice(request),
    }
}

/// The system messages joined with blank lines, plus the JSON instruction when one applies.
fn system_prompt(request: &ChatRequest) -> Option<String> {
    let mut parts: Vec<String> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.clone())
        .collect();
    if let ResponseFormat::Json { schema } = &request.response_format {
        parts.push(json_instruction(schema.as_ref()));
    }
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

fn json_instruction(schema: Option<&Value>) -> String {
    let mut text = String::from(
        "Answer with only a JSON value: no prose before or after it, and no Markdown code fence.",
    );
    if let Some(schema) = schema {
        text.push_str(" The value must match this JSON Schema: ");
        text.push_str(&schema.to_string());
    }
    text
}

/// The user and assistant messages, consecutive same-role ones merged with a blank line;
/// tool results are user turns of `tool_result` blocks.
fn turns(request: &ChatRequest) -> Vec<WireMessage> {
    let mut turns: Vec<WireMessage> = Vec::new();
    for message in request.messages.iter().filter(|m| m.role != Role::System) {
        let role = match message.role {
            Role::Tool => "user",
            other => other.as_str(),
        };
        let content = wire_content(message);
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.append(content),
            _ => turns.push(WireMessage { role, content }),
        }
    }
    turns
}

// ---- response ----

#[derive(Debug, Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

/// Token counts; every field optional so that `message_delta` updates can be merged in.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
struct WireUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    fn merge(&mut self, update: WireUsage) {
        self.input_tokens = update.input_tokens.or(self.input_tokens);
        self.output_tokens = update.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = update
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = update
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }

    /// Neutral usage: cache reads and writes are billed input, so they count in `input_tokens`.
    fn to_usage(&self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let cache_creation = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0) + cache_read + cache_creation,
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: cache_read,
            reasoning_tokens: 0,
        }
    }
}

fn parse_response(raw: Value) -> Result<ChatResponse, ProviderError> {
    let wire: WireResponse = serde_json::from_value(raw.clone()).map_err(|e| {
        ProviderError::BadResponse(format!(
            "reply is not a message ({e}): {}",
            truncate(&raw.to_string(), MAX_BODY_EXCERPT)
        ))
    })?;
    let text: String = wire
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.as_deref())
        .collect();
    let tool_calls = wire
        .content
        .iter()
        .filter(|b| b.kind == "tool_use")
        .map(|b| ToolCall {
            id: b.id.clone().unwrap_or_default(),
            name: b.name.clone().unwrap_or_default(),
            arguments: b.input.clone().unwrap_or_else(|| serde_json::json!({})),
        })
        .collect();
    Ok(ChatResponse {
        text,
        usage: wire.usage.to_usage(),
        finish_reason: wire.stop_reason,
        model: wire.model,
        raw,
        tool_calls,
    })
}

/// Drops a surrounding ```` ```json ```` (or bare ```` ``` ````) fence from a JSON reply.
fn strip_reply_fence(mut reply: ChatResponse) -> ChatResponse {
    if let Some(inner) = strip_json_fence(&reply.text) {
        reply.text = inner.to_owned();
    }
    reply
}

fn strip_json_fence(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("```")?.strip_suffix("```")?;
    match inner.split_once('\n') {
        Some((tag, body)) if tag.trim().is_empty() || tag.trim().eq_ignore_ascii_case("json") => {
            Some(body.trim())
        }
        Some(_) => None,
        None => Some(inner.trim()),
    }
}

// ---- streaming ----

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: Value,
    },
    ContentBlockStart {
        #[serde(default)]
        index: usize,
        content_block: Value,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: usize,
        delta: BlockDelta,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// What the events of a stream have said so far.
#[derive(Debug, Default)]
struct StreamState {
    /// The `message_start` message, the skeleton of the reassembled reply.
    message: Option<Value>,
    text: String,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: WireUsage,
    stopped: bool,
    /// Tool-use blocks by stream index: id, name, the input JSON text so far.
    calls: Vec<(usize, String, String, String)>,
}

impl StreamState {
    /// Applies one event's data; true once `message_stop` arrived.
    fn apply(&mut self, data: &str, on_delta: &dyn Fn(&str)) -> Result<bool, ProviderError> {
        let event: StreamEvent = serde_json::from_str(data).map_err(|e| {
            ProviderError::BadResponse(format!(
                "stream event not understood ({e}): {}",
                truncate(data, MAX_BODY_EXCERPT)
            ))
        })?;
        match event {
            StreamEvent::MessageStart { message } => self.start(message),
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                if content_block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let text = |k: &str| {
                        content_block
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    self.calls
                        .push((index, text("id"), text("name"), String::new()));
                }
            }
            StreamEvent::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
                ..
            } => {
                on_delta(&text);
                self.text.push_str(&text);
            }
            StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::InputJsonDelta { partial_json },
            } => {
                if let Some(call) = self.calls.iter_mut().find(|c| c.0 == index) {
                    call.3.push_str(&partial_json);
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                self.stop_reason = delta.stop_reason.or(self.stop_reason.take());
                self.stop_sequence = delta.stop_sequence.or(self.stop_sequence.take());
                self.usage.merge(usage.unwrap_or_default());
            }
            StreamEvent::MessageStop => self.stopped = true,
            StreamEvent::Error { error } => return Err(stream_error(error)),
            StreamEvent::ContentBlockDelta {
                delta: BlockDelta::Other,
                ..
            }
            | StreamEvent::Other => {}
        }
        Ok(self.stopped)
    }

    fn start(&mut self, message: Value) {
        if let Some(usage) = message.get("usage") {
            self.usage
                .merge(serde_json::from_value(usage.clone()).unwrap_or_default());
        }
        self.message = Some(message);
    }

    /// The reassembled reply, shaped like a non-streaming one.
    fn finish(self) -> Result<ChatResponse, ProviderError> {
        if !self.stopped {
            return Err(ProviderError::Transport(
                "stream ended before message_stop".to_owned(),
            ));
        }
        let mut raw = self
            .message
            .unwrap_or_else(|| Value::Object(Default::default()));
        let model = raw
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .map(|(_, id, name, input)| ToolCall {
                id,
                name,
                arguments: if input.trim().is_empty() {
                    serde_json::json!({})
                } else {
                    serde_json::from_str(&input).unwrap_or(Value::String(input))
                },
            })
            .collect();
        if let Some(object) = raw.as_object_mut() {
            let mut content = Vec::new();
            if !self.text.is_empty() || tool_calls.is_empty() {
                content.push(serde_json::json!({"type": "text", "text": self.text}));
            }
            content.extend(tool_calls.iter().map(|c| {
                serde_json::json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})
            }));
            object.insert("content".into(), Value::Array(content));
            object.insert("stop_reason".into(), self.stop_reason.clone().into());
            object.insert("stop_sequence".into(), self.stop_sequence.into());
            object.insert(
                "usage".into(),
                serde_json::to_value(&self.usage).unwrap_or_default(),
            );
        }
        Ok(ChatResponse {
            text: self.text,
            usage: self.usage.to_usage(),
            finish_reason: self.stop_reason,
            model,
            raw,
            tool_calls,
        })
    }
}

fn stream_error(error: WireError) -> ProviderError {
    let message = truncate(&error.message, MAX_BODY_EXCERPT);
    match error.kind.as_str() {
        "overloaded_error" => ProviderError::Server {
            status: 529,
            retry_after: None,
            message,
        },
        "rate_limit_error" => ProviderError::RateLimited {
            retry_after: None,
            message,
        },
        kind => ProviderError::BadResponse(format!("{kind}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::provider::{Message, Params};

    fn request(format: ResponseFormat, params: Params) -> ChatRequest {
        ChatRequest {
            model: "claude-test".into(),
            messages: vec![
                Message::new(Role::System, "Be brief."),
                Message::new(Role::User, "Hi"),
                Message::new(Role::User, "Are you there?"),
                Message::new(Role::System, "Be kind."),
                Message::new(Role::Assistant, "Yes."),
                Message::new(Role::User, "Bye"),
            ],
            params,
            response_format: format,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
        }
    }

    #[test]
    fn request_body_moves_system_and_merges_turns() {
        let params = Params {
            temperature: Some(0.5),
            top_p: Some(0.25),
            max_tokens: None,
            stop: vec!["END".into()],
            seed: Some(1),
        };
        let body =
            serde_json::to_value(build_request(&request(ResponseFormat::Text, params), true))
                .unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-test",
                "max_tokens": 4096,
                "system": "Be brief.\n\nBe kind.",
                "messages": [
                    {"role": "user", "content": "Hi\n\nAre you there?"},
                    {"role": "assistant", "content": "Yes."},
                    {"role": "user", "content": "Bye"},
                ],
                "temperature": 0.5,
                "top_p": 0.25,
                "stop_sequences": ["END"],
                "stream": true,
            })
        );
    }

    #[test]
    fn json_format_becomes_a_system_instruction() {
        let schema = json!({"type": "object", "required": ["n"]});
        let format = ResponseFormat::Json {
            schema: Some(schema),
        };
        let params = Params {
            max_tokens: Some(10),
            ..Params::default()
        };
        let body = serde_json::to_value(build_request(&request(format, params), false)).unwrap();
        let system = body["system"].as_str().unwrap();
        assert!(
            system.starts_with("Be brief.\n\nBe kind.\n\nAnswer with only a JSON value"),
            "{system}"
        );
        assert!(
            system.ends_with(r#"JSON Schema: {"type":"object","required":["n"]}"#),
            "{system}"
        );
        assert_eq!(body["max_tokens"], 10);
        assert!(body.get("stream").is_none() && body.get("stop_sequences").is_none());
        let mut plain = request(ResponseFormat::Json { schema: None }, Params::default());
        plain.messages.retain(|m| m.role != Role::System);
        let body = serde_json::to_value(build_request(&plain, false)).unwrap();
        assert_eq!(body["system"], json_instruction(None));
    }

    #[test]
    fn response_with_cache_usage() {
        let raw = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5,
                      "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20},
        });
        let reply = parse_response(raw.clone()).unwrap();
        assert_eq!(reply.text, "Hello");
        assert_eq!(reply.finish_reason.as_deref(), Some("end_turn"));
        assert_eq!(reply.model, "claude-x");
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 130,
                output_tokens: 5,
                cached_tokens: 100,
                reasoning_tokens: 0
            }
        );
        assert_eq!(reply.raw, raw);
        assert_eq!(
            parse_response(json!({"content": "nope"}))
                .unwrap_err()
                .kind(),
            "bad_response"
        );
    }

    #[test]
    fn fences_are_stripped() {
        assert_eq!(
            strip_json_fence("```json\n{\"a\":1}\n```"),
            Some("{\"a\":1}")
        );
        assert_eq!(strip_json_fence("  ```JSON\n[1]\n```\n"), Some("[1]"));
        assert_eq!(strip_json_fence("```\n{}\n```"), Some("{}"));
        assert_eq!(strip_json_fence("```{}```"), Some("{}"));
        assert_eq!(strip_json_fence("```python\nx=1\n```"), None);
        assert_eq!(strip_json_fence("{\"a\":1}"), None);
    }

    fn run_stream(events: &[&str]) -> (Result<ChatResponse, ProviderError>, Vec<String>) {
        let deltas = Mutex::new(Vec::new());
        let on_delta = |d: &str| deltas.lock().unwrap().push(d.to_owned());
        let mut state = StreamState::default();
        for event in events {
            match state.apply(event, &on_delta) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return (Err(e), deltas.into_inner().unwrap()),
            }
        }
        (state.finish(), deltas.into_inner().unwrap())
    }

    const EVENTS: [&str; 8] = [
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":7}}"#,
        r#"{"type":"message_stop"}"#,
    ];

    #[test]
    fn stream_is_reassembled() {
        let (reply, deltas) = run_stream(&EVENTS);
        let reply = reply.unwrap();
        assert_eq!(deltas, ["Hel", "lo"]);
        assert_eq!(reply.text, "Hello");
        assert_eq!(reply.finish_reason.as_deref(), Some("max_tokens"));
        assert_eq!(reply.model, "claude-x");
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 14,
                output_tokens: 7,
                cached_tokens: 4,
                reasoning_tokens: 0
            }
        );
        assert_eq!(
            reply.raw["content"],
            json!([{"type": "text", "text": "Hello"}])
        );
        assert_eq!(reply.raw["id"], "msg_1");
        assert_eq!(parse_response(reply.raw.clone()).unwrap(), reply);
    }

    #[test]
    fn stream_errors() {
        let (reply, _) = run_stream(&EVENTS[..5]);
        assert_eq!(reply.unwrap_err().kind(), "transport");
        let overloaded =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let (reply, _) = run_stream(&[EVENTS[0], overloaded]);
        assert_eq!(
            reply.unwrap_err(),
            ProviderError::Server {
                status: 529,
                retry_after: None,
                message: "Overloaded".into()
            }
        );
        let limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#;
        assert_eq!(run_stream(&[limited]).0.unwrap_err().kind(), "rate_limited");
        let other = r#"{"type":"error","error":{"type":"api_error","message":"oops"}}"#;
        assert_eq!(
            run_stream(&[other]).0.unwrap_err(),
            ProviderError::BadResponse("api_error: oops".into())
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let p = AnthropicProvider::new(
            reqwest::Client::new(),
            DEFAULT_BASE_URL,
            Some("sk-ant-secret".into()),
        );
        let shown = format!("{p:?}");
        assert!(shown.contains(r#"api_key: Some("<redacted>")"#), "{shown}");
        assert!(!shown.contains("sk-ant-secret"));
    }
}
