//! OpenAI chat-completions provider (also OpenAI-compatible servers: Ollama, vLLM, Groq, …).
//!
//! Request and response bodies use the wire types of `async-openai`; the HTTP transport is our
//! own reqwest so that status codes and `Retry-After` reach the executor's retry loop. Replies
//! that those strict types reject (compatible servers omit or vary fields) are read leniently
//! from the raw JSON instead.

use std::time::Duration;

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionNamedToolChoice,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionStreamOptions, ChatCompletionTool,
    ChatCompletionToolChoiceOption, ChatCompletionTools, CompletionUsage,
    CreateChatCompletionRequest, CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
    FinishReason, FunctionCall, FunctionName, FunctionObject, ResponseFormat as WireResponseFormat,
    ResponseFormatJsonSchema, StopConfiguration, ToolChoiceOptions,
};
use async_trait::async_trait;
use serde_json::{Value, json};

use super::http::{self, Endpoint, MAX_BODY_EXCERPT, truncate};
use super::sse::SseStream;
use super::{
    ChatRequest, ChatResponse, DeltaFn, Message, Params, Provider, ProviderError, ResponseFormat,
    Role, ToolCall, ToolChoice, Usage,
};

/// A chat-completions endpoint: `POST {base_url}/chat/completions`.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    endpoint: Endpoint,
}

impl OpenAiProvider {
    /// `base_url` is the API root, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1`; `Authorization: Bearer` is sent only when a key is given.
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

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.endpoint.base_url)
    }

    async fn post(
        &self,
        body: &CreateChatCompletionRequest,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut request = self.endpoint.client.post(self.endpoint()).json(body);
        if let Some(key) = &self.endpoint.api_key {
            request = request.bearer_auth(key);
        }
        http::send(request, self.endpoint.timeout).await
    }

    async fn chat_once(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let response = self.post(&build_request(request, false)).await?;
        let raw = http::read_json(response, self.endpoint.timeout).await?;
        parse_response(raw, &request.model)
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        on_delta: &DeltaFn,
    ) -> Result<ChatResponse, ProviderError> {
        let response = self.post(&build_request(request, true)).await?;
        if http::is_json(&response) {
            // A server that ignored `stream: true` answered in one piece.
            let reply = parse_response(
                http::read_json(response, self.endpoint.timeout).await?,
                &request.model,
            )?;
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
        state.finish(&request.model)
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(
        &self,
        request: &ChatRequest,
        on_delta: Option<&DeltaFn>,
    ) -> Result<ChatResponse, ProviderError> {
        let result = match on_delta {
            Some(on_delta) => self.chat_stream(request, on_delta).await,
            None => self.chat_once(request).await,
        };
        result.map_err(|e| http::redact(e, self.endpoint.api_key.as_deref()))
    }
}

// ---- request ----

/// The wire request for `request`; `max_tokens` (not `max_completion_tokens`) is sent because
/// OpenAI-compatible servers (Ollama, vLLM, Groq) know only that one.
#[allow(deprecated)] // `max_tokens` and `seed` are deprecated upstream but still accepted.
fn build_request(request: &ChatRequest, stream: bool) -> CreateChatCompletionRequest {
    let Params {
        temperature,
        top_p,
        max_tokens,
        stop,
        seed,
    } = &request.params;
    CreateChatCompletionRequest {
        model: request.model.clone(),
        messages: request.messages.iter().map(wire_message).collect(),
        temperature: temperature.map(|t| t as f32),
        top_p: top_p.map(|p| p as f32),
        max_tokens: *max_tokens,
        stop: (!stop.is_empty()).then(|| StopConfiguration::StringArray(stop.clone())),
        seed: *seed,
        response_format: wire_response_format(&request.response_format),
        stream: stream.then_some(true),
        stream_options: stream.then_some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        tools: (!request.tools.is_empty()).then(|| {
            request
                .tools
                .iter()
                .map(|t| {
                    ChatCompletionTools::Function(ChatCompletionTool {
                        function: FunctionObject {
                            name: t.name.clone(),
                            description: Some(t.description.clone()).filter(|d| !d.is_empty()),
                            parameters: Some(t.parameters.clone()),
                            strict: None,
                        },
                    })
                })
                .collect()
        }),
        tool_choice: request.tool_choice.as_ref().map(wire_tool_choice),
        parallel_tool_calls: request
            .parallel_tool_calls
            .filter(|_| !request.tools.is_empty()),
        ..Default::default()
    }
}

fn wire_tool_choice(choice: &ToolChoice) -> ChatCompletionToolChoiceOption {
    match choice {
        ToolChoice::Auto => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Auto),
        ToolChoice::Required => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Required),
        ToolChoice::None => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::None),
        ToolChoice::Tool(name) => {
            ChatCompletionToolChoiceOption::Function(ChatCompletionNamedToolChoice {
                function: FunctionName { name: name.clone() },
            })
        }
    }
}

