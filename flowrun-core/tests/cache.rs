//! The response cache, cassettes and provider rate limits end to end: the executor against the
//! in-process fake LLM server (`flowrun-fakellm`) on loopback, through the real OpenAI provider.
//!
//! What the fake server received is the proof of what was (not) called: a cache hit leaves it
//! untouched, a replay works with the server shut down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowrun_core::cache::{Recording, ResponseCache};
use flowrun_core::cassette::Cassette;
use flowrun_core::event::{CallRecord, RunEvent};
use flowrun_core::provider::Usage;
use flowrun_core::{EventSink, Executor, Project, RunOutcome, RunRequest, RunStatus, SourceFile};
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply, Usage as FakeUsage};
use serde_json::{Value, json};

/// `flowrun.yaml`: provider `fake` (OpenAI protocol) on the fake server, with `provider_extra`
/// added to its spec; alias `main` on `fake-small`, priced; no retries.
fn config(fake: &FakeLlm, provider_extra: &str) -> String {
    format!(
        r#"providers:
  fake: {{ kind: openai, base_url: "{}", api_key_env: FAKE_KEY{provider_extra} }}
models:
  main: {{ provider: fake, model: fake-small }}
defaults:
  model: main
  timeout: 5s
  retries: 0
pricing:
  fake-small: {{ input_per_mtok: 2.0, output_per_mtok: 8.0 }}
"#,
        fake.openai_base_url()
    )
}

const SUMMARIZE: &str = r#"
input:
  text: string
messages:
  - system: You are terse.
  - user: "Summarize: {{ text }}"
"#;

/// Collects every call attempt.
#[derive(Default)]
struct Calls(Mutex<Vec<CallRecord>>);

impl EventSink for Calls {
    fn emit(&self, event: &RunEvent) {
        if let RunEvent::CallAttempt(c) = event {
            self.0.lock().unwrap().push(c.clone());
        }
    }
}

impl Calls {
    fn all(&self) -> Vec<CallRecord> {
        self.0.lock().unwrap().clone()
    }
}

async fn fake_server() -> FakeLlm {
    FakeLlm::start(FakeConfig::default()).await.unwrap()
}

fn project(fake: &FakeLlm, provider_extra: &str) -> Arc<Project> {
    let files = vec![
        SourceFile::new("flowrun.yaml", config(fake, provider_extra)),
        SourceFile::new("prompts/summarize.yaml", SUMMARIZE),
    ];
    match Project::load(files) {
        Ok(p) => Arc::new(p),
        Err(diags) => panic!("test project does not load: {diags:?}"),
    }
}

/// An executor for `project` whose only key is `FAKE_KEY`, reporting to `calls`, with an
/// optional cache.
fn executor(
    project: &Arc<Project>,
    calls: &Arc<Calls>,
    cache: Option<Arc<dyn ResponseCache>>,
    replay_only: bool,
) -> Executor {
    let mut builder = Executor::builder(project.clone())
        .sink(calls.clone())
        .env(|name| (name == "FAKE_KEY").then(|| "sk-test-secret".to_string()))
        .replay_only(replay_only);
    if let Some(cache) = cache {
        builder = builder.cache(cache);
    }
    builder.build().unwrap()
}

async fn summarize(exec: &Executor, text: &str) -> RunOutcome {
    exec.run(RunRequest::new("summarize", json!({ "text": text })))
        .await
        .unwrap()
}

fn reply(text: &str) -> Reply {
    Reply::text(text).with_usage(FakeUsage::new(1000, 250))
}

const USAGE: Usage = Usage {
    input_tokens: 1000,
    output_tokens: 250,
    cached_tokens: 0,
    reasoning_tokens: 0,
};

#[tokio::test]
async fn second_identical_run_is_a_cache_hit() {
    let fake = fake_server().await;
    let project = project(&fake, "");
    let calls = Arc::new(Calls::default());
    let cache = Arc::new(Cassette::new());
    let exec = executor(&project, &calls, Some(cache.clone()), false);
    fake.push(reply("A short summary."));

    let first = summarize(&exec, "the report").await;
    assert_eq!(first.status, RunStatus::Succeeded, "{first:#?}");
    assert!(!first.cached && !first.steps[0].cached);
    assert_eq!(fake.request_count(), 1);
    assert_eq!(cache.len(), 1, "the reply is stored");
    // (1000 × 2.0 + 250 × 8.0) / 1e6
    assert_eq!(first.cost.usd_if_known(), Some(0.004));

    let second = summarize(&exec, "the report").await;
    assert_eq!(fake.request_count(), 1, "the provider is not called again");
    assert_eq!(second.status, RunStatus::Succeeded, "{second:#?}");
    assert_eq!(second.output, Some(json!("A short summary.")));
    assert!(second.cached);
    let step = &second.steps[0];
    assert!(step.cached);
    assert_eq!(step.model.as_deref(), Some("fake/fake-small"));
    assert_eq!(step.attempts, 1);
    assert_eq!(step.usage, USAGE, "the original usage");
    assert_eq!(
        second.cost.usd_if_known(),
        Some(0.0),
        "a hit is not paid again"
    );

    let calls = calls.all();
    assert_eq!(calls.len(), 2);
    assert!(!calls[0].cached);
    let hit = &calls[1];
    assert!(hit.cached);
    assert_eq!(
        (hit.provider.as_str(), hit.model.as_str()),
        ("fake", "fake-small")
    );
    assert_eq!(hit.usage, USAGE);
    assert_eq!(hit.cost.usd_if_known(), Some(0.0));
    assert_eq!(hit.error, None);
    assert_eq!(hit.raw_response, calls[0].raw_response);
}

