//! An agent step on the server survives a crash: the server commits each finished turn, is
//! killed (`Server::abort`) while the agent's second model call is in flight, and a new server
//! on the same database resumes the agent after its committed turn, without repeating that
//! turn's model call or its tool's run. On SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::time::Duration;

use common::TestDb;
use flowrun_client::{BundleFile, Client, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::ServerStore;
use flowrun_server::{Server, ServerConfig};
use serde_json::json;

on_both!(a_crashed_agent_resumes_after_its_last_committed_turn);

/// An agent (model `fake-agent`) with one flow tool, `lookup_order`, whose flow calls
/// `fake-small`.
fn bundle(fake: &FakeLlm) -> Vec<BundleFile> {
    let file = |path: &str, text: &str| BundleFile {
        path: path.into(),
        text: text.into(),
    };
    vec![
        file(
            "flowrun.yaml",
            &format!(
                "providers:\n  fake: {{ kind: openai, base_url: \"{}\" }}\nmodels:\n  agent: {{ provider: fake, model: fake-agent }}\n  small: {{ provider: fake, model: fake-small }}\ndefaults: {{ model: small, retries: 0, timeout: 60s }}\n",
                fake.openai_base_url()
            ),
        ),
        file(
            "prompts/researcher.yaml",
            "model: agent\ninput: { question: string }\nmessages:\n  - user: \"{{ question }}\"\n",
        ),
        file(
            "prompts/describe_order.yaml",
            "input: { order_id: string }\nmessages:\n  - user: \"Describe order {{ order_id }}\"\n",
        ),
        file(
            "flows/order_lookup.yaml",
            "input: { order_id: string }\nsteps:\n  - id: d\n    prompt: describe_order\n    with: { order_id: \"{{ input.order_id }}\" }\n",
        ),
        file(
            "flows/support.yaml",
            "input: { question: string }\nsteps:\n  - id: research\n    agent:\n      instructions: researcher\n      tools:\n        - { name: lookup_order, flow: order_lookup }\n      max_turns: 4\n    with: { question: \"{{ input.question }}\" }\n",
        ),
    ]
}

async fn start(store: std::sync::Arc<dyn ServerStore>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ServerConfig {
        workers: 2,
        lease: Duration::from_millis(800),
        poll: Duration::from_millis(50),
        grace: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    Server::start(listener, store, config).await.expect("start")
}

async fn a_crashed_agent_resumes_after_its_last_committed_turn(db: TestDb) {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push_for_model(
        "fake-agent",
        Reply::tool_call("lookup_order", json!({ "order_id": "A-17" })),
    );
    fake.push_for_model("fake-small", Reply::text("Order A-17: shipped."));
    // The second turn's model call never answers: the server dies with it in flight.
    fake.push_for_model("fake-agent", Reply::hang());

    let store = db.open().await;
    let first = start(store.clone()).await;
    let (_, secret) = create_key(&*store, "*", Role::Admin).await.expect("key");
    let client =
        Client::new(format!("http://{}", first.addr()), Some(secret.clone())).expect("client");
    let up = client.upload_bundle(&bundle(&fake)).await.expect("upload");
    client.deploy("prod", &up.id).await.expect("deploy");
    let run = client
        .submit(
            "prod",
            "support",
            &json!({ "question": "Where is A-17?" }),
            None,
        )
        .await
        .expect("submit");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.turns(&run.id).await.expect("turns").is_empty()
        || fake.requests_for_model("fake-agent").len() < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first turn was never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    let committed = store.turns(&run.id).await.expect("turns");
    assert_eq!(committed.len(), 1, "{committed:#?}");
    assert_eq!(committed[0].tool_results[0].output, "Order A-17: shipped.");

    fake.clear_script();
    fake.push_for_model("fake-agent", Reply::text("It shipped on Monday."));
    let second = start(store.clone()).await;
    let client = Client::new(format!("http://{}", second.addr()), Some(secret)).expect("client");
    let done = tokio::time::timeout(Duration::from_secs(30), client.wait_run(&run.id))
        .await
        .expect("the resumed run ends")
        .expect("wait");
    assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
    assert_eq!(done.output, Some(json!("It shipped on Monday.")));
    assert!(done.attempts >= 2, "the run was claimed again: {done:#?}");

    // The tool ran once; the agent's model saw its first call, the one in flight at the
    // crash, and the resumed one, which carries the committed tool result.
    assert_eq!(fake.requests_for_model("fake-small").len(), 1);
    let agent_calls = fake.requests_for_model("fake-agent");
    assert_eq!(agent_calls.len(), 3, "{agent_calls:#?}");
    let resumed = agent_calls[2].body.to_string();
    assert!(resumed.contains("Order A-17: shipped."), "{resumed}");
    let turns = store.turns(&run.id).await.expect("turns");
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0], committed[0]);
    second.shutdown().await;
    fake.shutdown().await;
}
