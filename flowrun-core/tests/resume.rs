//! Resuming a run that an earlier attempt did not finish ([`RunRequest::resuming`]): steps
//! with a finished record are reused (no model call, `StepReused`), the first step without
//! one and every later step run, and the run's totals count both.
//!
//! Real HTTP on loopback through the OpenAI provider against the in-process fake LLM server,
//! as in `executor.rs`.

use std::sync::{Arc, Mutex};

use flowrun_core::event::{RunEvent, StepRecord};
use flowrun_core::provider::DeltaFn;
use flowrun_core::{EventSink, Executor, Project, RunOutcome, RunRequest, RunStatus, SourceFile};
use flowrun_fakellm::{FakeConfig, FakeLlm, RecordedRequest, Reply, Usage as FakeUsage};
use serde_json::json;

/// Provider `fake` on the fake server; every model priced, no retries worth waiting for.
fn config(fake: &FakeLlm) -> String {
    format!(
        r#"name: resume-tests
providers:
  fake: {{ kind: openai, base_url: "{}", api_key_env: FAKE_KEY }}
models:
  main: {{ provider: fake, model: fake-small }}
defaults:
  model: main
  timeout: 500ms
  retries: 0
  backoff: 10ms
pricing:
  fake-small: {{ input_per_mtok: 2.0, output_per_mtok: 8.0 }}
"#,
        fake.openai_base_url()
    )
}

const DRAFT: &str = r#"
input: { topic: string }
messages:
  - user: "Draft about {{ topic }}"
"#;

const CRITIQUE: &str = r#"
input: { draft: string }
messages:
  - user: "Critique: {{ draft }}"
"#;

const REVISE: &str = r#"
input: { draft: string, critique: string }
messages:
  - user: "Revise: {{ draft }} / {{ critique }}"
"#;

/// `flows/write.yaml`: draft, critique, revise; each step reads the ones before it.
const WRITE: &str = r#"
input: { topic: string }
steps:
  - id: draft
    prompt: draft
    with: { topic: "{{ input.topic }}" }
  - id: critique
    prompt: critique
    with: { draft: "{{ steps.draft.output }}" }
  - id: revise
    prompt: revise
    with:
      draft: "{{ steps.draft.output }}"
      critique: "{{ steps.critique.output }}"
"#;

/// `flows/review.yaml`: critique then revise, called by `flows/outer.yaml`.
const REVIEW: &str = r#"
input: { draft: string }
steps:
  - id: critique
    prompt: critique
    with: { draft: "{{ input.draft }}" }
  - id: revise
    prompt: revise
    with:
      draft: "{{ input.draft }}"
      critique: "{{ steps.critique.output }}"
"#;

/// `flows/outer.yaml`: a prompt, a nested flow of two steps, a prompt (step indices 0 to 3).
const OUTER: &str = r#"
input: { topic: string }
steps:
  - id: draft
    prompt: draft
    with: { topic: "{{ input.topic }}" }
  - id: review
    flow: review
    with: { draft: "{{ steps.draft.output }}" }
  - id: polish
    prompt: critique
    with: { draft: "{{ steps.review.output }}" }
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
    fn take(&self) -> Vec<RunEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn kinds(events: &[RunEvent]) -> Vec<&'static str> {
    events
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