#[tokio::test]
async fn a_hit_streams_its_text_as_one_delta() {
    let fake = fake_server().await;
    let project = project(&fake, "");
    let calls = Arc::new(Calls::default());
    let exec = executor(&project, &calls, Some(Arc::new(Cassette::new())), false);
    fake.push(reply("Streamed words, then cached."));
    let run = |deltas: Arc<Mutex<Vec<String>>>| {
        let on_delta = move |d: &str| deltas.lock().unwrap().push(d.to_string());
        exec.run(RunRequest::new("summarize", json!({"text": "x"})).streaming(Arc::new(on_delta)))
    };

    let live = Arc::new(Mutex::new(Vec::new()));
    let first = run(live.clone()).await.unwrap();
    assert!(!first.cached);
    assert_eq!(
        live.lock().unwrap().concat(),
        "Streamed words, then cached."
    );

    let replayed = Arc::new(Mutex::new(Vec::new()));
    let second = run(replayed.clone()).await.unwrap();
    assert!(second.cached);
    assert_eq!(*replayed.lock().unwrap(), ["Streamed words, then cached."]);
    assert_eq!(second.output, first.output);
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn a_different_input_misses() {
    let fake = fake_server().await;
    let project = project(&fake, "");
    let calls = Arc::new(Calls::default());
    let exec = executor(&project, &calls, Some(Arc::new(Cassette::new())), false);
    fake.push_all([reply("one"), reply("two")]);

    let a = summarize(&exec, "the report").await;
    let b = summarize(&exec, "another report").await;
    assert_eq!(fake.request_count(), 2);
    assert_eq!(
        (a.output, b.output),
        (Some(json!("one")), Some(json!("two")))
    );
    assert!(!b.cached);
    assert!(calls.all().iter().all(|c| !c.cached));
}

#[tokio::test]
async fn record_a_cassette_then_replay_it_without_the_server() {
    let fake = fake_server().await;
    let project = project(&fake, "");
    fake.push_all([reply("first summary"), reply("second summary")]);

    let cassette = Arc::new(Cassette::new());
    let recording = Arc::new(Recording::new(cassette.clone()));
    let calls = Arc::new(Calls::default());
    let recorder = executor(&project, &calls, Some(recording), false);
    let recorded = [
        summarize(&recorder, "the report").await,
        summarize(&recorder, "another report").await,
    ];
    assert!(
        recorded
            .iter()
            .all(|o| o.status == RunStatus::Succeeded && !o.cached)
    );
    assert_eq!(fake.request_count(), 2);
    let text = cassette.to_text();
    assert!(
        text.contains("\"content\": \"Summarize: the report\""),
        "{text}"
    );
    assert!(text.contains("\"text\": \"second summary\""), "{text}");
    // The provider's name and a hash of its configured endpoint: what the key is made of.
    assert!(text.contains("\"provider\": \"fake@"), "{text}");
    assert!(!text.contains("sk-test-secret"), "no key in a cassette");
    fake.shutdown().await;

    let replay = Arc::new(Cassette::from_text(&text).unwrap());
    assert_eq!(replay.to_text(), text);
    let calls = Arc::new(Calls::default());
    let player = executor(&project, &calls, Some(replay), true);
    for (input, recorded) in ["the report", "another report"].iter().zip(&recorded) {
        let outcome = summarize(&player, input).await;
        assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
        assert_eq!(outcome.output, recorded.output);
        assert_eq!(outcome.usage, recorded.usage);
        assert!(outcome.cached);
    }
    assert!(calls.all().iter().all(|c| c.cached));
}

#[tokio::test]
async fn recording_keeps_hits_from_another_cache() {
    let fake = fake_server().await;
    let project = project(&fake, "");
    fake.push(reply("from the provider"));
    let local = Arc::new(Cassette::new());
    let calls = Arc::new(Calls::default());
    summarize(&executor(&project, &calls, Some(local.clone()), false), "x").await;
    assert_eq!(fake.request_count(), 1);

    let cassette = Arc::new(Cassette::new());
    let recording = Arc::new(Recording::over(local.clone(), cassette.clone()));
    let outcome = summarize(&executor(&project, &calls, Some(recording), false), "x").await;
    assert!(outcome.cached);
    assert_eq!(fake.request_count(), 1);
    assert_eq!(
        cassette.entries(),
        local.entries(),
        "the hit is in the cassette"
    );
}

#[tokio::test]
async fn a_replay_miss_is_a_clear_error() {
    let fake = fake_server().await;
    let project = project(&fake, "");
    let calls = Arc::new(Calls::default());
    let exec = executor(&project, &calls, Some(Arc::new(Cassette::new())), true);

    let outcome = summarize(&exec, "never recorded").await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains(
            "no recorded response for this call (prompt summarize, model fake/fake-small); record one with --record"
        ),
        "{error}"
    );
    assert!(!outcome.cached);
    assert_eq!(fake.request_count(), 0, "replay never calls the provider");
    let calls = calls.all();
    assert_eq!(calls.len(), 1, "a miss is not retried");
    let kind = calls[0].error.as_ref().map(|e| e.kind.as_str());
    assert_eq!(kind, Some("config"));
}

