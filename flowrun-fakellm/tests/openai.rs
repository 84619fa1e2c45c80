//! Integration tests of the OpenAI chat-completions endpoint: echo, SSE,
//! JSON mode, tool calls, errors, scripting order and request recording.

mod common;

use std::time::{Duration, Instant};

use common::{SseEvent, client, openai_body, post_openai, read_sse};
use flowrun_fakellm::{Api, FakeConfig, FakeLlm, REDACTED, Reply, ReplyCounts, ToolCall, Usage};
use serde_json::{Value, json};

async fn fake() -> FakeLlm {
    FakeLlm::start(FakeConfig::default()).await.unwrap()
}

fn conversation(stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse"},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": [{"type": "text", "text": "hello brave new world"}]}
        ],
        "stream": stream,
        "temperature": 0.2
    })
}

#[tokio::test]
async fn echo_with_usage() {
    let fake = fake().await;
    let response = post_openai(&fake, &conversation(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();

    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["system_fingerprint"], Value::Null);
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello brave new world", "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }])
    );
    // 3 + 2 + 2 + 4 words in, 5 words out.
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": 11,
            "completion_tokens": 5,
            "total_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}
        })
    );
    assert_eq!(
        fake.reply_counts(),
        ReplyCounts {
            text: 1,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn stream_reassembles_with_usage_chunk_and_done() {
    let fake = fake().await;
    let mut body = conversation(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = read_sse(post_openai(&fake, &body).await).await;

    assert!(events.iter().all(|e| e.event.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(SseEvent::json)
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["model"], "gpt-test");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    assert_eq!(chunks[0]["usage"], Value::Null);

    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 11);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 16);

    let (finish_chunk, content_chunks) = rest.split_last().unwrap();
    assert_eq!(finish_chunk["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish_chunk["choices"][0]["delta"], json!({}));
    let pieces: Vec<&str> = content_chunks[1..]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, ["echo:", " hello", " brave", " new", " world"]);
    assert!(
        content_chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );

    let recorded = fake.last_request().unwrap();
    assert!(recorded.stream);
    assert_eq!(recorded.body, body);
}

#[tokio::test]
async fn stream_without_usage_has_no_usage_chunk() {
    let fake = fake().await;
    let events = read_sse(post_openai(&fake, &conversation(true)).await).await;
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(SseEvent::json)
        .collect();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: hello brave new world");
}

#[tokio::test]
async fn json_mode_echoes_json() {
    let fake = fake().await;
    for format in [
        json!({"type": "json_object"}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ] {
        let mut body = openai_body("gpt-test", "say \"hi\"");
        body["response_format"] = format;
        let body: Value = post_openai(&fake, &body).await.json().await.unwrap();
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content, r#"{"echo": "say \"hi\""}"#);
        let parsed: Value = serde_json::from_str(content).unwrap();
        assert_eq!(parsed, json!({"echo": "say \"hi\""}));
    }
}

fn two_calls() -> Reply {
    Reply::tool_calls([
        ToolCall::new(
            "call_a",
            "get_weather",
            json!({"city": "Paris", "unit": "celsius"}),
        ),
        ToolCall::named("get_time", json!({"timezone": "Europe/Paris"})),
    ])
}

#[tokio::test]
async fn parallel_tool_calls() {
    let fake = fake().await;
    fake.push(two_calls());
    let body: Value = post_openai(&fake, &openai_body("gpt-test", "weather?"))
        .await
        .json()
        .await
        .unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "call_a");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "celsius"}));
    assert!(calls[1]["id"].as_str().unwrap().starts_with("call_"));
    assert_ne!(calls[1]["id"], calls[0]["id"]);
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_eq!(
        calls[1]["function"]["arguments"],
        r#"{"timezone":"Europe/Paris"}"#
    );
    assert_eq!(fake.reply_counts().tool_calls, 1);
}