/// The records a durable store would hold: every `StepFinished`, in order.
fn finished(events: &[RunEvent]) -> Vec<StepRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepFinished(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn reused(events: &[RunEvent]) -> Vec<StepRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepReused(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn user_text(request: &RecordedRequest) -> String {
    let messages = request.body["messages"].as_array().expect("messages");
    let last = messages.last().expect("a message");
    last["content"].as_str().expect("text content").to_string()
}

struct Setup {
    fake: FakeLlm,
    events: Arc<Events>,
    exec: Executor,
}

async fn setup() -> Setup {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let sources = vec![
        SourceFile::new("flowrun.yaml", config(&fake)),
        SourceFile::new("prompts/draft.yaml", DRAFT),
        SourceFile::new("prompts/critique.yaml", CRITIQUE),
        SourceFile::new("prompts/revise.yaml", REVISE),
        SourceFile::new("flows/write.yaml", WRITE),
        SourceFile::new("flows/review.yaml", REVIEW),
        SourceFile::new("flows/outer.yaml", OUTER),
    ];
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
    async fn run(&self, req: RunRequest) -> RunOutcome {
        self.exec.run(req).await.unwrap()
    }

    /// Scripts one reply per text, each with its own usage (so totals tell steps apart).
    fn script(&self, texts: &[&str]) {
        for (i, text) in texts.iter().enumerate() {
            let n = i as u64 + 1;
            self.fake
                .push(Reply::text(*text).with_usage(FakeUsage::new(100 * n, 10 * n)));
        }
    }

    /// Runs `flow/write` once from the start: its outcome and events.
    async fn first_write(&self) -> (RunOutcome, Vec<RunEvent>) {
        self.script(&["D", "C", "R"]);
        let outcome = self.run(write()).await;
        assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
        assert_eq!(self.fake.request_count(), 3);
        self.fake.clear_requests();
        (outcome, self.events.take())
    }
}

fn write() -> RunRequest {
    RunRequest::new("flow/write", json!({"topic": "tides"}))
}

#[tokio::test]
async fn resumes_at_the_first_unfinished_step() {
    let s = setup().await;
    let (first, events) = s.first_write().await;
    let records = finished(&events);
    assert_eq!(records.len(), 3);

    // The first attempt died after committing two steps; the retry answers the third the same.
    s.fake
        .push(Reply::text("R").with_usage(FakeUsage::new(300, 30)));
    let resumed = s
        .run(
            write()
                .with_run_id(first.run_id.clone())
                .resuming(records[..2].to_vec()),
        )
        .await;
    let events = s.events.take();

    assert_eq!(s.fake.request_count(), 1, "only the third step calls");
    assert_eq!(
        user_text(&s.fake.requests()[0]),
        "Revise: D / C",
        "the third step reads the reused outputs"
    );
    assert_eq!(resumed.status, RunStatus::Succeeded, "{resumed:#?}");
    assert_eq!(resumed.run_id, first.run_id);
    assert_eq!(resumed.output, first.output);
    assert_eq!(resumed.usage, first.usage);
    assert_eq!(resumed.cost, first.cost);
    assert!(resumed.cost.is_known());
    assert_eq!(resumed.steps[..2], records[..2]);
    assert_eq!(resumed.steps.len(), 3);
    assert_eq!(resumed.steps[2].step_index, 2);
    assert_eq!(resumed.steps[2].usage, records[2].usage);

    assert_eq!(
        kinds(&events),
        [
            "run_started",
            "step_reused",
            "step_reused",
            "step_started",
            "call_attempt",
            "step_finished",
            "run_finished",
        ]
    );
    let RunEvent::RunStarted(start) = &events[0] else {
        unreachable!()
    };
    assert_eq!(start.run_id, first.run_id, "RunStarted again, same id");
    assert_eq!(reused(&events), records[..2]);
    let RunEvent::StepStarted(step) = &events[3] else {
        unreachable!()
    };
    assert_eq!((step.step_index, step.step_id.as_str()), (2, "revise"));
    let RunEvent::RunFinished(end) = &events[6] else {
        unreachable!()
    };
    assert_eq!((end.usage, &end.cost), (first.usage, &first.cost));
}

#[tokio::test]
async fn resuming_a_finished_run_calls_nothing() {
    let s = setup().await;
    let (first, events) = s.first_write().await;
    let records = finished(&events);

    let resumed = s
        .run(
            write()
                .with_run_id(first.run_id.clone())
                .resuming(records.clone()),
        )
        .await;
    let events = s.events.take();

    assert_eq!(s.fake.request_count(), 0);
    assert_eq!(resumed.status, RunStatus::Succeeded, "{resumed:#?}");
    assert_eq!(resumed.output, first.output);
    assert_eq!((resumed.usage, &resumed.cost), (first.usage, &first.cost));
    assert_eq!(resumed.steps, records);
    assert_eq!(
        kinds(&events),
        [
            "run_started",
            "step_reused",
            "step_reused",
            "step_reused",
            "run_finished"
        ]
    );
}

#[tokio::test]
async fn a_record_for_another_prompt_is_not_reused() {
    let s = setup().await;
    let (first, events) = s.first_write().await;
    let mut records = finished(&events);
    // Step 1's record answers a prompt the project no longer runs there.
    records[1].prompt = "summarize".into();

    s.script(&["C2", "R2"]);
    let resumed = s
        .run(
            write()
                .with_run_id(first.run_id.clone())
                .resuming(records.clone()),
        )
        .await;
    let events = s.events.take();

    // Step 1 runs again, and so does step 2: its record was computed from the old step 1.
    let texts: Vec<String> = s.fake.requests().iter().map(user_text).collect();
    assert_eq!(texts, ["Critique: D", "Revise: D / C2"]);
    assert_eq!(resumed.output, Some(json!("R2")));
    assert_eq!(reused(&events), records[..1]);
    assert_eq!(
        kinds(&events)
            .iter()
            .filter(|k| **k == "step_started")
            .count(),
        2
    );
    let indices: Vec<u32> = resumed.steps.iter().map(|r| r.step_index).collect();
    assert_eq!(indices, [0, 1, 2]);
}

#[tokio::test]
async fn a_failed_record_is_not_reused() {
    let s = setup().await;
    // The first attempt fails at step 1 (a 400 is not retried).
    s.fake
        .push(Reply::text("D").with_usage(FakeUsage::new(100, 10)));
    s.fake.push(Reply::error(400, "bad field"));
    let first = s.run(write()).await;
    assert_eq!(first.status, RunStatus::Failed, "{first:#?}");
    let records = finished(&s.events.take());
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].status, RunStatus::Failed);
    s.fake.clear_requests();

    s.script(&["C", "R"]);
    let resumed = s
        .run(
            write()
                .with_run_id(first.run_id.clone())
                .resuming(records.clone()),
        )
        .await;
    let events = s.events.take();

    assert_eq!(resumed.status, RunStatus::Succeeded, "{resumed:#?}");
    assert_eq!(resumed.output, Some(json!("R")));
    assert_eq!(s.fake.request_count(), 2, "steps 1 and 2 call");
    assert_eq!(reused(&events), records[..1]);
    assert_eq!(resumed.steps[1].status, RunStatus::Succeeded);
}