#[tokio::test]
async fn replay_only_without_a_cache_calls_nothing() {
    let fake = fake_server().await;
    let project = project(&fake, "");
    let calls = Arc::new(Calls::default());
    let outcome = summarize(&executor(&project, &calls, None, true), "x").await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn a_rate_limit_spaces_calls() {
    let fake = fake_server().await;
    let project = project(&fake, ", rate_limit: 120");
    let calls = Arc::new(Calls::default());
    let exec = executor(&project, &calls, None, false);

    let started = Instant::now();
    let runs = ["a", "b", "c"].map(|t| summarize(&exec, t));
    let outcomes = futures::future::join_all(runs).await;
    let elapsed = started.elapsed();

    assert!(outcomes.iter().all(|o| o.status == RunStatus::Succeeded));
    assert_eq!(fake.request_count(), 3);
    // 120 per minute: one call every 0.5 s, the first at once. Lower bounds only.
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    let mut starts: Vec<i64> = calls.all().iter().map(|c| c.started_at_ms).collect();
    starts.sort();
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= 450, "calls started at {starts:?}");
    }
}

#[tokio::test]
async fn rate_limit_is_in_the_spec() {
    let fake = fake_server().await;
    let zero = Project::load(vec![SourceFile::new(
        "flowrun.yaml",
        config(&fake, ", rate_limit: 0"),
    )]);
    let Err(diags) = zero else {
        panic!("a rate limit of 0 is rejected")
    };
    let text = format!("{diags:?}");
    assert!(text.contains("rate_limit"), "{text}");
    let value: Value = serde_json::to_value(&project(&fake, ", rate_limit: 90").config).unwrap();
    assert_eq!(value["providers"]["fake"]["rate_limit"], json!(90));
}

/// Records (or replays) `summarize` on a provider configured with `base_url` and
/// `base_url_env: FAKE_URL`, the variable set to `url_env` when given.
fn moved_executor(
    base_url: &str,
    url_env: Option<String>,
    cache: Arc<dyn ResponseCache>,
    replay_only: bool,
) -> Executor {
    let config = format!(
        "providers:\n  fake: {{ kind: openai, base_url: \"{base_url}\", base_url_env: FAKE_URL, api_key_env: FAKE_KEY }}\nmodels:\n  main: {{ provider: fake, model: fake-small }}\ndefaults: {{ model: main, timeout: 5s, retries: 0 }}\n"
    );
    let project = Project::load(vec![
        SourceFile::new("flowrun.yaml", config),
        SourceFile::new("prompts/summarize.yaml", SUMMARIZE),
    ])
    .unwrap();
    Executor::builder(Arc::new(project))
        .env(move |name| match name {
            "FAKE_KEY" => Some("sk-test-secret".to_string()),
            "FAKE_URL" => url_env.clone(),
            _ => None,
        })
        .cache(cache)
        .replay_only(replay_only)
        .build()
        .unwrap()
}

#[tokio::test]
async fn base_url_env_moves_the_endpoint_but_not_the_cache_key() {
    let fake = fake_server().await;
    fake.push(reply("recorded through the override"));
    // The configured endpoint is a closed port: only the override reaches the fake.
    let closed = "http://127.0.0.1:9/v1";
    let cassette = Arc::new(Cassette::new());
    let recorder = moved_executor(
        closed,
        Some(fake.openai_base_url()),
        Arc::new(Recording::new(cassette.clone())),
        false,
    );
    let recorded = summarize(&recorder, "the report").await;
    assert_eq!(recorded.status, RunStatus::Succeeded, "{recorded:#?}");
    assert_eq!(fake.request_count(), 1);
    fake.shutdown().await;

    // Replayed without the override (as CI does): same key, a hit.
    let text = cassette.to_text();
    let replay = Arc::new(Cassette::from_text(&text).unwrap());
    let player = moved_executor(closed, None, replay.clone(), true);
    let replayed = summarize(&player, "the report").await;
    assert_eq!(replayed.status, RunStatus::Succeeded, "{replayed:#?}");
    assert_eq!(replayed.output, recorded.output);
    assert!(replayed.cached);

    // Another configured endpoint under the same name is another provider: a miss.
    let elsewhere = moved_executor("http://127.0.0.1:10/v1", None, replay, true);
    let missed = summarize(&elsewhere, "the report").await;
    assert_eq!(missed.status, RunStatus::Failed);
    assert!(
        missed
            .error
            .unwrap_or_default()
            .contains("no recorded response"),
    );
}
