//! The OpenAI and Anthropic providers against the in-process fake LLM server
//! (`flowrun-fakellm`), plus a raw TCP capture to check the exact auth headers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowrun_core::provider::anthropic::AnthropicProvider;
use flowrun_core::provider::openai::OpenAiProvider;
use flowrun_core::provider::{
    ChatRequest, ChatResponse, DeltaFn, Message, Params, Provider, ProviderError, ResponseFormat,
    Role, Usage,
};
use flowrun_fakellm::{FakeConfig, FakeLlm, REDACTED, Reply, Usage as FakeUsage};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "sk-test-Zx81-very-secret";

async fn fake() -> FakeLlm {
    FakeLlm::start(FakeConfig::default()).await.unwrap()
}

fn openai(fake: &FakeLlm) -> OpenAiProvider {
    OpenAiProvider::new(
        reqwest::Client::new(),
        fake.openai_base_url(),
        Some(KEY.into()),
    )
}

fn anthropic(fake: &FakeLlm) -> AnthropicProvider {
    AnthropicProvider::new(
        reqwest::Client::new(),
        fake.anthropic_base_url(),
        Some(KEY.into()),
    )
}

fn request(model: &str, response_format: ResponseFormat) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![
            Message::new(Role::System, "You are terse."),
            Message::new(Role::User, "Say hello."),
            Message::new(Role::User, "Please."),
        ],
        params: Params {
            temperature: Some(0.25),
            max_tokens: Some(100),
            ..Params::default()
        },
        response_format,
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
    }
}

/// A delta callback and the deltas it has seen.
fn recorder() -> (Arc<Mutex<Vec<String>>>, Box<DeltaFn>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (
        seen,
        Box::new(move |d: &str| sink.lock().unwrap().push(d.to_owned())),
    )
}

/// Runs one request streamed; returns the reply and the deltas.
async fn streamed(provider: &dyn Provider, req: &ChatRequest) -> (ChatResponse, Vec<String>) {
    let (seen, on_delta) = recorder();
    let reply = provider.chat(req, Some(on_delta.as_ref())).await.unwrap();
    let deltas = seen.lock().unwrap().clone();
    (reply, deltas)
}

async fn error_for(provider: &dyn Provider, reply: Reply, fake: &FakeLlm) -> ProviderError {
    fake.push(reply);
    let err = provider
        .chat(&request("m", ResponseFormat::Text), None)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(KEY), "{err}");
    err
}

/// Checks the neutral parts of two replies to the same scripted answer.
fn assert_same_reply(streamed: &ChatResponse, whole: &ChatResponse) {
    assert_eq!(streamed.text, whole.text);
    assert_eq!(streamed.usage, whole.usage);
    assert_eq!(streamed.finish_reason, whole.finish_reason);
    assert_eq!(streamed.model, whole.model);
}

// ---- OpenAI ----

#[tokio::test]
async fn openai_reply_and_usage_are_mapped() {
    let fake = fake().await;
    let usage = FakeUsage::new(11, 4).with_cached(3).with_reasoning(2);
    fake.push(Reply::text("Hello there, friend.").with_usage(usage));
    let reply = openai(&fake)
        .chat(&request("gpt-a", ResponseFormat::Text), None)
        .await
        .unwrap();
    assert_eq!(reply.text, "Hello there, friend.");
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 11,
            output_tokens: 4,
            cached_tokens: 3,
            reasoning_tokens: 2
        }
    );
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
    assert_eq!(reply.model, "gpt-a");
    assert_eq!(reply.raw["object"], "chat.completion");
    assert_eq!(
        reply.raw["choices"][0]["message"]["content"],
        "Hello there, friend."
    );

    let recorded = fake.last_request().unwrap();
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.header("authorization"), Some(REDACTED));
    assert!(
        recorded
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        recorded.body,
        json!({
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello."},
                {"role": "user", "content": "Please."},
            ],
            "model": "gpt-a",
            "temperature": 0.25,
            "max_tokens": 100,
        })
    );
}

#[tokio::test]
async fn openai_truncated_reply_reports_length() {
    let fake = fake().await;
    fake.push(Reply::text("cut short").truncated());
    let reply = openai(&fake)
        .chat(&request("gpt-a", ResponseFormat::Text), None)
        .await
        .unwrap();
    assert_eq!(reply.finish_reason.as_deref(), Some("length"));
}

#[tokio::test]
async fn openai_no_key_sends_no_authorization() {
    let fake = fake().await;
    let provider = OpenAiProvider::new(reqwest::Client::new(), fake.openai_base_url(), None);
    let reply = provider
        .chat(&request("local", ResponseFormat::Text), None)
        .await
        .unwrap();
    assert_eq!(reply.text, "echo: Please.");
    assert_eq!(fake.last_request().unwrap().header("authorization"), None);
}

