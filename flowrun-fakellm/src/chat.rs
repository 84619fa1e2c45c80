//! The API-neutral view of a chat request and of the answer to render.
//!
//! `openai.rs` and `anthropic.rs` parse their wire format into a
//! [`ChatRequest`] and render a [`Completion`] back into it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::FakeConfig;
use crate::record::Api;
use crate::reply::{Reply, ToolCall, Usage};
use crate::text;

/// What the fake server needs to know about a request, whatever its API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    /// OpenAI `response_format` of type `json_object` or `json_schema`.
    pub(crate) wants_json: bool,
    /// `max_tokens` / `max_completion_tokens`.
    pub(crate) max_tokens: Option<u64>,
    /// Text of the last `user` message.
    pub(crate) last_user_text: String,
    /// Words across all messages, system prompt included.
    pub(crate) input_words: u64,
}

/// A request the fake server refuses before scripting is consulted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RequestError {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl RequestError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        RequestError {
            status,
            message: message.into(),
        }
    }
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    ToolCalls,
    Length,
}

/// A successful answer, ready to be rendered in either wire format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Completion {
    /// Response id, with the API's prefix (`chatcmpl-` / `msg_`).
    pub(crate) id: String,
    pub(crate) model: String,
    /// Assistant text; `None` for tool calls without text.
    pub(crate) text: Option<String>,
    /// Tool calls, every id filled in.
    pub(crate) tool_calls: Vec<ToolCall>,
    pub(crate) usage: Usage,
    pub(crate) finish: Finish,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

impl Completion {
    /// Builds the answer for `reply`, which must be `Text` or `ToolCalls`
    /// (other variants give an empty text answer).
    pub(crate) fn build(api: Api, req: &ChatRequest, reply: Reply) -> Completion {
        let seq = next_id();
        let (id, call_prefix) = match api {
            Api::OpenAi => (format!("chatcmpl-fakellm{seq:012}"), "call_fakellm"),
            Api::Anthropic => (format!("msg_fakellm{seq:012}"), "toolu_fakellm"),
        };
        let mut completion = Completion {
            id,
            model: req.model.clone(),
            text: None,
            tool_calls: Vec::new(),
            usage: Usage::default(),
            finish: Finish::Stop,
        };
        match reply {
            Reply::Text {
                text,
                usage,
                truncated,
            } => {
                let (text, finish) =
                    match req.max_tokens.and_then(|m| text::truncate_words(&text, m)) {
                        Some(cut) => (cut.to_owned(), Finish::Length),
                        None if truncated => (text, Finish::Length),
                        None => (text, Finish::Stop),
                    };
                completion.usage = usage.unwrap_or(Usage::new(req.input_words, text::words(&text)));
                completion.text = Some(text);
                completion.finish = finish;
            }
            Reply::ToolCalls { calls, text, usage } => {
                let calls: Vec<ToolCall> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut call)| {
                        if call.id.is_empty() {
                            call.id = format!("{call_prefix}{seq:012}_{i}");
                        }
                        call
                    })
                    .collect();
                let output = text.as_deref().map_or(0, text::words)
                    + calls
                        .iter()
                        .map(|c| text::words(&c.name) + text::words(&c.arguments.to_string()))
                        .sum::<u64>();
                completion.usage = usage.unwrap_or(Usage::new(req.input_words, output));
                completion.text = text;
                completion.tool_calls = calls;
                completion.finish = Finish::ToolCalls;
            }
            _ => completion.text = Some(String::new()),
        }
        completion
    }
}

/// The reply used when nothing is scripted: the configured fixed reply, or
/// `{"echo": "<last user text>"}` when JSON output was asked for, or
/// `echo: <last user text>`.
pub(crate) fn default_reply(req: &ChatRequest, config: &FakeConfig) -> Reply {
    if let Some(fixed) = &config.fixed_reply {
        Reply::text(fixed.clone())
    } else if req.wants_json {
        let quoted = serde_json::Value::String(req.last_user_text.clone()).to_string();
        Reply::text(format!("{{\"echo\": {quoted}}}"))
    } else {
        Reply::text(format!("echo: {}", req.last_user_text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            stream: false,
            include_usage: false,
            wants_json: false,
            max_tokens: None,
            last_user_text: "say \"hi\" now".into(),
            input_words: 7,
        }
    }

    #[test]
    fn echo_and_json_echo() {
        let mut r = req();
        assert_eq!(
            default_reply(&r, &FakeConfig::default()),
            Reply::text("echo: say \"hi\" now")
        );
        r.wants_json = true;
        let Reply::Text { text, .. } = default_reply(&r, &FakeConfig::default()) else {
            panic!("text expected")
        };
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, json!({"echo": "say \"hi\" now"}));
        let fixed = FakeConfig::default().with_fixed_reply("fixed");
        assert_eq!(default_reply(&r, &fixed), Reply::text("fixed"));
    }

    #[test]
    fn text_usage_and_truncation() {
        let mut r = req();
        let c = Completion::build(Api::OpenAi, &r, Reply::text("a b c d"));
        assert_eq!(c.usage, Usage::new(7, 4));
        assert_eq!(c.finish, Finish::Stop);
        assert!(c.id.starts_with("chatcmpl-"));
        r.max_tokens = Some(2);
        let c = Completion::build(Api::Anthropic, &r, Reply::text("a b c d"));
        assert_eq!(c.text.as_deref(), Some("a b"));
        assert_eq!(c.usage, Usage::new(7, 2));
        assert_eq!(c.finish, Finish::Length);
        assert!(c.id.starts_with("msg_"));
    }

    #[test]
    fn tool_call_ids_are_filled() {
        let reply = Reply::tool_calls([
            ToolCall::new("mine", "f", json!({})),
            ToolCall::named("g", json!({"a": 1})),
        ]);
        let c = Completion::build(Api::Anthropic, &req(), reply);
        assert_eq!(c.tool_calls[0].id, "mine");
        assert!(c.tool_calls[1].id.starts_with("toolu_"));
        assert_eq!(c.finish, Finish::ToolCalls);
        assert_eq!(c.text, None);
        // "f" + "{}" + "g" + "{\"a\":1}"
        assert_eq!(c.usage.output, 4);
    }
}
