//! The executor end to end: real HTTP on loopback through the real OpenAI and Anthropic
//! providers against the in-process fake LLM server (`flowrun-fakellm`).
//!
//! Every case that depends on the wire format runs once per API (`openai::<case>` and
//! `anthropic::<case>`). Projects are built from in-memory files by [`setup`], the only place
//! that builds projects and executors; the tests themselves are scripted replies and the
//! records, events and requests they must produce.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowrun_core::event::{CallRecord, RunEvent, StepRecord};
use flowrun_core::exec::ExecError;
use flowrun_core::project::TargetKind;
use flowrun_core::provider::Usage;
use flowrun_core::{EventSink, Executor, Project, RunOutcome, RunRequest, RunStatus, SourceFile};
use flowrun_fakellm::{FakeConfig, FakeLlm, REDACTED, RecordedRequest, Reply, Usage as FakeUsage};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Which provider (and endpoint of the fake server) a case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn kind(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }

    fn base_url(self, fake: &FakeLlm) -> String {
        match self {
            Api::OpenAi => fake.openai_base_url(),
            Api::Anthropic => fake.anthropic_base_url(),
        }
    }

    fn recorded(self) -> flowrun_fakellm::Api {
        match self {
            Api::OpenAi => flowrun_fakellm::Api::OpenAi,
            Api::Anthropic => flowrun_fakellm::Api::Anthropic,
        }
    }
}

/// The project file: provider `fake` on the fake server (key from `FAKE_KEY`), provider
/// `nokey` whose key variable is never set, aliases `main`, `primary` (falls back to `backup`)
/// and `locked` (on `nokey`), fast retries, and prices for every model (`fake-small`: USD 2.0
/// per million input tokens, 0.5 per million cached ones, 8.0 per million output tokens).
fn config(api: Api, fake: &FakeLlm) -> String {
    let (kind, url) = (api.kind(), api.base_url(fake));
    format!(
        r#"name: executor-tests
providers:
  fake: {{ kind: {kind}, base_url: "{url}", api_key_env: FAKE_KEY }}
  nokey: {{ kind: {kind}, base_url: "{url}", api_key_env: MISSING_KEY }}
models:
  main: {{ provider: fake, model: fake-small }}
  primary: {{ provider: fake, model: fake-primary, fallback: [backup] }}
  backup: {{ provider: fake, model: fake-backup }}
  locked: {{ provider: nokey, model: fake-small }}
defaults:
  model: main
  timeout: 500ms
  retries: 2
  backoff: 10ms
  max_backoff: 2s
pricing:
  fake-small: {{ input_per_mtok: 2.0, output_per_mtok: 8.0, cached_input_per_mtok: 0.5 }}
  fake-primary: {{ input_per_mtok: 1.0, output_per_mtok: 1.0 }}
  fake-backup: {{ input_per_mtok: 1.0, output_per_mtok: 1.0 }}
"#
    )
}

/// `prompts/summarize.yaml`: text output; `text` is required.
const SUMMARIZE: &str = r#"
input:
  text: string
messages:
  - system: You are terse.
  - user: "Summarize: {{ text }}"
"#;

/// `prompts/classify.yaml`: JSON output checked against a schema.
const CLASSIFY: &str = r#"
input:
  ticket: string
output:
  format: json
  schema:
    type: object
    required: [category]
    properties:
      category: { type: string, enum: [billing, bug] }
messages:
  - user: "Classify this ticket: {{ ticket }}"
"#;

/// `prompts/answer.yaml`: replies to a ticket of a known category.
const ANSWER: &str = r#"
input:
  ticket: string
  category: string
messages:
  - system: You answer support tickets.
  - user: "Category: {{ category }}. Ticket: {{ ticket }}"
"#;

/// `flows/triage.yaml`: classify, then answer with the category.
const TRIAGE: &str = r#"
input:
  ticket: string
steps:
  - id: classify
    prompt: classify
    with:
      ticket: "{{ input.ticket }}"
  - id: answer
    prompt: answer
    with:
      ticket: "{{ input.ticket }}"
      category: "{{ steps.classify.output.category }}"