#[tokio::test]
async fn openai_stream_equals_whole_reply() {
    let fake = fake().await;
    let scripted =
        Reply::text("One two three four five.").with_usage(FakeUsage::new(9, 5).with_cached(1));
    fake.push_all([scripted.clone(), scripted]);
    let provider = openai(&fake);
    let req = request("gpt-s", ResponseFormat::Text);
    let whole = provider.chat(&req, None).await.unwrap();
    let (reply, deltas) = streamed(&provider, &req).await;

    assert!(deltas.len() >= 5, "{deltas:?}");
    assert_eq!(deltas.concat(), "One two three four five.");
    assert_same_reply(&reply, &whole);
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 9,
            output_tokens: 5,
            cached_tokens: 1,
            reasoning_tokens: 0
        }
    );
    assert_eq!(
        reply.raw["choices"][0]["message"]["content"],
        whole.raw["choices"][0]["message"]["content"]
    );
    assert_eq!(reply.raw["usage"], whole.raw["usage"]);

    let body = fake.last_request().unwrap().body;
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn openai_json_formats_are_sent_in_wire_shape() {
    let fake = fake().await;
    let provider = openai(&fake);
    let schema = json!({"type": "object", "properties": {"greeting": {"type": "string"}}});
    let req = request(
        "gpt-j",
        ResponseFormat::Json {
            schema: Some(schema.clone()),
        },
    );
    let reply = provider.chat(&req, None).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&reply.text).unwrap(),
        json!({"echo": "Please."})
    );
    assert_eq!(
        fake.last_request().unwrap().body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": false}})
    );

    provider
        .chat(
            &request("gpt-j", ResponseFormat::Json { schema: None }),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        fake.last_request().unwrap().body["response_format"],
        json!({"type": "json_object"})
    );
}

#[tokio::test]
async fn openai_http_errors_are_classified() {
    let fake = fake().await;
    let p = openai(&fake);
    let limited =
        Reply::error(429, "Rate limit reached").with_retry_after(Duration::from_millis(1500));
    assert_eq!(
        error_for(&p, limited, &fake).await,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_millis(1500)),
            message: "Rate limit reached".into()
        }
    );
    assert_eq!(
        error_for(&p, Reply::error(500, "The server had an error"), &fake).await,
        ProviderError::Server {
            status: 500,
            retry_after: None,
            message: "The server had an error".into()
        }
    );
    assert_eq!(
        error_for(&p, Reply::error(400, "Invalid 'messages'"), &fake).await,
        ProviderError::InvalidRequest {
            status: 400,
            message: "Invalid 'messages'".into()
        }
    );
    assert_eq!(
        error_for(
            &p,
            Reply::error(404, "The model `nope` does not exist"),
            &fake
        )
        .await,
        ProviderError::InvalidRequest {
            status: 404,
            message: "The model `nope` does not exist".into()
        }
    );
    let echoed_key = format!("Incorrect API key provided: {KEY}.");
    assert_eq!(
        error_for(&p, Reply::error(401, echoed_key), &fake).await,
        ProviderError::Auth {
            status: 401,
            message: "Incorrect API key provided: <redacted>.".into()
        }
    );
}

#[tokio::test]
async fn openai_stream_error_before_first_event_maps_like_whole() {
    let fake = fake().await;
    fake.push(Reply::error(503, "overloaded").with_retry_after(Duration::from_secs(2)));
    let (_, on_delta) = recorder();
    let err = openai(&fake)
        .chat(&request("m", ResponseFormat::Text), Some(on_delta.as_ref()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Server {
            status: 503,
            retry_after: Some(Duration::from_secs(2)),
            message: "overloaded".into()
        }
    );
}

#[tokio::test]
async fn openai_reset_and_timeout_are_transport_failures() {
    let fake = fake().await;
    let err = error_for(&openai(&fake), Reply::reset(), &fake).await;
    assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("/v1/chat/completions"), "{err}");
    assert!(err.is_retryable());

    let provider = openai(&fake).with_timeout(Duration::from_millis(200));
    let err = error_for(&provider, Reply::hang(), &fake).await;
    assert_eq!(err, ProviderError::Timeout(Duration::from_millis(200)));
}

#[tokio::test]
async fn openai_refused_connection_is_transport() {
    let port = unused_port().await;
    let provider = OpenAiProvider::new(
        reqwest::Client::new(),
        format!("http://127.0.0.1:{port}/v1"),
        Some(KEY.into()),
    );
    let err = provider
        .chat(&request("m", ResponseFormat::Text), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Transport(m) if m.contains("127.0.0.1")),
        "{err:?}"
    );
    assert!(!err.to_string().contains(KEY));
}

