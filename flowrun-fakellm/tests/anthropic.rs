//! Integration tests of the Anthropic Messages endpoint: echo, the SSE
//! event sequence, tool use, header checks and error shapes.

mod common;

use std::time::Duration;

use common::{SseEvent, anthropic_body, anthropic_request, client, post_anthropic, read_sse};
use flowrun_fakellm::{Api, FakeConfig, FakeLlm, REDACTED, Reply, ToolCall, Usage};
use serde_json::{Value, json};

async fn fake() -> FakeLlm {
    FakeLlm::start(FakeConfig::default()).await.unwrap()
}

fn conversation(stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "system": "You are very terse",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok then"}]},
            {"role": "user", "content": [{"type": "text", "text": "tell me a story"}]}
        ],
        "stream": stream
    })
}

#[tokio::test]
async fn echo_message_with_usage() {
    let fake = fake().await;
    let response = post_anthropic(&fake, &conversation(false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    let mut rest = body.clone();
    rest.as_object_mut().unwrap().remove("id");
    // 4 system + 1 + 2 + 4 words in, 5 words out.
    assert_eq!(
        rest,
        json!({
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": "echo: tell me a story"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 11,
                "output_tokens": 5,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0
            }
        })
    );

    let recorded = fake.last_request().unwrap();
    assert_eq!(recorded.api, Api::Anthropic);
    assert_eq!(recorded.path, "/v1/messages");
    assert_eq!(recorded.model.as_deref(), Some("claude-test"));
    assert_eq!(recorded.header("x-api-key"), Some(REDACTED));
    assert_eq!(recorded.header("anthropic-version"), Some("2023-06-01"));
    assert!(!recorded.stream);
    assert!(!format!("{recorded:?}").contains("secret"));
}

fn event_names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_deref().unwrap()).collect()
}

#[tokio::test]
async fn stream_event_sequence() {
    let fake = fake().await;
    let events = read_sse(post_anthropic(&fake, &conversation(true)).await).await;
    assert_eq!(
        event_names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = events.iter().map(SseEvent::json).collect();
    for (event, d) in events.iter().zip(&data) {
        assert_eq!(d["type"], event.event.as_deref().unwrap());
    }
    let message = &data[0]["message"];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-test");
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["stop_reason"], Value::Null);
    assert_eq!(message["usage"]["input_tokens"], 11);
    assert_eq!(
        data[1],
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    let text: String = data[3..8]
        .iter()
        .map(|d| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "echo: tell me a story");
    assert_eq!(data[8], json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        data[9],
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 5}
        })
    );
    assert_eq!(data[10], json!({"type": "message_stop"}));
    assert!(fake.last_request().unwrap().stream);
}

fn two_calls() -> Reply {
    Reply::tool_calls([
        ToolCall::new(
            "toolu_a",
            "get_weather",
            json!({"city": "Paris", "unit": "celsius"}),
        ),
        ToolCall::named("get_time", json!({"timezone": "Europe/Paris"})),
    ])
    .with_text("Checking both.")
}