"#;

/// Collects every event, in order.
#[derive(Default)]
struct Events(Mutex<Vec<RunEvent>>);

impl EventSink for Events {
    fn emit(&self, event: &RunEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Events {
    fn all(&self) -> Vec<RunEvent> {
        self.0.lock().unwrap().clone()
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.all()
            .iter()
            .map(|e| match e {
                RunEvent::RunStarted(_) => "run_started",
                RunEvent::StepStarted(_) => "step_started",
                RunEvent::CallAttempt(_) => "call_attempt",
                RunEvent::AgentTurn(_) => "agent_turn",
                RunEvent::StepFinished(_) => "step_finished",
                RunEvent::StepReused(_) => "step_reused",
                RunEvent::RunFinished(_) => "run_finished",
            })
            .collect()
    }

    fn attempts(&self) -> Vec<CallRecord> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::CallAttempt(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

/// A fake server, an executor for a project on it, and the events the executor emitted.
struct Setup {
    fake: FakeLlm,
    events: Arc<Events>,
    exec: Executor,
}

/// Starts a fake server and builds the project (the config above plus `files`, given as
/// `(path, text)`) with an executor whose only API key is `FAKE_KEY`.
async fn setup(api: Api, files: &[(&str, &str)]) -> Setup {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let mut sources = vec![SourceFile::new("flowrun.yaml", config(api, &fake))];
    sources.extend(
        files
            .iter()
            .map(|(path, text)| SourceFile::new(*path, *text)),
    );
    let project = match Project::load(sources) {
        Ok(p) => Arc::new(p),
        Err(diags) => panic!("test project does not load: {diags:?}"),
    };
    let events = Arc::new(Events::default());
    let exec = Executor::builder(project)
        .sink(events.clone())
        .env(|name| (name == "FAKE_KEY").then(|| "sk-test".to_string()))
        .build()
        .unwrap();
    Setup { fake, events, exec }
}

impl Setup {
    async fn run(&self, target: &str, input: Value) -> RunOutcome {
        self.exec.run(RunRequest::new(target, input)).await.unwrap()
    }
}

/// `prompts/summarize.yaml`, with `extra` lines (model, timeout, retries) prepended.
fn summarize(extra: &str) -> String {
    format!("{extra}\n{SUMMARIZE}")
}

fn step(outcome: &RunOutcome) -> &StepRecord {
    assert_eq!(outcome.steps.len(), 1, "{outcome:#?}");
    &outcome.steps[0]
}

fn error_kinds(attempts: &[CallRecord]) -> Vec<Option<String>> {
    attempts
        .iter()
        .map(|a| a.error.as_ref().map(|e| e.kind.clone()))
        .collect()
}

/// The messages of a recorded request as `(role, text)`; Anthropic's `system` field first.
fn messages(request: &RecordedRequest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(system) = request.body.get("system").and_then(Value::as_str) {
        out.push(("system".to_string(), system.to_string()));
    }
    for m in request.body["messages"].as_array().expect("messages") {
        let text = m["content"].as_str().expect("text content").to_string();
        out.push((m["role"].as_str().unwrap().to_string(), text));
    }
    out
}

fn last_user_text(request: &RecordedRequest) -> String {
    messages(request)
        .into_iter()
        .rev()
        .find(|(role, _)| role == "user")
        .map(|(_, text)| text)
        .expect("a user message")
}

fn assert_usd(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-12,
        "cost {actual} != {expected}"
    );
}

macro_rules! for_both_apis {
    ($($case:ident),* $(,)?) => {
        mod openai {
            $(#[tokio::test] async fn $case() { super::$case(super::Api::OpenAi).await })*
        }
        mod anthropic {
            $(#[tokio::test] async fn $case() { super::$case(super::Api::Anthropic).await })*
        }
    };
}

for_both_apis!(
    success_maps_usage_cost_and_events,
    rate_limit_waits_for_retry_after,
    server_error_is_retried,
    timeout_is_retried,
    client_errors_are_not_retried,
    fallback_model_after_retries,
    structured_output_is_repaired_once,
    structured_output_fails_after_one_repair,
    flow_step_reads_previous_json_output,
    streaming_matches_non_streaming,
    cancellation_ends_the_run,
    missing_api_key_names_the_variable,
);

async fn success_maps_usage_cost_and_events(api: Api) {
    let s = setup(
        api,
        &[("prompts/summarize.yaml", &summarize("model: main"))],
    )
    .await;
    s.fake.push(
        Reply::text("A short summary.").with_usage(
            FakeUsage::new(1200, 300)
                .with_cached(200)
                .with_reasoning(40),
        ),
    );

    let outcome = s
        .run("summarize", json!({"text": "the quarterly report"}))
        .await;

    // OpenAI's prompt_tokens include cached tokens; Anthropic's input_tokens exclude cache
    // reads, which the provider adds back. Reasoning tokens exist on OpenAI only.
    let (usage, usd) = match api {
        Api::OpenAi => (
            Usage {
                input_tokens: 1200,
                output_tokens: 300,
                cached_tokens: 200,
                reasoning_tokens: 40,
            },
            // ((1200 - 200) × 2.0 + 200 × 0.5 + 300 × 8.0) / 1e6
            0.0045,
        ),
        Api::Anthropic => (
            Usage {
                input_tokens: 1400,
                output_tokens: 300,
                cached_tokens: 200,
                reasoning_tokens: 0,
            },
            // ((1400 - 200) × 2.0 + 200 × 0.5 + 300 × 8.0) / 1e6
            0.0049,
        ),
    };
    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    assert_eq!(outcome.output, Some(json!("A short summary.")));
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.target_kind, TargetKind::Prompt);
    assert_eq!(outcome.target, "summarize");
    assert_eq!(outcome.usage, usage);
    assert!(outcome.cost.is_known(), "{:?}", outcome.cost);
    assert_usd(outcome.cost.usd, usd);

    let record = step(&outcome);
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(record.model.as_deref(), Some("fake/fake-small"));
    assert_eq!(record.output_text.as_deref(), Some("A short summary."));
    assert_eq!(record.attempts, 1);
    assert_eq!(record.usage, usage);

    assert_eq!(
        s.events.kinds(),
        [
            "run_started",
            "step_started",
            "call_attempt",
            "step_finished",
            "run_finished"
        ]
    );
    let events = s.events.all();
    let RunEvent::RunStarted(start) = &events[0] else {
        unreachable!()
    };
    assert_eq!(
        (
            start.run_id.as_str(),
            start.target_kind.as_str(),
            start.target.as_str()
        ),
        (outcome.run_id.as_str(), "prompt", "summarize")
    );
    assert_eq!(start.input, json!({"text": "the quarterly report"}));
    assert_eq!(start.version, outcome.version);
    let RunEvent::StepStarted(step_start) = &events[1] else {
        unreachable!()
    };
    assert_eq!(step_start.model, "fake/fake-small");
    assert_eq!(step_start.messages.len(), 2);
    assert_eq!(
        step_start.messages[1].content,
        "Summarize: the quarterly report"
    );
    let RunEvent::CallAttempt(call) = &events[2] else {
        unreachable!()
    };
    assert_eq!(
        (call.attempt, call.provider.as_str(), call.model.as_str()),
        (1, "fake", "fake-small")
    );
    assert_eq!(
        (call.usage, call.error.as_ref(), call.repair),
        (usage, None, false)
    );
    assert_usd(call.cost.usd, usd);
    let raw = call
        .raw_response
        .as_ref()
        .expect("raw response of a success");
    assert_eq!(raw["model"], "fake-small");
    let RunEvent::StepFinished(finished) = &events[3] else {
        unreachable!()
    };
    assert_eq!(finished, record);
    let RunEvent::RunFinished(end) = &events[4] else {
        unreachable!()
    };
    assert_eq!(
        (end.status, &end.output, end.usage),
        (RunStatus::Succeeded, &outcome.output, usage)
    );
    assert_usd(end.cost.usd, usd);

    let requests = s.fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.api, api.recorded());
    assert_eq!(request.model.as_deref(), Some("fake-small"));
    assert!(!request.stream);
    let key_header = if api == Api::OpenAi {
        "authorization"
    } else {
        "x-api-key"
    };
    assert_eq!(
        request.header(key_header),
        Some(REDACTED),
        "the key from `env` is sent"
    );
    assert_eq!(
        messages(request),
        [
            ("system".to_string(), "You are terse.".to_string()),
            (
                "user".to_string(),
                "Summarize: the quarterly report".to_string()
            )
        ]
    );
}

async fn rate_limit_waits_for_retry_after(api: Api) {
    let s = setup(api, &[("prompts/summarize.yaml", &summarize(""))]).await;
    s.fake
        .push(Reply::error(429, "slow down").with_retry_after(Duration::from_secs(1)));
    s.fake.push(Reply::text("after the wait"));

    let outcome = s.run("summarize", json!({"text": "x"})).await;

    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    assert_eq!(outcome.output, Some(json!("after the wait")));
    assert_eq!(step(&outcome).attempts, 2);
    let attempts = s.events.attempts();
    assert_eq!(
        error_kinds(&attempts),
        [Some("rate_limited".to_string()), None]
    );
    assert_eq!(
        attempts[0].error.as_ref().unwrap().message,
        "rate limited (HTTP 429): slow down"
    );
    let waited = attempts[1].started_at_ms - attempts[0].started_at_ms;
    assert!(
        waited >= 900,
        "second attempt started {waited}ms after the first; Retry-After asked for 1s"
    );
    assert_eq!(s.fake.request_count(), 2);
}

async fn server_error_is_retried(api: Api) {
    let s = setup(api, &[("prompts/summarize.yaml", &summarize(""))]).await;
    s.fake.push(Reply::error(500, "boom"));
    s.fake.push(Reply::text("recovered"));

    let outcome = s.run("summarize", json!({"text": "x"})).await;

    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    assert_eq!(outcome.output, Some(json!("recovered")));
    assert_eq!(step(&outcome).attempts, 2);
    let attempts = s.events.attempts();
    assert_eq!(error_kinds(&attempts), [Some("server".to_string()), None]);
    assert_eq!(
        attempts[0].error.as_ref().unwrap().message,
        "server error (HTTP 500): boom"
    );
    assert_eq!(
        (attempts[0].cost.usd, attempts[0].usage),
        (0.0, Usage::default()),
        "a failed attempt costs nothing"
    );
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(s.fake.request_count(), 2);
}

async fn timeout_is_retried(api: Api) {
    let s = setup(
        api,
        &[(
            "prompts/summarize.yaml",
            &summarize("timeout: 300ms\nretries: 1"),
        )],
    )
    .await;
    s.fake.push(Reply::hang());

    let outcome = s.run("summarize", json!({"text": "late reply"})).await;

    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    // Nothing more scripted: the fake echoes the last user message.
    assert_eq!(outcome.output, Some(json!("echo: Summarize: late reply")));
    let attempts = s.events.attempts();
    assert_eq!(error_kinds(&attempts), [Some("timeout".to_string()), None]);
    assert_eq!(
        attempts[0].error.as_ref().unwrap().message,
        "timed out after 300ms"
    );
    assert!(
        attempts[0].latency_ms >= 290,
        "gave up after {}ms",
        attempts[0].latency_ms
    );
    assert_eq!(s.fake.request_count(), 2);
}

async fn client_errors_are_not_retried(api: Api) {
    for (status, kind, shown) in [
        (
            400,
            "invalid_request",
            "request rejected (HTTP 400): bad field",
        ),
        (401, "auth", "authentication failed (HTTP 401): bad field"),
    ] {
        let s = setup(api, &[("prompts/summarize.yaml", &summarize(""))]).await;
        s.fake.push(Reply::error(status, "bad field"));
        s.fake.push(Reply::text("must not be reached"));

        let outcome = s.run("summarize", json!({"text": "x"})).await;

        assert_eq!(outcome.status, RunStatus::Failed, "{outcome:#?}");
        assert_eq!(outcome.output, None);
        let error = outcome.error.as_deref().unwrap();
        assert!(error.contains(&format!("HTTP {status}")), "{error}");
        assert_eq!(
            error,
            format!("step `summarize` failed: {shown} (on fake/fake-small, after 1 attempt)")
        );
        assert_eq!(s.fake.request_count(), 1, "HTTP {status} is not retried");
        assert_eq!(step(&outcome).attempts, 1);
        assert_eq!(step(&outcome).status, RunStatus::Failed);
        assert_eq!(error_kinds(&s.events.attempts()), [Some(kind.to_string())]);
        assert_eq!(s.events.kinds().last(), Some(&"run_finished"));
    }
}

async fn fallback_model_after_retries(api: Api) {
    let s = setup(
        api,
        &[("prompts/summarize.yaml", &summarize("model: primary"))],
    )
    .await;
    // retries: 2 → three attempts on the primary model.
    for _ in 0..3 {
        s.fake
            .push_for_model("fake-primary", Reply::error(500, "primary down"));
    }
    s.fake
        .push_for_model("fake-backup", Reply::text("from the backup"));

    let outcome = s.run("summarize", json!({"text": "x"})).await;

    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    assert_eq!(outcome.output, Some(json!("from the backup")));
    let record = step(&outcome);
    assert_eq!(record.model.as_deref(), Some("fake/fake-backup"));
    assert_eq!(record.attempts, 4);
    assert_eq!(s.fake.requests_for_model("fake-primary").len(), 3);
    assert_eq!(s.fake.requests_for_model("fake-backup").len(), 1);
    let attempts = s.events.attempts();
    let models: Vec<&str> = attempts.iter().map(|a| a.model.as_str()).collect();
    assert_eq!(
        models,
        [
            "fake-primary",
            "fake-primary",
            "fake-primary",
            "fake-backup"
        ]
    );
    assert_eq!(
        error_kinds(&attempts),
        [
            Some("server".to_string()),
            Some("server".to_string()),
            Some("server".to_string()),
            None
        ]
    );
    let RunEvent::StepStarted(start) = &s.events.all()[1] else {
        panic!("step_started expected")
    };
    assert_eq!(
        start.model, "fake/fake-primary",
        "the step starts on the first model of the chain"
    );
}

async fn structured_output_is_repaired_once(api: Api) {
    for (invalid, problem) in [
        ("not json", "Your reply is not valid: it is not JSON ("),
        (
            r#"{"category": "refund"}"#,
            "Your reply is not valid: it does not match the schema (at `/category`:",
        ),
    ] {
        let s = setup(api, &[("prompts/classify.yaml", CLASSIFY)]).await;
        s.fake.push(Reply::text(invalid));
        s.fake.push(Reply::text(r#"{"category": "billing"}"#));

        let outcome = s
            .run("classify", json!({"ticket": "I was charged twice"}))
            .await;

        assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
        assert_eq!(outcome.output, Some(json!({"category": "billing"})));
        let record = step(&outcome);
        assert_eq!(record.output, Some(json!({"category": "billing"})));
        assert_eq!(
            record.output_text.as_deref(),
            Some(r#"{"category": "billing"}"#)
        );
        assert_eq!(record.attempts, 2);
        let attempts = s.events.attempts();
        assert_eq!(
            attempts.iter().map(|a| a.repair).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(error_kinds(&attempts), [None, None]);

        let requests = s.fake.requests();
        assert_eq!(requests.len(), 2);
        let schema = json!({
            "type": "object",
            "required": ["category"],
            "properties": {"category": {"type": "string", "enum": ["billing", "bug"]}},
        });
        match api {
            Api::OpenAi => {
                let format = &requests[0].body["response_format"];
                assert_eq!(format["type"], "json_schema", "{format}");
                assert_eq!(format["json_schema"]["schema"], schema);
            }
            Api::Anthropic => {
                let system = requests[0].body["system"].as_str().unwrap();
                assert!(
                    system.starts_with("Answer with only a JSON value"),
                    "{system}"
                );
                assert!(system.ends_with(&schema.to_string()), "{system}");
            }
        }
        let repair = messages(&requests[1]);
        let turns: Vec<(String, String)> = repair
            .into_iter()
            .filter(|(role, _)| role != "system")
            .collect();
        assert_eq!(turns.len(), 3, "{turns:?}");
        assert_eq!(
            turns[0],
            (
                "user".to_string(),
                "Classify this ticket: I was charged twice".to_string()
            )
        );
        assert_eq!(turns[1], ("assistant".to_string(), invalid.to_string()));
        assert!(turns[2].1.starts_with(problem), "{}", turns[2].1);
        assert_eq!(last_user_text(&requests[1]), turns[2].1);
    }
}

async fn structured_output_fails_after_one_repair(api: Api) {
    let s = setup(api, &[("prompts/classify.yaml", CLASSIFY)]).await;
    s.fake.push(Reply::text("not json"));
    s.fake.push(Reply::text("still not json"));
    s.fake.push(Reply::text(r#"{"category": "bug"}"#));

    let outcome = s.run("classify", json!({"ticket": "It crashes"})).await;

    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:#?}");
    assert_eq!(outcome.output, None);
    let error = outcome.error.as_deref().unwrap();
    assert!(error.starts_with("step `classify` failed: the reply is not valid JSON for the output schema, even after one repair attempt: it is not JSON"), "{error}");
    let record = step(&outcome);
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.output_text.as_deref(), Some("still not json"));
    assert_eq!(record.attempts, 2);
    assert_eq!(s.fake.request_count(), 2, "only one repair is asked for");
    assert_eq!(s.fake.pending_replies(), 1);
}

async fn flow_step_reads_previous_json_output(api: Api) {
    let s = setup(
        api,
        &[
            ("prompts/classify.yaml", CLASSIFY),
            ("prompts/answer.yaml", ANSWER),
            ("flows/triage.yaml", TRIAGE),
        ],
    )
    .await;
    s.fake.push(Reply::text(r#"{"category": "bug"}"#));
    s.fake.push(Reply::text("We are fixing it."));

    let outcome = s
        .run("triage", json!({"ticket": "The app crashes on start"}))
        .await;

    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    assert_eq!(outcome.target_kind, TargetKind::Flow);
    assert_eq!(outcome.output, Some(json!("We are fixing it.")));
    let steps: Vec<(u32, &str, &str, Option<&Value>)> = outcome
        .steps
        .iter()
        .map(|r| {
            (
                r.step_index,
                r.step_id.as_str(),
                r.prompt.as_str(),
                r.output.as_ref(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (0, "classify", "classify", Some(&json!({"category": "bug"}))),
            (1, "answer", "answer", Some(&json!("We are fixing it.")))
        ]
    );
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        last_user_text(&requests[1]),
        "Category: bug. Ticket: The app crashes on start"
    );
    assert_eq!(
        s.events.kinds(),
        [
            "run_started",
            "step_started",
            "call_attempt",
            "step_finished",
            "step_started",
            "call_attempt",
            "step_finished",
            "run_finished"
        ]
    );
}

async fn streaming_matches_non_streaming(api: Api) {
    let s = setup(api, &[("prompts/summarize.yaml", &summarize(""))]).await;
    let reply = "Streaming arrives one word at a time.";

    s.fake.push(Reply::text(reply));
    let deltas = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = deltas.clone();
    let on_delta: Arc<flowrun_core::provider::DeltaFn> =
        Arc::new(move |d: &str| sink.lock().unwrap().push(d.to_string()));
    let streamed = s
        .exec
        .run(RunRequest::new("summarize", json!({"text": "x"})).streaming(on_delta))
        .await
        .unwrap();

    s.fake.push(Reply::text(reply));
    let plain = s.run("summarize", json!({"text": "x"})).await;

    let deltas = deltas.lock().unwrap().clone();
    assert!(
        deltas.len() > 1,
        "one delta per word expected, got {deltas:?}"
    );
    assert_eq!(deltas.concat(), reply);
    assert_eq!(streamed.status, RunStatus::Succeeded, "{streamed:#?}");
    assert_eq!(streamed.output, Some(json!(reply)));
    let (streamed, plain) = (step(&streamed), step(&plain));
    assert_eq!(streamed.output, plain.output);
    assert_eq!(streamed.output_text, plain.output_text);
    assert_eq!(streamed.usage, plain.usage);
    assert_eq!(streamed.usage.output_tokens, 7);
    let requests = s.fake.requests();
    assert_eq!(
        requests.iter().map(|r| r.stream).collect::<Vec<_>>(),
        [true, false]
    );
}

async fn cancellation_ends_the_run(api: Api) {
    let s = setup(
        api,
        &[("prompts/summarize.yaml", &summarize("timeout: 60s"))],
    )
    .await;
    s.fake.push(Reply::hang());
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });

    let run = s
        .exec
        .run(RunRequest::new("summarize", json!({"text": "x"})).with_cancel(cancel));
    let outcome = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the cancelled run ends")
        .unwrap();
    canceller.await.unwrap();

    assert_eq!(outcome.status, RunStatus::Cancelled, "{outcome:#?}");
    assert_eq!(outcome.output, None);
    assert_eq!(
        outcome.error.as_deref(),
        Some("step `summarize` failed: cancelled")
    );
    assert_eq!(step(&outcome).status, RunStatus::Cancelled);
    assert_eq!(
        error_kinds(&s.events.attempts()),
        [Some("cancelled".to_string())]
    );
    assert_eq!(
        s.events.kinds(),
        [
            "run_started",
            "step_started",
            "call_attempt",
            "step_finished",
            "run_finished"
        ]
    );
    let Some(RunEvent::RunFinished(end)) = s.events.all().pop() else {
        panic!("run_finished expected")
    };
    assert_eq!(end.status, RunStatus::Cancelled);
    assert_eq!(s.fake.request_count(), 1);
}

async fn missing_api_key_names_the_variable(api: Api) {
    let s = setup(
        api,
        &[("prompts/summarize.yaml", &summarize("model: locked"))],
    )
    .await;

    let outcome = s.run("summarize", json!({"text": "x"})).await;

    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:#?}");
    let error = outcome.error.as_deref().unwrap();
    assert!(
        error.contains("environment variable `MISSING_KEY` is not set"),
        "{error}"
    );
    assert!(error.contains("provider `nokey`"), "{error}");
    assert_eq!(
        error_kinds(&s.events.attempts()),
        [Some("config".to_string())],
        "a missing key is not retried"
    );
    assert_eq!(s.fake.request_count(), 0);
}

#[tokio::test]
async fn invalid_input_is_rejected_before_the_run() {
    let s = setup(Api::OpenAi, &[("prompts/summarize.yaml", &summarize(""))]).await;
    let cases = [
        (json!({}), "text", "missing required string input"),
        (
            json!({"text": "x", "txt": "y"}),
            "txt",
            "not a declared input; did you mean `text`?",
        ),
        (
            json!("just text"),
            "input",
            "the input must be an object of named values, not string",
        ),
    ];
    for (input, field, message) in cases {
        let err = s
            .exec
            .run(RunRequest::new("summarize", input.clone()))
            .await
            .unwrap_err();
        let ExecError::InvalidInput(errors) = &err else {
            panic!("InvalidInput expected for {input}, got {err:?}")
        };
        let shown: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(shown, [(field, message)], "for {input}");
    }
    let err = s
        .exec
        .run(RunRequest::new("sumarize", json!({"text": "x"})))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ExecError::UnknownTarget(
            "no prompt or flow named `sumarize`; did you mean `summarize`?".into()
        )
    );
    assert!(s.events.all().is_empty(), "{:?}", s.events.all());
    assert_eq!(s.fake.request_count(), 0);
}