/// Arguments as the wire wants them: a JSON string (kept as written when it never parsed).
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// Arguments as the model wrote them, parsed when they are JSON.
fn parse_arguments(text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn wire_message(message: &Message) -> ChatCompletionRequestMessage {
    let text = message.content.clone();
    match message.role {
        Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
            content: ChatCompletionRequestSystemMessageContent::Text(text),
            name: None,
        }),
        Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(text),
            name: None,
        }),
        Role::Assistant => {
            let tool_calls = (!message.tool_calls.is_empty()).then(|| {
                message
                    .tool_calls
                    .iter()
                    .map(|c| {
                        ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                            id: c.id.clone(),
                            function: FunctionCall {
                                name: c.name.clone(),
                                arguments: arguments_text(&c.arguments),
                            },
                        })
                    })
                    .collect()
            });
            // With tool calls and no text, `content` is left out (`null`), as OpenAI sends it.
            let content = (tool_calls.is_none() || !text.is_empty())
                .then_some(ChatCompletionRequestAssistantMessageContent::Text(text));
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content,
                tool_calls,
                ..Default::default()
            })
        }
        Role::Tool => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(text),
            tool_call_id: message.tool_call_id.clone().unwrap_or_default(),
        }),
    }
}

fn wire_response_format(format: &ResponseFormat) -> Option<WireResponseFormat> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::Json { schema: None } => Some(WireResponseFormat::JsonObject),
        ResponseFormat::Json {
            schema: Some(schema),
        } => Some(WireResponseFormat::JsonSchema {
            json_schema: ResponseFormatJsonSchema {
                description: None,
                name: "output".to_owned(),
                schema: schema.clone(),
                strict: Some(false),
            },
        }),
    }
}

// ---- non-streaming response ----

/// Maps a complete reply body; strict `async-openai` parse first, lenient JSON read second.
fn parse_response(raw: Value, requested_model: &str) -> Result<ChatResponse, ProviderError> {
    let parsed = match serde_json::from_value::<CreateChatCompletionResponse>(raw.clone()) {
        Ok(typed) => from_typed(typed),
        Err(_) => from_lenient(&raw),
    }?;
    let model = parsed
        .model
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| requested_model.to_owned());
    Ok(ChatResponse {
        text: parsed.text,
        usage: parsed.usage,
        finish_reason: parsed.finish_reason,
        model,
        raw,
        tool_calls: parsed.tool_calls,
    })
}

/// The parts of a reply the neutral response needs.
struct Parsed {
    text: String,
    finish_reason: Option<String>,
    usage: Usage,
    model: Option<String>,
    tool_calls: Vec<ToolCall>,
}

fn from_typed(typed: CreateChatCompletionResponse) -> Result<Parsed, ProviderError> {
    let choice = typed.choices.into_iter().next().ok_or_else(no_choices)?;
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| match c {
            ChatCompletionMessageToolCalls::Function(f) => Some(ToolCall {
                id: f.id,
                name: f.function.name,
                arguments: parse_arguments(&f.function.arguments),
            }),
            ChatCompletionMessageToolCalls::Custom(_) => None,
        })
        .collect();
    Ok(Parsed {
        tool_calls,
        text: choice.message.content.unwrap_or_default(),
        finish_reason: choice
            .finish_reason
            .map(|r| finish_reason_name(r).to_owned()),
        usage: typed
            .usage
            .as_ref()
            .map(usage_from_typed)
            .unwrap_or_default(),
        model: Some(typed.model),
    })
}

fn from_lenient(raw: &Value) -> Result<Parsed, ProviderError> {
    if let Some(err) = stream_error(raw) {
        return Err(err);
    }
    let choice = raw.pointer("/choices/0").ok_or_else(|| bad_shape(raw))?;
    let tool_calls = choice
        .pointer("/message/tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| ToolCall {
            id: str_at(c, "/id").unwrap_or_default().to_owned(),
            name: str_at(c, "/function/name").unwrap_or_default().to_owned(),
            arguments: match c.pointer("/function/arguments") {
                Some(Value::String(text)) => parse_arguments(text),
                Some(other) => other.clone(),
                None => json!({}),
            },
        })
        .collect();
    Ok(Parsed {
        tool_calls,
        text: str_at(choice, "/message/content")
            .unwrap_or_default()
            .to_owned(),
        finish_reason: str_at(choice, "/finish_reason").map(str::to_owned),
        usage: raw.get("usage").map(usage_from_value).unwrap_or_default(),
        model: str_at(raw, "/model").map(str::to_owned),
    })
}