#[tokio::test]
async fn streamed_tool_calls_with_text() {
    let fake = fake().await;
    fake.push(two_calls().with_text("Checking both."));
    let mut body = openai_body("gpt-test", "weather?");
    body["stream"] = json!(true);
    let events = read_sse(post_openai(&fake, &body).await).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(SseEvent::json)
        .collect();

    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Checking both.");

    // Reassemble the calls the way OpenAI clients do: by index.
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut argument_pieces = 0;
    for chunk in &chunks {
        let Some(deltas) = chunk["choices"][0]["delta"]["tool_calls"].as_array() else {
            continue;
        };
        assert_eq!(deltas.len(), 1);
        let d = &deltas[0];
        let index = d["index"].as_u64().unwrap() as usize;
        if let Some(id) = d["id"].as_str() {
            assert_eq!(index, calls.len());
            assert_eq!(d["type"], "function");
            calls.push((
                id.to_owned(),
                d["function"]["name"].as_str().unwrap().to_owned(),
                String::new(),
            ));
        }
        let piece = d["function"]["arguments"].as_str().unwrap();
        if !piece.is_empty() {
            argument_pieces += 1;
        }
        calls[index].2.push_str(piece);
    }
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, "call_a");
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].2).unwrap(),
        json!({"city": "Paris", "unit": "celsius"})
    );
    assert_eq!(calls[1].1, "get_time");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].2).unwrap(),
        json!({"timezone": "Europe/Paris"})
    );
    assert!(
        argument_pieces > 2,
        "arguments must arrive in several pieces"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn scripted_errors_have_openai_shape_and_retry_after() {
    let fake = fake().await;
    fake.push(
        Reply::error(429, "Rate limit reached").with_retry_after(Duration::from_millis(1500)),
    );
    fake.push(Reply::error(500, "boom"));
    fake.push(Reply::error(401, "Incorrect API key provided"));

    let r = post_openai(&fake, &openai_body("gpt-test", "x")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(r.headers()["retry-after-ms"], "1500");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
    );

    let r = post_openai(&fake, &openai_body("gpt-test", "x")).await;
    assert_eq!(r.status(), 500);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}})
    );

    let r = post_openai(&fake, &openai_body("gpt-test", "x")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );

    // A streamed request gets the error as plain JSON, like the real API.
    fake.push(Reply::error(503, "unavailable"));
    let mut body = openai_body("gpt-test", "x");
    body["stream"] = json!(true);
    let r = post_openai(&fake, &body).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(fake.reply_counts().error, 4);
}

#[tokio::test]
async fn invalid_requests_are_rejected_and_recorded() {
    let fake = fake().await;
    let r = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );

    let r = post_openai(&fake, &json!({"model": "m", "messages": []})).await;
    assert_eq!(r.status(), 400);

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, json!("{not json"));
    assert_eq!(requests[0].model, None);
    assert_eq!(requests[1].model.as_deref(), Some("m"));
}

#[tokio::test]
async fn model_queue_precedes_global_queue_then_echo() {
    let fake = fake().await;
    fake.push(Reply::text("global one"));
    fake.push(Reply::text("global two"));
    fake.push_for_model("gpt-a", Reply::text("for a"));
    fake.push_for_model("gpt-a", Reply::error(500, "a failed"));
    assert_eq!(fake.pending_replies(), 4);

    let content = |v: Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let r = post_openai(&fake, &openai_body("gpt-b", "hi")).await;
    assert_eq!(content(r.json().await.unwrap()), "global one");
    let r = post_openai(&fake, &openai_body("gpt-a", "hi")).await;
    assert_eq!(content(r.json().await.unwrap()), "for a");
    let r = post_openai(&fake, &openai_body("gpt-a", "hi")).await;
    assert_eq!(r.status(), 500);
    let r = post_openai(&fake, &openai_body("gpt-a", "hi")).await;
    assert_eq!(content(r.json().await.unwrap()), "global two");
    let r = post_openai(&fake, &openai_body("gpt-a", "hi")).await;
    assert_eq!(content(r.json().await.unwrap()), "echo: hi");
    assert_eq!(fake.pending_replies(), 0);

    assert_eq!(fake.request_count(), 5);
    assert_eq!(fake.requests_for_model("gpt-a").len(), 4);
    assert_eq!(fake.requests_for_model("gpt-b").len(), 1);
    assert!(fake.requests_for_model("gpt-c").is_empty());
}

