//! The Anthropic Messages wire format (`POST /v1/messages`): header checks,
//! request parsing, JSON and SSE answers, and error bodies.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::chat::{ChatRequest, Completion, Finish, RequestError};
use crate::handler::json_response;
use crate::reply::Usage;
use crate::{sse, text};

/// Size in characters of the pieces tool inputs are streamed in.
const INPUT_JSON_PIECE_CHARS: usize = 16;

/// Checks the headers and parses a Messages request body.
pub(crate) fn parse(headers: &HeaderMap, body: &Value) -> Result<ChatRequest, RequestError> {
    if !headers.contains_key("x-api-key") {
        return Err(RequestError::new(401, "x-api-key header is required"));
    }
    if !headers.contains_key("anthropic-version") {
        return Err(RequestError::new(
            400,
            "anthropic-version: header is required",
        ));
    }
    let Some(obj) = body.as_object() else {
        return Err(RequestError::new(
            400,
            "There was an issue with your request body: expected a JSON object",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(RequestError::new(400, "model: Field required")),
    };
    let Some(max_tokens) = obj.get("max_tokens").and_then(Value::as_u64) else {
        return Err(RequestError::new(400, "max_tokens: Field required"));
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(RequestError::new(
                400,
                "messages: at least one message is required",
            ));
        }
        _ => return Err(RequestError::new(400, "messages: Field required")),
    };
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let content = |m: &Value| m.get("content").map(text::content_text).unwrap_or_default();
    let system_words = obj
        .get("system")
        .map_or(0, |s| text::words(&text::content_text(s)));
    let input_words = system_words
        + messages
            .iter()
            .map(|m| text::words(&content(m)))
            .sum::<u64>();
    let last_user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(content)
        .unwrap_or_default();
    Ok(ChatRequest {
        model,
        stream,
        include_usage: false,
        wants_json: false,
        max_tokens: Some(max_tokens),
        last_user_text,
        input_words,
    })
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::ToolCalls => "tool_use",
        Finish::Length => "max_tokens",
    }
}

fn usage_json(usage: &Usage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.input,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": usage.cached,
        "cache_creation_input_tokens": 0,
    })
}

/// The content blocks of `c`: a text block (when there is text) then one
/// `tool_use` block per call.
fn content_blocks(c: &Completion) -> Vec<Value> {
    let text = c.text.iter().map(|t| json!({"type": "text", "text": t}));
    let tools = c.tool_calls.iter().map(|call| {
        json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": call.arguments,
        })
    });
    text.chain(tools).collect()
}

/// The full (non-streamed) `message` object.
pub(crate) fn message_json(c: &Completion) -> Value {
    json!({
        "id": c.id,
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": content_blocks(c),
        "stop_reason": stop_reason(c.finish),
        "stop_sequence": null,
        "usage": usage_json(&c.usage, c.usage.output),
    })
}

/// The named events of a streamed answer, from `message_start` to
/// `message_stop`.
pub(crate) fn stream_events(c: &Completion) -> Vec<Bytes> {
    let ping = || sse::named_event("ping", &json!({"type": "ping"}));
    let mut events = vec![sse::named_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": c.id,
            "type": "message",
            "role": "assistant",
            "model": c.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_json(&c.usage, 1),
        }}),
    )];
    let blocks = content_blocks(c);
    if blocks.is_empty() {
        events.push(ping());
    }
    for (index, block) in blocks.iter().enumerate() {
        let is_text = block["type"] == "text";
        let start_block = if is_text {
            json!({"type": "text", "text": ""})
        } else {
            json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}})
        };
        events.push(sse::named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start_block}),
        ));
        if index == 0 {
            events.push(ping());
        }
        let delta = |delta: Value| {
            sse::named_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            )
        };
        if is_text {
            for piece in text::word_pieces(block["text"].as_str().unwrap_or_default()) {
                events.push(delta(json!({"type": "text_delta", "text": piece})));
            }
        } else {
            let input = block["input"].to_string();
            events.push(delta(
                json!({"type": "input_json_delta", "partial_json": ""}),
            ));
            for piece in text::char_pieces(&input, INPUT_JSON_PIECE_CHARS) {
                events.push(delta(
                    json!({"type": "input_json_delta", "partial_json": piece}),
                ));
            }
        }
        events.push(sse::named_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(sse::named_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(c.finish), "stop_sequence": null},
            "usage": {"output_tokens": c.usage.output},
        }),
    ));
    events.push(sse::named_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    events
}

/// The success response for `c`, streamed or not as `req` asked.
pub(crate) fn success(
    req: &ChatRequest,
    c: &Completion,
    chunk_delay: Option<Duration>,
) -> Response {
    if req.stream {
        sse::response(stream_events(c), chunk_delay)
    } else {
        json_response(200, &message_json(c), None)
    }
}

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The error body `{"type": "error", "error": {"type", "message"}}`.
pub(crate) fn error_json(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// An error response with Anthropic's body shape.
pub(crate) fn error(status: u16, message: &str, retry_after: Option<Duration>) -> Response {
    json_response(status, &error_json(status, message), retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        h
    }

    #[test]
    fn parses_a_request() {
        let r = parse(
            &headers(),
            &json!({
                "model": "claude-x",
                "max_tokens": 100,
                "system": [{"type": "text", "text": "be brief"}],
                "messages": [
                    {"role": "user", "content": "hello there"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny today"}]}
                ],
                "stream": true
            }),
        )
        .unwrap();
        assert_eq!(r.model, "claude-x");
        assert!(r.stream);
        assert_eq!(r.max_tokens, Some(100));
        assert_eq!(r.last_user_text, "sunny today");
        assert_eq!(r.input_words, 6);
    }

    #[test]
    fn checks_headers_and_fields() {
        let body =
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
        let mut h = headers();
        h.remove("anthropic-version");
        let e = parse(&h, &body).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("anthropic-version"));
        let mut h = headers();
        h.remove("x-api-key");
        assert_eq!(parse(&h, &body).unwrap_err().status, 401);
        let no_max = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(
            parse(&headers(), &no_max).unwrap_err().message,
            "max_tokens: Field required"
        );
    }

    #[test]
    fn error_types() {
        assert_eq!(
            error_json(529, "busy"),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        );
        assert_eq!(
            error_json(400, "x")["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(error_json(404, "x")["error"]["type"], "not_found_error");
        assert_eq!(error_json(500, "x")["error"]["type"], "api_error");
    }
}