fn no_choices() -> ProviderError {
    ProviderError::BadResponse("reply has no choices".to_owned())
}

fn bad_shape(raw: &Value) -> ProviderError {
    ProviderError::BadResponse(format!(
        "reply is not a chat completion: {}",
        truncate(&raw.to_string(), MAX_BODY_EXCERPT)
    ))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::FunctionCall => "function_call",
    }
}

fn usage_from_typed(usage: &CompletionUsage) -> Usage {
    let cached = usage
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens);
    let reasoning = usage
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.reasoning_tokens);
    Usage {
        input_tokens: u64::from(usage.prompt_tokens),
        output_tokens: u64::from(usage.completion_tokens),
        cached_tokens: u64::from(cached.unwrap_or(0)),
        reasoning_tokens: u64::from(reasoning.unwrap_or(0)),
    }
}

fn usage_from_value(usage: &Value) -> Usage {
    let count = |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: count("/prompt_tokens"),
        output_tokens: count("/completion_tokens"),
        cached_tokens: count("/prompt_tokens_details/cached_tokens"),
        reasoning_tokens: count("/completion_tokens_details/reasoning_tokens"),
    }
}

/// An `{"error": {...}}` object sent in place of a reply (some servers do so mid-stream).
fn stream_error(raw: &Value) -> Option<ProviderError> {
    let error = raw.get("error")?;
    let message = str_at(error, "/message")
        .or_else(|| error.as_str())
        .unwrap_or("unknown error");
    let kind = str_at(error, "/type")
        .or_else(|| str_at(error, "/code"))
        .unwrap_or("");
    let message = truncate(message, MAX_BODY_EXCERPT);
    Some(match kind {
        "server_error" => ProviderError::Server {
            status: 500,
            retry_after: None,
            message,
        },
        "rate_limit_exceeded" | "rate_limit_error" => ProviderError::RateLimited {
            retry_after: None,
            message,
        },
        _ => ProviderError::BadResponse(message),
    })
}

// ---- streaming response ----

/// What the chunks of a stream have said so far.
#[derive(Debug, Default)]
struct StreamState {
    text: String,
    finish_reason: Option<String>,
    usage: Option<Value>,
    model: Option<String>,
    id: Option<String>,
    created: Option<u64>,
    done: bool,
    /// Tool calls by their index in the stream: id, name and the argument text so far.
    calls: Vec<(String, String, String)>,
}

/// A piece of a streamed tool call: its index, and the id, name and argument text it adds.
type CallPiece = (usize, Option<String>, Option<String>, Option<String>);

/// One chunk's contribution.
#[derive(Debug, Default)]
struct Chunk {
    content: Option<String>,
    calls: Vec<CallPiece>,
    finish_reason: Option<String>,
    model: Option<String>,
    id: Option<String>,
    created: Option<u64>,
}