#[tokio::test]
async fn a_prompt_target_resumes() {
    let s = setup().await;
    s.script(&["A draft."]);
    let first = s
        .run(RunRequest::new("draft", json!({"topic": "tides"})))
        .await;
    let records = finished(&s.events.take());
    s.fake.clear_requests();

    let deltas = Arc::new(Mutex::new(String::new()));
    let sink = deltas.clone();
    let on_delta: Arc<DeltaFn> = Arc::new(move |d: &str| sink.lock().unwrap().push_str(d));
    let resumed = s
        .run(
            RunRequest::new("draft", json!({"topic": "tides"}))
                .with_run_id(first.run_id.clone())
                .resuming(records.clone())
                .streaming(on_delta),
        )
        .await;
    let events = s.events.take();

    assert_eq!(s.fake.request_count(), 0);
    assert_eq!(resumed.status, RunStatus::Succeeded, "{resumed:#?}");
    assert_eq!(resumed.output, Some(json!("A draft.")));
    assert_eq!((resumed.usage, &resumed.cost), (first.usage, &first.cost));
    assert_eq!(
        *deltas.lock().unwrap(),
        "A draft.",
        "a streaming caller gets the text"
    );
    assert_eq!(
        kinds(&events),
        ["run_started", "step_reused", "run_finished"]
    );
}

#[tokio::test]
async fn nested_flow_steps_line_up_with_the_first_attempt() {
    let s = setup().await;
    s.script(&["D", "C", "R", "P"]);
    let first = s
        .run(RunRequest::new("flow/outer", json!({"topic": "tides"})))
        .await;
    assert_eq!(first.status, RunStatus::Succeeded, "{first:#?}");
    let records = finished(&s.events.take());
    let ids: Vec<(u32, &str)> = records
        .iter()
        .map(|r| (r.step_index, r.step_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [(0, "draft"), (1, "critique"), (2, "revise"), (3, "polish")]
    );
    s.fake.clear_requests();

    s.fake
        .push(Reply::text("P").with_usage(FakeUsage::new(400, 40)));
    let resumed = s
        .run(
            RunRequest::new("flow/outer", json!({"topic": "tides"}))
                .with_run_id(first.run_id.clone())
                .resuming(records[..3].to_vec()),
        )
        .await;

    let texts: Vec<String> = s.fake.requests().iter().map(user_text).collect();
    assert_eq!(texts, ["Critique: R"]);
    assert_eq!(resumed.output, first.output);
    assert_eq!((resumed.usage, &resumed.cost), (first.usage, &first.cost));
    assert_eq!(reused(&s.events.take()), records[..3]);
}

/// Without a run id the run gets a new one; reused records are reported under it.
#[tokio::test]
async fn reused_records_carry_the_current_run_id() {
    let s = setup().await;
    let (first, events) = s.first_write().await;
    let records = finished(&events);

    let resumed = s.run(write().resuming(records.clone())).await;

    assert_ne!(resumed.run_id, first.run_id);
    assert_eq!(s.fake.request_count(), 0);
    assert!(resumed.steps.iter().all(|r| r.run_id == resumed.run_id));
    assert_eq!(resumed.output, first.output);
}