#[tokio::test]
async fn parallel_tool_use() {
    let fake = fake().await;
    fake.push(two_calls());
    let body: Value = post_anthropic(&fake, &anthropic_body("claude-test", "weather?"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["stop_reason"], "tool_use");
    let content = body["content"].as_array().unwrap();
    assert_eq!(content.len(), 3);
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "Checking both."})
    );
    assert_eq!(
        content[1],
        json!({"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}})
    );
    assert_eq!(content[2]["type"], "tool_use");
    assert!(content[2]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(content[2]["name"], "get_time");
    assert_eq!(content[2]["input"], json!({"timezone": "Europe/Paris"}));
}

#[tokio::test]
async fn streamed_tool_use() {
    let fake = fake().await;
    fake.push(two_calls());
    let mut body = anthropic_body("claude-test", "weather?");
    body["stream"] = json!(true);
    let events = read_sse(post_anthropic(&fake, &body).await).await;
    let data: Vec<Value> = events.iter().map(SseEvent::json).collect();
    assert_eq!(events[0].event.as_deref(), Some("message_start"));
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("message_stop")
    );
    assert_eq!(
        event_names(&events)
            .iter()
            .filter(|n| **n == "ping")
            .count(),
        1
    );

    // Reassemble the blocks the way Anthropic clients do.
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial: Vec<String> = Vec::new();
    let mut json_pieces = 0;
    for d in &data {
        match d["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(d["index"], blocks.len());
                blocks.push(d["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let i = d["index"].as_u64().unwrap() as usize;
                match d["delta"]["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = blocks[i]["text"].as_str().unwrap().to_owned();
                        blocks[i]["text"] = json!(t + d["delta"]["text"].as_str().unwrap());
                    }
                    "input_json_delta" => {
                        json_pieces += 1;
                        partial[i].push_str(d["delta"]["partial_json"].as_str().unwrap());
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = d["index"].as_u64().unwrap() as usize;
                if blocks[i]["type"] == "tool_use" {
                    assert_eq!(blocks[i]["input"], json!({}));
                    blocks[i]["input"] = serde_json::from_str(&partial[i]).unwrap();
                }
            }
            _ => {}
        }
    }
    assert_eq!(blocks[0], json!({"type": "text", "text": "Checking both."}));
    assert_eq!(
        blocks[1],
        json!({"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}})
    );
    assert_eq!(blocks[2]["name"], "get_time");
    assert_eq!(blocks[2]["input"], json!({"timezone": "Europe/Paris"}));
    assert!(json_pieces > 4);
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn header_checks() {
    let fake = fake().await;
    let url = format!("{}/v1/messages", fake.anthropic_base_url());
    let r = client()
        .post(&url)
        .header("x-api-key", "k")
        .json(&anthropic_body("claude-test", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"}})
    );
    let r = client()
        .post(&url)
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic_body("claude-test", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    // Rejected requests are recorded too.
    assert_eq!(fake.request_count(), 2);
    assert_eq!(fake.reply_counts().error, 2);
}

#[tokio::test]
async fn scripted_errors_have_anthropic_shape() {
    let fake = fake().await;
    let cases = [
        (429, "rate_limit_error"),
        (529, "overloaded_error"),
        (500, "api_error"),
        (404, "not_found_error"),
        (400, "invalid_request_error"),
        (401, "authentication_error"),
    ];
    for (status, _) in cases {
        let reply = Reply::error(status, format!("status {status}"));
        fake.push(if status == 429 {
            reply.with_retry_after(Duration::from_secs(7))
        } else {
            reply
        });
    }
    for (status, kind) in cases {
        let r = post_anthropic(&fake, &anthropic_body("claude-test", "x")).await;
        assert_eq!(r.status().as_u16(), status);
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(retry_after.as_deref(), (status == 429).then_some("7"));
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"type": "error", "error": {"type": kind, "message": format!("status {status}")}})
        );
    }
}

#[tokio::test]
async fn per_model_queue_usage_and_max_tokens() {
    let fake = fake().await;
    fake.push(Reply::text("global"));
    fake.push_for_model(
        "claude-a",
        Reply::text("cached").with_usage(Usage::new(50, 3).with_cached(40)),
    );
    let body: Value = post_anthropic(&fake, &anthropic_body("claude-a", "x"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["content"][0]["text"], "cached");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 50, "output_tokens": 3, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 0})
    );
    let body: Value = post_anthropic(&fake, &anthropic_body("claude-a", "x"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["content"][0]["text"], "global");

    let mut req = anthropic_body("claude-a", "one two three");
    req["max_tokens"] = json!(2);
    let body: Value = post_anthropic(&fake, &req).await.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "echo: one");
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn reset_and_hang() {
    let fake = fake().await;
    fake.push(Reply::reset());
    fake.push(Reply::hang());
    let err = anthropic_request(&client(), &fake, &anthropic_body("claude-test", "x"))
        .send()
        .await
        .unwrap_err();
    assert!(
        common::error_chain(&err).to_lowercase().contains("reset"),
        "{err:?}"
    );
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = anthropic_request(&quick, &fake, &anthropic_body("claude-test", "x"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let counts = fake.reply_counts();
    assert_eq!((counts.reset, counts.hang, counts.total()), (1, 1, 2));
}
