//! Agent steps end to end: the real OpenAI and Anthropic providers against the fake LLM
//! server on loopback, scripted tool-call sequences, real flow tools and an HTTP tool against
//! a loopback axum server. Every case runs once per API.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::Path as UrlPath;
use axum::http::HeaderMap;
use axum::routing::get;
use flowrun_core::agent::{AgentStop, AgentTurn, Transcript};
use flowrun_core::event::StepRecord;
use flowrun_core::{
    EventSink, Executor, Project, RunEvent, RunOutcome, RunRequest, RunStatus, SourceFile,
};
use flowrun_fakellm::{FakeConfig, FakeLlm, RecordedRequest, Reply, ToolCall, Usage};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

const APIS: [Api; 2] = [Api::OpenAi, Api::Anthropic];

/// The project: provider `fake` (agent model `fake-agent`, tool prompts on `fake-small`),
/// prices for both, the `researcher` instructions, the `order_lookup` flow tool, and the
/// flow `agent.yaml` given by each test.
fn files(api: Api, fake: &FakeLlm, flow: &str) -> Vec<SourceFile> {
    let (kind, url) = match api {
        Api::OpenAi => ("openai", fake.openai_base_url()),
        Api::Anthropic => ("anthropic", fake.anthropic_base_url()),
    };
    let config = format!(
        r#"providers:
  fake: {{ kind: {kind}, base_url: "{url}", api_key_env: FAKE_KEY }}
models:
  agent: {{ provider: fake, model: fake-agent }}
  small: {{ provider: fake, model: fake-small }}
defaults: {{ model: small, timeout: 5s, retries: 0 }}
pricing:
  fake-agent: {{ input_per_mtok: 1000.0, output_per_mtok: 1000.0 }}
  fake-small: {{ input_per_mtok: 1.0, output_per_mtok: 1.0 }}
"#
    );
    vec![
        SourceFile::new("flowrun.yaml", config),
        SourceFile::new(
            "prompts/researcher.yaml",
            "model: agent\ninput: { question: string }\nmessages:\n  - system: You answer with the tools.\n  - user: \"{{ question }}\"\n",
        ),
        SourceFile::new(
            "prompts/describe_order.yaml",
            "input: { order_id: string }\nmessages:\n  - user: \"Describe order {{ order_id }}\"\n",
        ),
        SourceFile::new(
            "flows/order_lookup.yaml",
            "description: Looks an order up by id\ninput: { order_id: { type: string, description: the order id } }\nsteps:\n  - id: d\n    prompt: describe_order\n    with: { order_id: \"{{ input.order_id }}\" }\n",
        ),
        SourceFile::new("flows/agent.yaml", flow.to_string()),
    ]
}

#[derive(Default)]
struct Events(Mutex<Vec<RunEvent>>);

