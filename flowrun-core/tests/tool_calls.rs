//! Native tool calling of the OpenAI and Anthropic providers against the fake LLM server:
//! tools and `tool_choice` in the request, parallel calls in the reply (whole and streamed),
//! and the calls and their results sent back in the next request.

use flowrun_core::provider::anthropic::AnthropicProvider;
use flowrun_core::provider::openai::OpenAiProvider;
use flowrun_core::provider::{
    ChatRequest, ChatResponse, Message, Params, Provider, ResponseFormat, Role, ToolCall,
    ToolChoice, ToolDef,
};
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply, ToolCall as FakeCall};
use serde_json::{Value, json};

async fn fake() -> FakeLlm {
    FakeLlm::start(FakeConfig::default()).await.unwrap()
}

fn providers(fake: &FakeLlm) -> [(&'static str, Box<dyn Provider>); 2] {
    let client = reqwest::Client::new();
    [
        (
            "openai",
            Box::new(OpenAiProvider::new(
                client.clone(),
                fake.openai_base_url(),
                Some("k".into()),
            )),
        ),
        (
            "anthropic",
            Box::new(AnthropicProvider::new(
                client,
                fake.anthropic_base_url(),
                Some("k".into()),
            )),
        ),
    ]
}

fn weather_tool() -> ToolDef {
    ToolDef {
        name: "get_weather".into(),
        description: "Current weather of a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

fn request(messages: Vec<Message>) -> ChatRequest {
    let mut request = ChatRequest::new("m", messages, Params::default(), ResponseFormat::Text);
    request.tools = vec![weather_tool()];
    request.tool_choice = Some(ToolChoice::Required);
    request.parallel_tool_calls = Some(true);
    request
}

async fn call(provider: &dyn Provider, req: &ChatRequest, stream: bool) -> ChatResponse {
    let on_delta = |_: &str| {};
    let delta: Option<&flowrun_core::provider::DeltaFn> = stream.then_some(&on_delta);
    provider.chat(req, delta).await.unwrap()
}

#[tokio::test]
async fn parallel_tool_calls_are_read_whole_and_streamed() {
    let fake = fake().await;
    for (api, provider) in providers(&fake) {
        for stream in [false, true] {
            fake.push(
                Reply::tool_calls([
                    FakeCall::new("c1", "get_weather", json!({"city": "Paris"})),
                    FakeCall::new("c2", "get_weather", json!({"city": "Oslo, Norway"})),
                ])
                .with_text("Checking both."),
            );
            let req = request(vec![Message::new(Role::User, "Weather in Paris and Oslo?")]);
            let reply = call(provider.as_ref(), &req, stream).await;
            let ctx = format!("{api}, stream {stream}");
            assert_eq!(reply.text, "Checking both.", "{ctx}");
            assert_eq!(
                reply.tool_calls,
                vec![
                    ToolCall {
                        id: "c1".into(),
                        name: "get_weather".into(),
                        arguments: json!({"city": "Paris"})
                    },
                    ToolCall {
                        id: "c2".into(),
                        name: "get_weather".into(),
                        arguments: json!({"city": "Oslo, Norway"})
                    },
                ],
                "{ctx}"
            );
            let finish = reply.finish_reason.as_deref().unwrap();
            assert!(
                ["tool_calls", "tool_use"].contains(&finish),
                "{ctx}: {finish}"
            );
        }
    }
}

#[tokio::test]
async fn openai_request_carries_tools_calls_and_results() {
    let fake = fake().await;
    let [(_, openai), _] = providers(&fake);
    fake.push(Reply::text("Sunny in Paris."));
    let calls = vec![ToolCall {
        id: "c1".into(),
        name: "get_weather".into(),
        arguments: json!({"city": "Paris"}),
    }];
    let mut req = request(vec![
        Message::new(Role::User, "Weather in Paris?"),
        Message::assistant_calls("", calls),
        Message::tool_result("c1", "sunny", false),
    ]);
    req.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    let reply = call(openai.as_ref(), &req, false).await;
    assert_eq!(reply.text, "Sunny in Paris.");
    assert!(reply.tool_calls.is_empty());
    let body = fake.last_request().unwrap().body;
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {"name": "get_weather",
            "description": "Current weather of a city", "parameters": weather_tool().parameters}}])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(body["parallel_tool_calls"], json!(true));
}

#[tokio::test]
async fn anthropic_request_carries_tools_calls_and_results() {
    let fake = fake().await;
    let [_, (_, anthropic)] = providers(&fake);
    fake.push(Reply::text("Both sunny."));
    let calls = vec![
        ToolCall {
            id: "t1".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "Paris"}),
        },
        ToolCall {
            id: "t2".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "Oslo"}),
        },
    ];
    let mut req = request(vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, "Weather in Paris and Oslo?"),
        Message::assistant_calls("Checking.", calls),
        Message::tool_result("t1", "sunny", false),
        Message::tool_result("t2", "city not found", true),
    ]);
    req.parallel_tool_calls = Some(false);
    let reply = call(anthropic.as_ref(), &req, true).await;
    assert_eq!(reply.text, "Both sunny.");
    let body: Value = fake.last_request().unwrap().body;
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {"city": "Oslo"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "city not found", "is_error": true},
            ]},
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"name": "get_weather", "description": "Current weather of a city",
            "input_schema": weather_tool().parameters}])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
}
