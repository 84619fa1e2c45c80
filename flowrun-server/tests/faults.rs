//! A flaky provider: the fake LLM answers 20% of calls with HTTP 500 and 10% with 429 and
//! `Retry-After: 1`; every run of a three-step flow still succeeds within the flow's retry
//! budget, and every failed call was retried (the step records count the attempts the fake
//! server saw).
//!
//! The store is a parameter, so the same test runs on every [`ServerStore`].

use std::sync::Arc;
use std::time::Duration;

use flowrun_client::{BundleFile, Client, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm};
use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::{ServerStore, SqliteStore};
use flowrun_server::{Server, ServerConfig};
use futures::StreamExt;
use serde_json::json;

const RUNS: usize = 150;
/// Attempts after the first, per call. With 30% faults, a call fails 11 times in a row with
/// probability 0.3^11 ≈ 2e-6.
const RETRIES: u32 = 10;

/// Three steps, each echoing its text with a letter in front; retries with a short backoff and
/// a `max_backoff` above the fake's `Retry-After`, so a 429 waits rather than gives up.
fn bundle(fake: &FakeLlm) -> Vec<BundleFile> {
    let file = |path: &str, text: String| BundleFile {
        path: path.into(),
        text,
    };
    let prompt = |letter: &str| {
        format!("input: {{ text: string }}\nmessages:\n  - user: \"{letter} {{{{ text }}}}\"\n")
    };
    vec![
        file(
            "flowrun.yaml",
            format!(
                "providers:\n  fake: {{ kind: openai, base_url: \"{}\" }}\n\
                 defaults: {{ model: fake/m1, retries: {RETRIES}, backoff: 5ms, max_backoff: 2s, timeout: 30s }}\n",
                fake.openai_base_url()
            ),
        ),
        file("prompts/a.yaml", prompt("A")),
        file("prompts/b.yaml", prompt("B")),
        file("prompts/c.yaml", prompt("C")),
        file(
            "flows/chain.yaml",
            "input: { n: string }\nsteps:\n  - id: a\n    prompt: a\n    with: { text: \"{{ input.n }}\" }\n  - id: b\n    prompt: b\n    with: { text: \"{{ steps.a.output }}\" }\n  - id: c\n    prompt: c\n    with: { text: \"{{ steps.b.output }}\" }\noutput: \"{{ steps.c.output }}\"\n".into(),
        ),
    ]
}

/// Runs the fault test on `store`.
async fn every_run_succeeds_through_faults(store: Arc<dyn ServerStore>) {
    let fake = FakeLlm::start(
        FakeConfig::default()
            .with_fail_500(0.2)
            .with_fail_429(0.1, Some(1))
            .with_seed(5),
    )
    .await
    .expect("fake");
    let (_, token) = create_key(&*store, "*", Role::Admin).await.expect("key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ServerConfig {
        workers: 16,
        poll: Duration::from_millis(50),
        ..ServerConfig::default()
    };
    let server = Server::start(listener, store.clone(), config)
        .await
        .expect("start");
    let client = Client::new(format!("http://{}", server.addr()), Some(token)).expect("client");
    let up = client.upload_bundle(&bundle(&fake)).await.expect("upload");
    client.deploy("prod", &up.id).await.expect("deploy");

    let runs: Vec<(usize, flowrun_client::Run)> = futures::stream::iter(0..RUNS)
        .map(|n| {
            let client = client.clone();
            async move {
                let sub = client
                    .submit("prod", "chain", &json!({ "n": n.to_string() }), None)
                    .await
                    .expect("submit");
                (n, client.wait_run(&sub.id).await.expect("wait"))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;

    let mut attempts = 0;
    for (n, run) in &runs {
        assert_eq!(run.status, RunStatus::Succeeded, "run {n}: {run:?}");
        assert_eq!(
            run.output,
            Some(json!(format!("echo: C echo: B echo: A {n}"))),
            "run {n}"
        );
        let steps = store.steps(&run.id).await.expect("steps");
        assert_eq!(steps.len(), 3, "run {n}");
        for s in &steps {
            assert!(
                (1..=RETRIES + 1).contains(&s.attempts),
                "run {n} step {}: {} attempts",
                s.step_id,
                s.attempts
            );
            attempts += s.attempts as usize;
        }
    }
    // Every call the fake answered was an attempt of a committed step: 3 successes per run,
    // and every injected fault was retried (none ended a step).
    let counts = fake.reply_counts();
    assert_eq!(counts.text, 3 * RUNS as u64, "{counts:?}");
    assert_eq!(attempts, fake.request_count(), "{counts:?}");
    assert_eq!(counts.total(), counts.text + counts.error, "{counts:?}");
    // Both kinds of fault happened, and nothing else failed, so the retries were exercised.
    let errors = fake.error_counts();
    let (e500, e429) = (errors.get(&500).copied(), errors.get(&429).copied());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(e500 > Some(0) && e429 > Some(0), "{errors:?}");
    eprintln!(
        "{RUNS} runs: {} calls, {errors:?} faults ({:.0}%)",
        counts.total(),
        100.0 * counts.error as f64 / counts.total() as f64
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_succeeds_through_500s_and_429s_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = SqliteStore::open(&dir.path().join("server.db")).expect("open");
    every_run_succeeds_through_faults(Arc::new(store)).await;
}