impl EventSink for Events {
    fn emit(&self, event: &RunEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Events {
    fn turns(&self) -> Vec<AgentTurn> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                RunEvent::AgentTurn(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}

async fn run(api: Api, fake: &FakeLlm, flow: &str, input: Value) -> (RunOutcome, Arc<Events>) {
    let project = Project::load(files(api, fake, flow)).unwrap_or_else(|e| panic!("{e}"));
    let diags = flowrun_core::check::check(&project);
    assert!(diags.is_empty(), "{diags:#?}");
    let events = Arc::new(Events::default());
    let exec = Executor::builder(Arc::new(project))
        .sink(events.clone())
        .env(|name| match name {
            "FAKE_KEY" => Some("sk-fake".into()),
            "ORDERS_TOKEN" => Some("tok-Secret-123".into()),
            _ => None,
        })
        .build()
        .unwrap();
    let outcome = exec
        .run(RunRequest::new("flow/agent", input))
        .await
        .unwrap();
    (outcome, events)
}

fn agent_step(outcome: &RunOutcome) -> (&StepRecord, &Transcript) {
    let step = outcome
        .steps
        .iter()
        .find(|s| s.agent.is_some())
        .expect("an agent step");
    (step, step.agent.as_ref().unwrap())
}

/// The tool results a recorded request sends back, as `(call id, content, is_error)`.
fn sent_results(api: Api, request: &RecordedRequest) -> Vec<(String, String, bool)> {
    let messages = request.body["messages"].as_array().unwrap();
    match api {
        Api::OpenAi => messages
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| {
                let content = m["content"].as_str().unwrap().to_string();
                let is_error =
                    content.starts_with("invalid arguments") || content.starts_with("unknown tool");
                (
                    m["tool_call_id"].as_str().unwrap().to_string(),
                    content,
                    is_error,
                )
            })
            .collect(),
        Api::Anthropic => messages
            .iter()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| {
                (
                    b["tool_use_id"].as_str().unwrap().to_string(),
                    b["content"].as_str().unwrap().to_string(),
                    b["is_error"] == json!(true),
                )
            })
            .collect(),
    }
}

const FLOW_TOOL_AGENT: &str = r#"
input: { question: string }
steps:
  - id: research
    agent:
      instructions: researcher
      tools:
        - { name: lookup_order, flow: order_lookup }
      max_turns: 4
    with: { question: "{{ input.question }}" }
  - id: tell
    prompt: describe_order
    with: { order_id: "{{ steps.research.output }} after {{ steps.research.transcript.turns | length }} turns" }
"#;

#[tokio::test]
async fn an_agent_calls_a_flow_tool_and_answers() {
    for api in APIS {
        let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
        fake.push_for_model(
            "fake-agent",
            Reply::tool_call("lookup_order", json!({"order_id": "A-17"}))
                .with_text("Looking it up."),
        );
        fake.push_for_model("fake-small", Reply::text("Order A-17: two lamps, shipped."));
        fake.push_for_model("fake-agent", Reply::text("Your lamps are on their way."));
        let (outcome, events) = run(
            api,
            &fake,
            FLOW_TOOL_AGENT,
            json!({"question": "Where is A-17?"}),
        )
        .await;
        assert_eq!(
            outcome.status,
            RunStatus::Succeeded,
            "{api:?}: {outcome:#?}"
        );
        let (step, transcript) = agent_step(&outcome);
        assert_eq!(step.output, Some(json!("Your lamps are on their way.")));
        assert_eq!(transcript.stop, AgentStop::Answered);
        assert_eq!(transcript.turns.len(), 2);
        let call = &transcript.turns[0].tool_results[0];
        assert_eq!(call.name, "lookup_order");
        assert_eq!(call.arguments, json!({"order_id": "A-17"}));
        assert_eq!(call.output, "Order A-17: two lamps, shipped.");
        assert!(!call.is_error);
        assert!(call.run_id.is_some(), "the flow tool is a run of its own");
        assert_eq!(
            events.turns(),
            transcript.turns,
            "each turn is emitted as it completes"
        );
        // The tool's description and parameters come from the flow.
        let first = &fake.requests_for_model("fake-agent")[0];
        let tools = first.body["tools"].to_string();
        assert!(
            tools.contains("Looks an order up by id") && tools.contains("the order id"),
            "{tools}"
        );
        // The second agent request carries the result back.
        let second = &fake.requests_for_model("fake-agent")[1];
        let results = sent_results(api, second);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].1, "Order A-17: two lamps, shipped.");
        assert_eq!(results[0].0, call.call_id);
        // A later step reads the answer and the transcript.
        let tell = fake.last_request().unwrap();
        assert!(
            tell.body
                .to_string()
                .contains("Your lamps are on their way. after 2 turns"),
            "{}",
            tell.body
        );
        fake.shutdown().await;
    }
}

const WEATHER_AGENT: &str = r#"
input: { question: string }
steps:
  - id: research
    agent:
      instructions: researcher
      parallel_tool_calls: 2
      tools:
        - name: weather
          description: Current weather of a city
          parameters:
            type: object
            properties: { city: { type: string } }
            required: [city]
          http:
            url: "{{ args.base }}/weather/{{ args.city | urlencode }}"
            headers:
              Authorization: { env: ORDERS_TOKEN, prefix: "Bearer " }
              X-City: "{{ args.city }}"
            response: /report
    with: { question: "{{ input.question }}" }
"#;