#[tokio::test]
async fn openai_key_goes_in_the_bearer_header() {
    let (base, captured) = capture_once(401, r#"{"error":{"message":"no"}}"#).await;
    let provider = OpenAiProvider::new(
        reqwest::Client::new(),
        format!("{base}/v1"),
        Some(KEY.into()),
    );
    let err = provider
        .chat(&request("m", ResponseFormat::Text), None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Auth {
            status: 401,
            message: "no".into()
        }
    );
    let head = captured.await.unwrap();
    assert!(
        head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nauthorization: Bearer {KEY}\r\n")),
        "{head}"
    );
}

#[tokio::test]
async fn openai_server_ignoring_stream_still_answers() {
    let body = r#"{"choices":[{"message":{"content":"all at once"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#;
    let (base, captured) = capture_once(200, body).await;
    let provider = OpenAiProvider::new(reqwest::Client::new(), format!("{base}/v1"), None);
    let (reply, deltas) = streamed(&provider, &request("tiny", ResponseFormat::Text)).await;
    assert_eq!(deltas, ["all at once"]);
    assert_eq!(reply.text, "all at once");
    assert_eq!(reply.model, "tiny");
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 2,
            output_tokens: 3,
            ..Usage::default()
        }
    );
    assert!(!captured.await.unwrap().contains("authorization:"));
}

// ---- Anthropic ----

#[tokio::test]
async fn anthropic_reply_and_usage_are_mapped() {
    let fake = fake().await;
    fake.push(Reply::text("Hello there, friend.").with_usage(FakeUsage::new(20, 5).with_cached(7)));
    let reply = anthropic(&fake)
        .chat(&request("claude-a", ResponseFormat::Text), None)
        .await
        .unwrap();
    assert_eq!(reply.text, "Hello there, friend.");
    // input_tokens reported = input + cache reads (+ cache writes, 0 here).
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 27,
            output_tokens: 5,
            cached_tokens: 7,
            reasoning_tokens: 0
        }
    );
    assert_eq!(reply.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!(reply.model, "claude-a");
    assert_eq!(reply.raw["type"], "message");

    let recorded = fake.last_request().unwrap();
    assert_eq!(recorded.path, "/v1/messages");
    assert_eq!(recorded.header("x-api-key"), Some(REDACTED));
    assert_eq!(recorded.header("anthropic-version"), Some("2023-06-01"));
    assert!(
        recorded
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(recorded.header("authorization"), None);
    assert_eq!(
        recorded.body,
        json!({
            "model": "claude-a",
            "max_tokens": 100,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": "Say hello.\n\nPlease."}],
            "temperature": 0.25,
        })
    );
}

#[tokio::test]
async fn anthropic_defaults_max_tokens() {
    let fake = fake().await;
    let mut req = request("claude-a", ResponseFormat::Text);
    req.params = Params::default();
    let reply = anthropic(&fake).chat(&req, None).await.unwrap();
    assert_eq!(reply.text, "echo: Say hello.\n\nPlease.");
    assert_eq!(fake.last_request().unwrap().body["max_tokens"], 4096);
}

#[tokio::test]
async fn anthropic_stream_equals_whole_reply() {
    let fake = fake().await;
    let scripted =
        Reply::text("One two three four five.").with_usage(FakeUsage::new(9, 5).with_cached(2));
    fake.push_all([scripted.clone(), scripted.clone(), scripted.truncated()]);
    let provider = anthropic(&fake);
    let req = request("claude-s", ResponseFormat::Text);
    let whole = provider.chat(&req, None).await.unwrap();
    let (reply, deltas) = streamed(&provider, &req).await;

    assert!(deltas.len() >= 5, "{deltas:?}");
    assert_eq!(deltas.concat(), "One two three four five.");
    assert_same_reply(&reply, &whole);
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 11,
            output_tokens: 5,
            cached_tokens: 2,
            reasoning_tokens: 0
        }
    );
    assert_eq!(reply.raw["content"], whole.raw["content"]);
    assert_eq!(reply.raw["usage"], whole.raw["usage"]);
    assert_eq!(fake.last_request().unwrap().body["stream"], json!(true));

    let (cut, _) = streamed(&provider, &req).await;
    assert_eq!(cut.finish_reason.as_deref(), Some("max_tokens"));
}