impl StreamState {
    /// Applies one `data:` payload; true once the stream says it is over (`[DONE]`).
    fn apply(&mut self, data: &str, on_delta: &dyn Fn(&str)) -> Result<bool, ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(true);
        }
        let raw: Value = serde_json::from_str(data).map_err(|e| {
            ProviderError::BadResponse(format!(
                "stream chunk is not JSON ({e}): {}",
                truncate(data, MAX_BODY_EXCERPT)
            ))
        })?;
        if let Some(err) = stream_error(&raw) {
            return Err(err);
        }
        if let Some(usage) = raw.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let chunk = parse_chunk(raw);
        if let Some(content) = chunk.content.filter(|c| !c.is_empty()) {
            on_delta(&content);
            self.text.push_str(&content);
        }
        for (index, id, name, arguments) in chunk.calls {
            if self.calls.len() <= index {
                self.calls.resize(index + 1, Default::default());
            }
            let call = &mut self.calls[index];
            if let Some(id) = id.filter(|i| !i.is_empty()) {
                call.0 = id;
            }
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                call.1 = name;
            }
            if let Some(arguments) = arguments {
                call.2.push_str(&arguments);
            }
        }
        self.finish_reason = chunk.finish_reason.or(self.finish_reason.take());
        self.model = self.model.take().or(chunk.model.filter(|m| !m.is_empty()));
        self.id = self.id.take().or(chunk.id);
        self.created = self.created.or(chunk.created);
        Ok(false)
    }

    /// The assembled reply; a stream cut before `[DONE]` and any finish reason is an error.
    fn finish(self, requested_model: &str) -> Result<ChatResponse, ProviderError> {
        if !self.done && self.finish_reason.is_none() {
            return Err(ProviderError::Transport(
                "stream ended before the reply was complete".to_owned(),
            ));
        }
        let model = self.model.unwrap_or_else(|| requested_model.to_owned());
        let usage = self
            .usage
            .as_ref()
            .map(usage_from_value)
            .unwrap_or_default();
        let mut message = json!({"role": "assistant", "content": self.text});
        if !self.calls.is_empty() {
            message["tool_calls"] = self
                .calls
                .iter()
                .map(|(id, name, arguments)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
                })
                .collect();
        }
        let raw = json!({
            "id": self.id.unwrap_or_default(),
            "object": "chat.completion",
            "created": self.created.unwrap_or(0),
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "finish_reason": self.finish_reason,
            }],
            "usage": self.usage,
        });
        let tool_calls = self
            .calls
            .into_iter()
            .map(|(id, name, arguments)| ToolCall {
                id,
                name,
                arguments: parse_arguments(&arguments),
            })
            .collect();
        Ok(ChatResponse {
            text: self.text,
            usage,
            finish_reason: self.finish_reason,
            model,
            raw,
            tool_calls,
        })
    }
}

