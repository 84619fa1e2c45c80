//! Two replicas on one PostgreSQL database share the queue: 200 runs of a three-step flow
//! are submitted to one, the other picks work up through NOTIFY, then the first crashes
//! (`Server::abort`) half-way. The survivor rescues its expired leases and finishes every run,
//! each exactly once, without calling any step's model again once that step was committed.
//! And a run executing on one replica is cancelled through the other.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Backend, TestDb};
use flowrun_client::{BundleFile, Client, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::{RunFilter, RunState, ServerStore};
use flowrun_server::{Server, ServerConfig};
use futures::StreamExt;
use serde_json::json;

const RUNS: usize = 200;

/// Three steps on three models; each prompt carries the run's tag through.
fn bundle(fake: &FakeLlm) -> Vec<BundleFile> {
    let file = |path: &str, text: String| BundleFile {
        path: path.into(),
        text,
    };
    let prompt = |letter: &str, model: &str| {
        format!(
            "model: fake/{model}\ninput: {{ text: string }}\nmessages:\n  - user: \"{letter} {{{{ text }}}}\"\n"
        )
    };
    vec![
        file(
            "flowrun.yaml",
            format!(
                "providers:\n  fake: {{ kind: openai, base_url: \"{}\" }}\ndefaults: {{ model: fake/m1, retries: 0, timeout: 60s }}\n",
                fake.openai_base_url()
            ),
        ),
        file("prompts/a.yaml", prompt("A", "m1")),
        file("prompts/b.yaml", prompt("B", "m2")),
        file("prompts/c.yaml", prompt("C", "m3")),
        file(
            "flows/three.yaml",
            "input: { text: string }\nsteps:\n  - id: one\n    prompt: a\n    with: { text: \"{{ input.text }}\" }\n  - id: two\n    prompt: b\n    with: { text: \"{{ steps.one.output }}\" }\n  - id: three\n    prompt: c\n    with: { text: \"{{ steps.two.output }}\" }\noutput: \"{{ steps.three.output }}\"\n".into(),
        ),
    ]
}

async fn replica(db: &TestDb) -> (Server, std::sync::Arc<dyn ServerStore>) {
    let store = db.open().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ServerConfig {
        workers: 4,
        lease: Duration::from_secs(1),
        // Long, so idle workers of the other replica are woken by NOTIFY, not by polling.
        poll: Duration::from_secs(2),
        grace: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server = Server::start(listener, store.clone(), config)
        .await
        .expect("start");
    (server, store)
}

fn tag(i: usize) -> String {
    format!("<r{i:04}>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_finishes_the_runs_of_one_that_crashed() {
    let Some(db) = TestDb::new(
        Backend::Postgres,
        "a_replica_finishes_the_runs_of_one_that_crashed",
    )
    .await
    else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default().with_latency(Duration::from_millis(60)))
        .await
        .expect("fake");
    let (a, store) = replica(&db).await;
    let (b, _) = replica(&db).await;
    let (_, secret) = create_key(&*store, "*", Role::Admin).await.expect("key");
    let client_a = Client::new(format!("http://{}", a.addr()), Some(secret.clone())).expect("a");
    let client_b = Client::new(format!("http://{}", b.addr()), Some(secret)).expect("b");
    let up = client_a
        .upload_bundle(&bundle(&fake))
        .await
        .expect("upload");
    client_a.deploy("prod", &up.id).await.expect("deploy");

    let ids: Vec<String> = futures::stream::iter(0..RUNS)
        .map(|i| {
            let client = client_a.clone();
            async move {
                let input = json!({ "text": tag(i) });
                client
                    .submit("prod", "three", &input, None)
                    .await
                    .expect("submit")
                    .id
            }
        })
        .buffered(16)
        .collect()
        .await;
    // Let both work a while, then crash A with runs in flight.
    let all = RunFilter {
        limit: 500,
        ..RunFilter::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = store
            .runs(&RunFilter {
                status: Some(RunState::Succeeded),
                ..all.clone()
            })
            .await
            .expect("runs");
        if done.len() >= RUNS / 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every step committed before the crash: its model must never be called again.
    let mut committed = HashSet::new();
    for id in &ids {
        for s in store.steps(id).await.expect("steps") {
            committed.insert((id.clone(), s.step_index));
        }
    }
    a.abort();

    let finished = tokio::time::timeout(Duration::from_secs(180), async {
        let mut out = Vec::new();
        for id in &ids {
            out.push(client_b.wait_run(id).await.expect("wait"));
        }
        out
    })
    .await
    .expect("the surviving replica finishes every run");

    let stored = store.runs(&all).await.expect("runs");
    assert_eq!(stored.len(), RUNS, "no run lost or duplicated");
    let mut rescued = 0;
    for (i, run) in finished.iter().enumerate() {
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        let t = tag(i);
        assert_eq!(
            run.output,
            Some(json!(format!("echo: C echo: B echo: A {t}")))
        );
        assert_eq!(run.steps.len(), 3, "{run:?}");
        if run.attempts > 1 {
            rescued += 1;
        }
    }
    assert!(rescued > 0, "the crash left no run to rescue");

    // Calls per (run, step), from what the fake LLM server saw.
    let mut calls: HashMap<(String, u32), usize> = HashMap::new();
    for (index, model) in ["m1", "m2", "m3"].iter().enumerate() {
        for request in fake.requests_for_model(model) {
            let body = request.body.to_string();
            let i = (0..RUNS)
                .find(|&i| body.contains(&tag(i)))
                .expect("every call carries its run's tag");
            *calls.entry((ids[i].clone(), index as u32)).or_default() += 1;
        }
    }
    for (i, id) in ids.iter().enumerate() {
        for index in 0..3u32 {
            let n = calls.get(&(id.clone(), index)).copied().unwrap_or(0);
            let key = (id.clone(), index);
            if committed.contains(&key) {
                assert_eq!(
                    n, 1,
                    "run {i} step {index} was committed before the crash yet called {n} times"
                );
            } else {
                // At most one call cut short by the crash, then the survivor's.
                assert!(
                    (1..=2).contains(&n),
                    "run {i} step {index} called {n} times"
                );
            }
        }
    }
    assert!(
        committed.len() >= RUNS / 3 * 3,
        "the snapshot holds the finished runs' steps"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_one_replica_is_cancelled_through_the_other() {
    let Some(db) = TestDb::new(
        Backend::Postgres,
        "a_run_on_one_replica_is_cancelled_through_the_other",
    )
    .await
    else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push_for_model("m1", Reply::hang());
    // Only B runs at first, so B claims the run.
    let (b, store) = replica(&db).await;
    let (_, secret) = create_key(&*store, "*", Role::Admin).await.expect("key");
    let client_b = Client::new(format!("http://{}", b.addr()), Some(secret.clone())).expect("b");
    let up = client_b
        .upload_bundle(&bundle(&fake))
        .await
        .expect("upload");
    client_b.deploy("prod", &up.id).await.expect("deploy");
    let sub = client_b
        .submit("prod", "three", &json!({ "text": tag(0) }), None)
        .await
        .expect("submit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fake.requests_for_model("m1").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a, _) = replica(&db).await;
    let client_a = Client::new(format!("http://{}", a.addr()), Some(secret)).expect("a");
    let asked = client_a.cancel(&sub.id).await.expect("cancel");
    assert_eq!(asked.status, RunStatus::Running);
    // A long poll on A returns once B has ended the run.
    let run = tokio::time::timeout(Duration::from_secs(30), client_a.wait_run(&sub.id))
        .await
        .expect("in time")
        .expect("wait");
    assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");
    assert_eq!(fake.requests_for_model("m2").len(), 0);
    a.shutdown().await;
    b.shutdown().await;
}
