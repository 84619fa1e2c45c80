//! The OpenAI chat-completions wire format (`POST /v1/chat/completions`):
//! request parsing, JSON and SSE answers, and error bodies.

use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::chat::{ChatRequest, Completion, Finish, RequestError};
use crate::handler::{json_response, unix_now};
use crate::reply::Usage;
use crate::{sse, text};

/// Size in characters of the pieces tool-call arguments are streamed in.
const ARGUMENT_PIECE_CHARS: usize = 16;

/// Parses and validates a chat-completions request body.
pub(crate) fn parse(body: &Value) -> Result<ChatRequest, RequestError> {
    let Some(obj) = body.as_object() else {
        return Err(RequestError::new(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(RequestError::new(400, "you must provide a model parameter")),
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(RequestError::new(400, "[] is too short - 'messages'"));
        }
        _ => {
            return Err(RequestError::new(
                400,
                "Missing required parameter: 'messages'.",
            ));
        }
    };
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let stream_options = obj.get("stream_options").filter(|v| !v.is_null());
    if stream_options.is_some() && !stream {
        return Err(RequestError::new(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ));
    }
    let include_usage = stream_options
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let wants_json = matches!(
        obj.get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str),
        Some("json_object" | "json_schema")
    );
    let max_tokens = obj
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| obj.get("max_tokens").and_then(Value::as_u64));
    let content = |m: &Value| m.get("content").map(text::content_text).unwrap_or_default();
    let input_words = messages.iter().map(|m| text::words(&content(m))).sum();
    let last_user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(content)
        .unwrap_or_default();
    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        wants_json,
        max_tokens,
        last_user_text,
        input_words,
    })
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::ToolCalls => "tool_calls",
        Finish::Length => "length",
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    })
}

/// The full (non-streamed) `chat.completion` object.
pub(crate) fn completion_json(c: &Completion) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert("content".into(), json!(c.text));
    if !c.tool_calls.is_empty() {
        let calls: Vec<Value> = c
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments.to_string()},
                })
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    message.insert("refusal".into(), Value::Null);
    json!({
        "id": c.id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": c.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(c.finish),
        }],
        "usage": usage_json(&c.usage),
        "system_fingerprint": null,
    })
}

/// The `data:` events of a streamed answer, `[DONE]` included.
pub(crate) fn stream_events(c: &Completion, include_usage: bool) -> Vec<Bytes> {
    let created = unix_now();
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut chunk = json!({
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": c.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        sse::data_event(&chunk)
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )];
    if let Some(t) = &c.text {
        for piece in text::word_pieces(t) {
            events.push(chunk(json!({"content": piece}), None));
        }
    }
    for (index, call) in c.tool_calls.iter().enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]}),
            None,
        ));
        let arguments = call.arguments.to_string();
        for piece in text::char_pieces(&arguments, ARGUMENT_PIECE_CHARS) {
            events.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    events.push(chunk(json!({}), Some(finish_reason(c.finish))));
    if include_usage {
        events.push(sse::data_event(&json!({
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": c.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": usage_json(&c.usage),
        })));
    }
    events.push(sse::done_event());
    events
}

/// The success response for `c`, streamed or not as `req` asked.
pub(crate) fn success(
    req: &ChatRequest,
    c: &Completion,
    chunk_delay: Option<Duration>,
) -> Response {
    if req.stream {
        sse::response(stream_events(c, req.include_usage), chunk_delay)
    } else {
        json_response(200, &completion_json(c), None)
    }
}

/// OpenAI's `(type, code)` for an HTTP status.
fn error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => (
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
        ),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

/// The error body `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn error_json(status: u16, message: &str) -> Value {
    let (kind, code) = error_kind(status);
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// An error response with OpenAI's body shape.
pub(crate) fn error(status: u16, message: &str, retry_after: Option<Duration>) -> Response {
    json_response(status, &error_json(status, message), retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request() {
        let r = parse(&json!({
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "last one"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "response_format": {"type": "json_schema", "json_schema": {}},
            "max_tokens": 5
        }))
        .unwrap();
        assert_eq!(r.model, "gpt-x");
        assert!(r.stream && r.include_usage && r.wants_json);
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.last_user_text, "last one");
        assert_eq!(r.input_words, 7);
    }

    #[test]
    fn rejects_bad_requests() {
        assert_eq!(parse(&json!([])).unwrap_err().status, 400);
        assert_eq!(
            parse(&json!({"messages": [{"role": "user", "content": "x"}]}))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse(&json!({"model": "m", "messages": []}))
                .unwrap_err()
                .status,
            400
        );
        let e = parse(&json!({
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream_options": {"include_usage": true}
        }))
        .unwrap_err();
        assert!(e.message.contains("stream_options"));
    }

    #[test]
    fn error_shape() {
        assert_eq!(
            error_json(429, "slow"),
            json!({"error": {
                "message": "slow",
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }})
        );
        assert_eq!(error_json(500, "x")["error"]["type"], "server_error");
    }
}