/// Reads a chunk with the strict `async-openai` type, or leniently from the JSON.
fn parse_chunk(raw: Value) -> Chunk {
    match serde_json::from_value::<CreateChatCompletionStreamResponse>(raw.clone()) {
        Ok(typed) => {
            let choice = typed.choices.into_iter().next();
            let calls = choice
                .as_ref()
                .and_then(|c| c.delta.tool_calls.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    let (name, arguments) =
                        c.function.map_or((None, None), |f| (f.name, f.arguments));
                    (c.index as usize, c.id, name, arguments)
                })
                .collect();
            Chunk {
                calls,
                finish_reason: choice
                    .as_ref()
                    .and_then(|c| c.finish_reason)
                    .map(|r| finish_reason_name(r).to_owned()),
                content: choice.and_then(|c| c.delta.content),
                model: Some(typed.model),
                id: Some(typed.id),
                created: Some(u64::from(typed.created)),
            }
        }
        Err(_) => Chunk {
            calls: raw
                .pointer("/choices/0/delta/tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| {
                    let index = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let text = |p: &str| str_at(c, p).map(str::to_owned);
                    (
                        index,
                        text("/id"),
                        text("/function/name"),
                        text("/function/arguments"),
                    )
                })
                .collect(),
            content: str_at(&raw, "/choices/0/delta/content").map(str::to_owned),
            finish_reason: str_at(&raw, "/choices/0/finish_reason").map(str::to_owned),
            model: str_at(&raw, "/model").map(str::to_owned),
            id: str_at(&raw, "/id").map(str::to_owned),
            created: raw.get("created").and_then(Value::as_u64),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::provider::Params;

    fn request(format: ResponseFormat, params: Params) -> ChatRequest {
        ChatRequest {
            model: "gpt-test".into(),
            messages: vec![
                Message::new(Role::System, "Be brief."),
                Message::new(Role::User, "Hi"),
                Message::new(Role::Assistant, "Hello."),
                Message::new(Role::User, "Bye"),
            ],
            params,
            response_format: format,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
        }
    }

    fn wire_json(body: &CreateChatCompletionRequest) -> Value {
        serde_json::from_str(&serde_json::to_string(body).unwrap()).unwrap()
    }

    #[test]
    fn request_body_carries_messages_and_params() {
        let params = Params {
            temperature: Some(0.7),
            top_p: Some(0.5),
            max_tokens: Some(64),
            stop: vec!["END".into()],
            seed: Some(42),
        };
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        let format = ResponseFormat::Json {
            schema: Some(schema.clone()),
        };
        let body = wire_json(&build_request(&request(format, params), false));
        assert_eq!(
            body,
            json!({
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Bye"},
                ],
                "model": "gpt-test",
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema, "strict": false},
                },
                "temperature": 0.7,
                "top_p": 0.5,
                "max_tokens": 64,
                "stop": ["END"],
                "seed": 42,
            })
        );
    }

    #[test]
    fn minimal_and_streaming_bodies() {
        let body = wire_json(&build_request(
            &request(ResponseFormat::Text, Params::default()),
            false,
        ));
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        let format = ResponseFormat::Json { schema: None };
        let body = wire_json(&build_request(&request(format, Params::default()), true));
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn strict_response_with_usage_details() {
        let raw = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-test-2024", "system_fingerprint": null,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there", "refusal": null},
                         "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
                      "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 20}},
        });
        let reply = parse_response(raw.clone(), "gpt-test").unwrap();
        assert_eq!(reply.text, "Hi there");
        assert_eq!(reply.finish_reason.as_deref(), Some("length"));
        assert_eq!(reply.model, "gpt-test-2024");
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 30,
                cached_tokens: 8,
                reasoning_tokens: 20
            }
        );
        assert_eq!(reply.raw, raw);
    }

    #[test]
    fn lenient_response_from_a_compatible_server() {
        // No `id`/`created`/`object`/`total_tokens`, and a finish reason OpenAI never sends.
        let raw = json!({
            "choices": [{"message": {"content": "ok"}, "finish_reason": "eos"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        });
        let reply = parse_response(raw, "llama3").unwrap();
        assert_eq!(reply.text, "ok");
        assert_eq!(reply.finish_reason.as_deref(), Some("eos"));
        assert_eq!(reply.model, "llama3");
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 3,
                output_tokens: 1,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn replies_without_choices_are_bad_responses() {
        let err = parse_response(json!({"object": "list"}), "m").unwrap_err();
        assert_eq!(err.kind(), "bad_response");
        let err = parse_response(
            json!({"error": {"message": "boom", "type": "server_error"}}),
            "m",
        )
        .unwrap_err();
        assert_eq!(
            err,
            ProviderError::Server {
                status: 500,
                retry_after: None,
                message: "boom".into()
            }
        );
    }

    fn run_stream(chunks: &[&str]) -> (Result<ChatResponse, ProviderError>, Vec<String>) {
        let deltas = Mutex::new(Vec::new());
        let on_delta = |d: &str| deltas.lock().unwrap().push(d.to_owned());
        let mut state = StreamState::default();
        for chunk in chunks {
            match state.apply(chunk, &on_delta) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return (Err(e), deltas.into_inner().unwrap()),
            }
        }
        (state.finish("requested"), deltas.into_inner().unwrap())
    }

    const CHUNKS: [&str; 5] = [
        r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6,"prompt_tokens_details":{"cached_tokens":1}}}"#,
        "[DONE]",
    ];

    #[test]
    fn stream_is_reassembled() {
        let (reply, deltas) = run_stream(&CHUNKS);
        let reply = reply.unwrap();
        assert_eq!(deltas, ["Hel", "lo"]);
        assert_eq!(reply.text, "Hello");
        assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
        assert_eq!(reply.model, "gpt-x");
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 4,
                output_tokens: 2,
                cached_tokens: 1,
                reasoning_tokens: 0
            }
        );
        assert_eq!(reply.raw["choices"][0]["message"]["content"], "Hello");
        assert_eq!(reply.raw["usage"]["total_tokens"], 6);
        assert_eq!(reply.raw["id"], "c1");
        // The reconstruction parses as a regular completion again.
        assert_eq!(
            parse_response(reply.raw.clone(), "requested").unwrap(),
            reply
        );
    }

    #[test]
    fn cut_stream_is_a_transport_error() {
        let (reply, deltas) = run_stream(&CHUNKS[..2]);
        assert_eq!(deltas, ["Hel"]);
        assert_eq!(reply.unwrap_err().kind(), "transport");
    }

    #[test]
    fn error_chunk_ends_the_stream() {
        let chunks = [
            CHUNKS[1],
            r#"{"error":{"message":"too fast","type":"rate_limit_exceeded"}}"#,
        ];
        let (reply, _) = run_stream(&chunks);
        assert_eq!(
            reply.unwrap_err(),
            ProviderError::RateLimited {
                retry_after: None,
                message: "too fast".into()
            }
        );
        let (reply, _) = run_stream(&["not json"]);
        assert_eq!(reply.unwrap_err().kind(), "bad_response");
    }

    #[test]
    fn debug_hides_the_key() {
        let p = OpenAiProvider::new(
            reqwest::Client::new(),
            "http://x/v1/",
            Some("sk-secret".into()),
        );
        let shown = format!("{p:?}");
        assert!(shown.contains(r#"api_key: Some("<redacted>")"#), "{shown}");
        assert!(!shown.contains("sk-secret"));
        assert_eq!(p.endpoint(), "http://x/v1/chat/completions");
    }
}
