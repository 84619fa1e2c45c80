//! Helpers shared by the integration tests: HTTP calls to a `FakeLlm` and
//! a small SSE parser.

#![allow(dead_code)]

use std::error::Error as _;
use std::time::Duration;

use flowrun_fakellm::FakeLlm;
use futures::StreamExt;
use serde_json::Value;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// POST `body` to the OpenAI endpoint with a bearer key.
pub async fn post_openai(fake: &FakeLlm, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .bearer_auth("sk-test-secret")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// POST `body` to the Anthropic endpoint with both required headers.
pub async fn post_anthropic(fake: &FakeLlm, body: &Value) -> reqwest::Response {
    anthropic_request(&client(), fake, body)
        .send()
        .await
        .unwrap()
}

pub fn anthropic_request(
    client: &reqwest::Client,
    fake: &FakeLlm,
    body: &Value,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{}/v1/messages", fake.anthropic_base_url()))
        .header("x-api-key", "sk-ant-test-secret")
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

/// An OpenAI body with one user message.
pub fn openai_body(model: &str, user: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": user}]})
}

/// An Anthropic body with one user message.
pub fn anthropic_body(model: &str, user: &str) -> Value {
    serde_json::json!({"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": user}]})
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", self.data))
    }
}

/// Reads a whole `text/event-stream` body and splits it into events.
pub async fn read_sse(response: reqwest::Response) -> Vec<SseEvent> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut raw = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        raw.extend_from_slice(&chunk.unwrap());
    }
    let raw = String::from_utf8(raw).unwrap();
    assert!(
        raw.ends_with("\n\n"),
        "stream must end with a blank line: {raw:?}"
    );
    raw.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            SseEvent {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// The error and all its sources, joined, for matching on messages.
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(" <- ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