#[tokio::test]
async fn explicit_usage_and_truncation() {
    let fake = fake().await;
    fake.push(
        Reply::text("cached answer")
            .with_usage(Usage::new(100, 20).with_cached(80).with_reasoning(12)),
    );
    let body: Value = post_openai(&fake, &openai_body("gpt-test", "x"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 80},
            "completion_tokens_details": {"reasoning_tokens": 12}
        })
    );

    let mut req = openai_body("gpt-test", "one two three four five");
    req["max_completion_tokens"] = json!(3);
    let body: Value = post_openai(&fake, &req).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: one two");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);

    fake.push(Reply::text("cut").truncated());
    let body: Value = post_openai(&fake, &openai_body("gpt-test", "x"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn secrets_are_redacted_in_recordings() {
    let fake = fake().await;
    client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .bearer_auth("sk-live-very-secret")
        .header("X-Api-Key", "another-secret")
        .header("OpenAI-Organization", "org-123")
        .json(&openai_body("gpt-test", "x"))
        .send()
        .await
        .unwrap();
    let r = fake.last_request().unwrap();
    assert_eq!(r.api, Api::OpenAi);
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.headers["authorization"], REDACTED);
    assert_eq!(r.headers["x-api-key"], REDACTED);
    assert_eq!(r.headers["openai-organization"], "org-123");
    assert!(
        r.headers
            .keys()
            .all(|k| k.chars().all(|c| !c.is_ascii_uppercase()))
    );
    assert!(!format!("{:?}", fake.requests()).contains("secret"));
}

#[tokio::test]
async fn delay_latency_and_chunk_delay() {
    let fake = FakeLlm::start(
        FakeConfig::default()
            .with_latency(Duration::from_millis(100))
            .with_stream_chunk_delay(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    fake.push(Reply::text("late").delayed(Duration::from_millis(150)));
    let start = Instant::now();
    let body: Value = post_openai(&fake, &openai_body("gpt-test", "x"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(body["choices"][0]["message"]["content"], "late");

    // 1 role + 4 words + finish + [DONE] = 7 events, 6 pauses of 20 ms.
    let mut req = openai_body("gpt-test", "a b c");
    req["stream"] = json!(true);
    let start = Instant::now();
    let events = read_sse(post_openai(&fake, &req).await).await;
    assert_eq!(events.len(), 7);
    assert!(
        start.elapsed() >= Duration::from_millis(100 + 6 * 20),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn reset_gives_a_connection_error() {
    let fake = fake().await;
    fake.push(Reply::reset());
    let err = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .json(&openai_body("gpt-test", "x"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout());
    assert!(err.status().is_none());
    let chain = common::error_chain(&err).to_lowercase();
    assert!(chain.contains("reset"), "{chain}");
    assert_eq!(fake.reply_counts().reset, 1);
    assert_eq!(fake.request_count(), 1);
    // The server keeps serving other connections.
    let r = post_openai(&fake, &openai_body("gpt-test", "after")).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn hang_times_out_and_shutdown_releases_it() {
    let fake = fake().await;
    fake.push(Reply::hang());
    let timeout_client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = timeout_client
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .json(&openai_body("gpt-test", "x"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(fake.reply_counts().hang, 1);

    // A request hung without client timeout ends when the server stops.
    fake.push(Reply::hang());
    let url = format!("{}/chat/completions", fake.openai_base_url());
    let pending = tokio::spawn(async move {
        client()
            .post(url)
            .json(&openai_body("gpt-test", "x"))
            .send()
            .await
    });
    while fake.request_count() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    fake.shutdown().await;
    let result = pending.await.unwrap();
    assert!(result.is_err());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn healthz_unknown_paths_and_shutdown() {
    let fake = fake().await;
    let r = client()
        .get(format!("{}/healthz", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    let r = client()
        .post(format!("{}/v1/completions", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_url"
    );
    assert_eq!(fake.request_count(), 0);

    let url = format!("{}/healthz", fake.base_url());
    fake.shutdown().await;
    fake.shutdown().await;
    let err = client().get(url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn drop_stops_the_server() {
    let url = {
        let fake = fake().await;
        format!("{}/healthz", fake.base_url())
    };
    // The accept loop notices the cancellation on its next poll.
    let mut refused = false;
    for _ in 0..100 {
        if client().get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused);
}