#[tokio::test]
async fn anthropic_json_format_is_an_instruction_and_fences_are_stripped() {
    let fake = fake().await;
    let provider = anthropic(&fake);
    let schema = json!({"type": "object", "required": ["n"]});
    let req = request(
        "claude-j",
        ResponseFormat::Json {
            schema: Some(schema),
        },
    );
    let fenced = "```json\n{\"n\": 1}\n```";
    fake.push_all([Reply::text(fenced), Reply::text(fenced)]);

    let reply = provider.chat(&req, None).await.unwrap();
    assert_eq!(reply.text, "{\"n\": 1}");
    let body = fake.last_request().unwrap().body;
    let system = body["system"].as_str().unwrap();
    assert!(
        system.starts_with("You are terse.\n\nAnswer with only a JSON value"),
        "{system}"
    );
    assert!(
        system.ends_with(r#"must match this JSON Schema: {"type":"object","required":["n"]}"#),
        "{system}"
    );
    assert!(body.get("response_format").is_none());

    let (reply, deltas) = streamed(&provider, &req).await;
    assert_eq!(reply.text, "{\"n\": 1}");
    assert_eq!(deltas.concat(), fenced);
}

#[tokio::test]
async fn anthropic_http_errors_are_classified() {
    let fake = fake().await;
    let p = anthropic(&fake);
    let limited =
        Reply::error(429, "Number of requests exceeded").with_retry_after(Duration::from_secs(4));
    assert_eq!(
        error_for(&p, limited, &fake).await,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(4)),
            message: "Number of requests exceeded".into()
        }
    );
    assert_eq!(
        error_for(&p, Reply::error(529, "Overloaded"), &fake).await,
        ProviderError::Server {
            status: 529,
            retry_after: None,
            message: "Overloaded".into()
        }
    );
    assert_eq!(
        error_for(&p, Reply::error(500, "Internal server error"), &fake).await,
        ProviderError::Server {
            status: 500,
            retry_after: None,
            message: "Internal server error".into()
        }
    );
    assert_eq!(
        error_for(&p, Reply::error(400, "max_tokens: Field required"), &fake).await,
        ProviderError::InvalidRequest {
            status: 400,
            message: "max_tokens: Field required".into()
        }
    );
    let echoed_key = format!("invalid x-api-key {KEY}");
    assert_eq!(
        error_for(&p, Reply::error(401, echoed_key), &fake).await,
        ProviderError::Auth {
            status: 401,
            message: "invalid x-api-key <redacted>".into()
        }
    );
    let err = error_for(&p, Reply::reset(), &fake).await;
    assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn anthropic_without_key_is_rejected_as_auth() {
    let fake = fake().await;
    let provider = AnthropicProvider::new(reqwest::Client::new(), fake.anthropic_base_url(), None);
    let err = provider
        .chat(&request("claude-a", ResponseFormat::Text), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "auth");
    assert_eq!(fake.last_request().unwrap().header("x-api-key"), None);
}

#[tokio::test]
async fn anthropic_key_goes_in_x_api_key() {
    let (base, captured) = capture_once(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )
    .await;
    let provider = AnthropicProvider::new(reqwest::Client::new(), base, Some(KEY.into()));
    let err = provider
        .chat(&request("m", ResponseFormat::Text), None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Server {
            status: 529,
            retry_after: None,
            message: "Overloaded".into()
        }
    );
    let head = captured.await.unwrap();
    assert!(head.starts_with("POST /v1/messages HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nx-api-key: {KEY}\r\n")),
        "{head}"
    );
    assert!(
        head.contains("\r\nanthropic-version: 2023-06-01\r\n"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("authorization:"),
        "{head}"
    );
}

#[test]
fn debug_output_never_shows_keys() {
    let client = reqwest::Client::new();
    let shown = format!(
        "{:?} {:?}",
        OpenAiProvider::new(client.clone(), "http://x/v1", Some(KEY.into())),
        AnthropicProvider::new(client, "http://x", Some(KEY.into()))
    );
    assert!(!shown.contains(KEY), "{shown}");
    assert_eq!(
        shown.matches(r#"api_key: Some("<redacted>")"#).count(),
        2,
        "{shown}"
    );
}

// ---- helpers: a one-shot raw HTTP server ----

async fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Serves one request with a canned JSON reply; resolves to the request head (lowercase
/// header names, as reqwest sends them).
async fn capture_once(
    status: u16,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the whole request (head and body) so that closing sends FIN, not RST.
        while !request_complete(&received) {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            received.extend_from_slice(&buf[..n]);
        }
        let response = format!(
            "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        let text = String::from_utf8_lossy(&received).into_owned();
        text.split("\r\n\r\n").next().unwrap().to_owned() + "\r\n"
    });
    (base, task)
}

fn request_complete(received: &[u8]) -> bool {
    let Some(head_end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    received.len() >= head_end + 4 + length
}