/// A loopback weather API; it echoes the Authorization header it got (so the test can
/// check that the secret is redacted from what the model and the history see).
async fn weather_server() -> String {
    let app = axum::Router::new().route(
        "/weather/{city}",
        get(
            |UrlPath(city): UrlPath<String>, headers: HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let x_city = headers
                    .get("x-city")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                Json(json!({"report": format!("{city}: sunny (auth {auth}, header {x_city})")}))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn parallel_http_tool_calls_and_invalid_arguments() {
    let base = weather_server().await;
    // The URL template reads `args.base`, which the schema does not forbid: the test passes
    // the loopback address through the arguments.
    let flow = WEATHER_AGENT;
    for api in APIS {
        let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
        fake.push_for_model(
            "fake-agent",
            Reply::tool_calls([
                ToolCall::new("c1", "weather", json!({"city": "Paris", "base": base})),
                ToolCall::new("c2", "weather", json!({"city": "Oslo fjord", "base": base})),
                ToolCall::new("c3", "weather", json!({"town": "Rome"})),
                ToolCall::new("c4", "forecast", json!({})),
            ]),
        );
        fake.push_for_model("fake-agent", Reply::text("Sunny in Paris and Oslo."));
        let (outcome, _) = run(api, &fake, flow, json!({"question": "Weather?"})).await;
        assert_eq!(
            outcome.status,
            RunStatus::Succeeded,
            "{api:?}: {outcome:#?}"
        );
        let (_, transcript) = agent_step(&outcome);
        let results = &transcript.turns[0].tool_results;
        let ids: Vec<&str> = results.iter().map(|r| r.call_id.as_str()).collect();
        assert_eq!(
            ids,
            ["c1", "c2", "c3", "c4"],
            "results keep the calls' order"
        );
        assert_eq!(
            results[0].output,
            "Paris: sunny (auth Bearer <redacted>, header Paris)"
        );
        assert_eq!(
            results[1].output,
            "Oslo fjord: sunny (auth Bearer <redacted>, header Oslo fjord)"
        );
        assert!(
            results[2].is_error
                && results[2]
                    .output
                    .starts_with("invalid arguments for `weather`"),
            "{:?}",
            results[2]
        );
        assert!(
            results[2]
                .output
                .contains("\"city\" is a required property"),
            "{}",
            results[2].output
        );
        assert!(results[3].is_error);
        assert_eq!(
            results[3].output,
            "unknown tool `forecast`; the tools are: weather"
        );
        let sent = sent_results(api, &fake.requests_for_model("fake-agent")[1]);
        assert_eq!(sent.len(), 4);
        if api == Api::Anthropic {
            let flags: Vec<bool> = sent.iter().map(|s| s.2).collect();
            assert_eq!(flags, [false, false, true, true]);
        }
        let everything = serde_json::to_string(&outcome.steps).unwrap();
        assert!(
            !everything.contains("tok-Secret-123"),
            "the secret leaked into the records"
        );
        for r in fake.requests() {
            assert!(
                !r.body.to_string().contains("tok-Secret-123"),
                "the secret reached the model"
            );
        }
        fake.shutdown().await;
    }
}

const LOOPING_AGENT: &str = r#"
input: { question: string }
steps:
  - id: research
    agent:
      instructions: researcher
      max_turns: 2
      tools:
        - { name: lookup_order, flow: order_lookup }
    with: { question: "{{ input.question }}" }
"#;

#[tokio::test]
async fn max_turns_ends_the_loop() {
    for api in APIS {
        let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
        for _ in 0..5 {
            fake.push_for_model(
                "fake-agent",
                Reply::tool_call("lookup_order", json!({"order_id": "x"})),
            );
        }
        let (outcome, events) = run(api, &fake, LOOPING_AGENT, json!({"question": "?"})).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        let (step, transcript) = agent_step(&outcome);
        assert_eq!(transcript.stop, AgentStop::MaxTurnsReached);
        assert_eq!(transcript.turns.len(), 2);
        assert_eq!(events.turns().len(), 2);
        assert_eq!(
            fake.requests_for_model("fake-agent").len(),
            2,
            "no third model call"
        );
        let error = step.error.as_deref().unwrap();
        assert!(error.starts_with("max_turns_reached"), "{error}");
        assert!(outcome.error.unwrap().contains("max_turns_reached"));
        fake.shutdown().await;
    }
}

const BUDGET_AGENT: &str = r#"
input: { question: string }
steps:
  - id: research
    agent:
      instructions: researcher
      max_cost: 0.05
      tools:
        - { name: lookup_order, flow: order_lookup }
    with: { question: "{{ input.question }}" }
"#;

#[tokio::test]
async fn max_cost_stops_before_the_next_call() {
    for api in APIS {
        let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
        // 100 tokens at USD 1000 per million: USD 0.10, over the 0.05 budget.
        fake.push_for_model(
            "fake-agent",
            Reply::tool_call("lookup_order", json!({"order_id": "x"}))
                .with_usage(Usage::new(90, 10)),
        );
        fake.push_for_model("fake-agent", Reply::text("never sent"));
        let (outcome, _) = run(api, &fake, BUDGET_AGENT, json!({"question": "?"})).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        let (step, transcript) = agent_step(&outcome);
        assert_eq!(transcript.stop, AgentStop::BudgetExceeded);
        assert_eq!(
            transcript.turns.len(),
            1,
            "the turn that spent it completes, tools included"
        );
        assert_eq!(
            fake.requests_for_model("fake-agent").len(),
            1,
            "no further call is made"
        );
        let error = step.error.as_deref().unwrap();
        assert!(
            error.starts_with("budget_exceeded: the agent spent $0.1"),
            "{error}"
        );
        fake.shutdown().await;
    }
}

const JSON_AGENT: &str = r#"
input: { question: string }
steps:
  - id: research
    agent:
      instructions: researcher
      tools:
        - { name: lookup_order, flow: order_lookup }
      output:
        schema:
          type: object
          required: [status]
          properties: { status: { type: string, enum: [shipped, lost] } }
    with: { question: "{{ input.question }}" }
"#;

#[tokio::test]
async fn a_json_answer_is_validated_and_sent_back_when_invalid() {
    for api in APIS {
        let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
        fake.push_for_model("fake-agent", Reply::text(r#"{"status": "maybe"}"#));
        fake.push_for_model("fake-agent", Reply::text(r#"{"status": "shipped"}"#));
        let (outcome, _) = run(api, &fake, JSON_AGENT, json!({"question": "?"})).await;
        assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
        assert_eq!(outcome.output, Some(json!({"status": "shipped"})));
        let (_, transcript) = agent_step(&outcome);
        assert_eq!(transcript.turns.len(), 2);
        assert!(
            transcript.turns[0].feedback[0]
                .content
                .contains("not valid")
        );
        fake.shutdown().await;
    }
}

const SLOW_AGENT: &str = r#"
input: { question: string }
steps:
  - id: research
    agent:
      instructions: researcher
      timeout: 300ms
      tools:
        - { name: lookup_order, flow: order_lookup }
    with: { question: "{{ input.question }}" }
"#;

#[tokio::test]
async fn the_agent_timeout_ends_a_hanging_loop() {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    fake.push_for_model("fake-agent", Reply::hang());
    let (outcome, _) = run(Api::OpenAi, &fake, SLOW_AGENT, json!({"question": "?"})).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let (step, transcript) = agent_step(&outcome);
    assert_eq!(transcript.stop, AgentStop::Timeout);
    assert!(
        step.error.as_deref().unwrap().starts_with("timeout"),
        "{:?}",
        step.error
    );
    fake.shutdown().await;
}

/// A crash mid-agent: the second attempt rebuilds the conversation from the committed turns
/// and goes on, without repeating their model call or their tool's run.
#[tokio::test]
async fn a_resumed_agent_continues_after_its_last_committed_turn() {
    for api in APIS {
        let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
        fake.push_for_model(
            "fake-agent",
            Reply::tool_call("lookup_order", json!({"order_id": "A-17"})),
        );
        fake.push_for_model("fake-small", Reply::text("Order A-17: shipped."));
        fake.push_for_model("fake-agent", Reply::hang());
        let (first, events) = run(api, &fake, SLOW_AGENT, json!({"question": "Where?"})).await;
        assert_eq!(
            first.status,
            RunStatus::Failed,
            "the first attempt is cut short"
        );
        let committed = events.turns();
        assert_eq!(committed.len(), 1);

        fake.clear_requests();
        fake.clear_script();
        fake.push_for_model("fake-agent", Reply::text("It shipped."));
        let project = Project::load(files(api, &fake, SLOW_AGENT)).unwrap();
        let exec = Executor::builder(Arc::new(project))
            .env(|name| (name == "FAKE_KEY").then(|| "sk-fake".into()))
            .build()
            .unwrap();
        let request = RunRequest::new("flow/agent", json!({"question": "Where?"}))
            .with_run_id(first.run_id.clone())
            .resuming(Vec::new())
            .resuming_turns(committed.clone());
        let second = exec.run(request).await.unwrap();
        assert_eq!(second.status, RunStatus::Succeeded, "{api:?}: {second:#?}");
        assert_eq!(second.output, Some(json!("It shipped.")));
        let (step, transcript) = agent_step(&second);
        assert_eq!(transcript.turns.len(), 2);
        assert_eq!(transcript.turns[0], committed[0]);
        assert_eq!(
            step.usage.input_tokens,
            committed[0].usage.input_tokens + transcript.turns[1].usage.input_tokens
        );
        let requests = fake.requests();
        assert_eq!(
            requests.len(),
            1,
            "one model call, no tool run: {requests:#?}"
        );
        let sent = sent_results(api, &requests[0]);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1, "Order A-17: shipped.");
        fake.shutdown().await;
    }
}

/// The timeout cancels a tool that still runs: its run ends `cancelled` (recorded, not left
/// running), and the unfinished turn is not recorded.
#[tokio::test]
async fn the_timeout_cancels_running_tools() {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    fake.push_for_model(
        "fake-agent",
        Reply::tool_call("lookup_order", json!({"order_id": "A-17"})),
    );
    fake.push_for_model("fake-small", Reply::hang());
    let (outcome, events) = run(Api::OpenAi, &fake, SLOW_AGENT, json!({"question": "?"})).await;
    let (_, transcript) = agent_step(&outcome);
    assert_eq!(transcript.stop, AgentStop::Timeout);
    assert!(transcript.turns.is_empty() && events.turns().is_empty());
    let ends: Vec<(String, RunStatus)> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RunEvent::RunFinished(end) => Some((end.run_id.clone(), end.status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends.len(),
        2,
        "the tool's run and the agent's run both end: {ends:?}"
    );
    assert_eq!(ends[0].1, RunStatus::Cancelled);
    assert_ne!(ends[0].0, outcome.run_id);
    fake.shutdown().await;
}
