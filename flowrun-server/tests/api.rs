//! End-to-end tests of the server in-process on loopback, against the fake LLM server: deploy,
//! submit, long-poll, idempotency, input errors, auth scopes, promote/rollback, and a crash in
//! the middle of a run. Each runs on SQLite and on PostgreSQL (`FLOWRUN_TEST_POSTGRES_URL`).

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use flowrun_client::{BundleFile, Client, RunFilter, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::{RunState, ServerStore};
use flowrun_server::{Server, ServerConfig};
use serde_json::json;

/// A two-step flow: `first` on model m1, `second` on model m2.
fn bundle(fake: &FakeLlm, greeting: &str) -> Vec<BundleFile> {
    let file = |path: &str, text: String| BundleFile {
        path: path.into(),
        text,
    };
    vec![
        file(
            "flowrun.yaml",
            format!(
                "providers:\n  fake: {{ kind: openai, base_url: \"{}\" }}\ndefaults: {{ model: fake/m1, retries: 0, timeout: 60s }}\n",
                fake.openai_base_url()
            ),
        ),
        file(
            "prompts/a.yaml",
            format!("model: fake/m1\ninput: {{ text: string }}\nmessages:\n  - user: \"{greeting} {{{{ text }}}}\"\n"),
        ),
        file(
            "prompts/b.yaml",
            "model: fake/m2\ninput: { text: string }\nmessages:\n  - user: \"B {{ text }}\"\n".into(),
        ),
        file(
            "flows/pipe.yaml",
            "input: { text: string }\nsteps:\n  - id: first\n    prompt: a\n    with: { text: \"{{ input.text }}\" }\n  - id: second\n    prompt: b\n    with: { text: \"{{ steps.first.output }}\" }\noutput: \"{{ steps.second.output }}\"\n".into(),
        ),
    ]
}

use common::TestDb;

on_both!(
    a_submitted_run_succeeds_with_its_steps,
    an_idempotency_key_returns_the_same_run,
    invalid_input_is_refused_with_field_errors,
    keys_are_scoped_to_an_env_and_a_role,
    promote_and_rollback_change_what_an_env_runs,
    a_run_survives_a_crash_and_its_finished_step_is_not_called_again,
    a_run_whose_committed_steps_cannot_be_read_fails_instead_of_going_round,
    sync_takes_any_key_checks_records_and_scopes_deployments,
    bundles_that_would_run_local_programs_are_refused,
);

async fn sync_takes_any_key_checks_records_and_scopes_deployments(db: TestDb) {
    use flowrun_client::SyncRecord;
    let h = harness(db).await;
    h.deploy("dev", "A").await;
    h.deploy("prod", "B").await;
    let record = |kind: &str, id: &str| SyncRecord {
        kind: kind.into(),
        id: id.into(),
        record: json!({ "status": "succeeded" }),
    };
    let deployer = h.client("prod", Role::Deploy).await;
    let pushed = deployer
        .push_records(&[record("run", "r1"), record("eval", "e1")])
        .await
        .expect("a deploy key pushes");
    assert_eq!((pushed.received, pushed.stored), (2, 2));
    let runner = h.client("dev", Role::Run).await;
    let again = runner
        .push_records(&[record("run", "r1")])
        .await
        .expect("push");
    assert_eq!((again.received, again.stored), (1, 0));

    let err = runner
        .push_records(&[record("run", "r2"), record("trace", "t1")])
        .await
        .expect_err("bad kind");
    let flowrun_client::ClientError::Api { status, field, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*status, field.as_deref()), (400, Some("records[1].kind")));
    let anonymous = Client::new(&h.url, None).expect("client");
    let e = anonymous.push_records(&[]).await.expect_err("no key");
    assert_eq!(e.status(), Some(401));
    assert_eq!(
        runner.synced_records(None, 10).await.expect("list").len(),
        2
    );

    // The prod key sees prod's deployment only; the cursor passes dev's too.
    let page = deployer.deployments(0, 10).await.expect("pull");
    let envs: Vec<_> = page.deployments.iter().map(|d| d.env.as_str()).collect();
    assert_eq!(envs, ["prod"]);
    let all = h
        .client("*", Role::Admin)
        .await
        .deployments(0, 10)
        .await
        .expect("pull");
    assert_eq!(all.deployments.len(), 2);
    assert_eq!(page.next_after, all.next_after);
    let none = deployer
        .deployments(page.next_after, 10)
        .await
        .expect("pull");
    assert!(none.deployments.is_empty());
    assert_eq!(none.next_after, page.next_after);
    h.server.shutdown().await;
}

struct Harness {
    fake: FakeLlm,
    store: Arc<dyn ServerStore>,
    server: Server,
    url: String,
    _db: TestDb,
}

fn config(lease: Duration) -> ServerConfig {
    ServerConfig {
        workers: 2,
        lease,
        poll: Duration::from_millis(50),
        grace: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

async fn start_on(db: &TestDb, lease: Duration) -> (Arc<dyn ServerStore>, Server, String) {
    let store = db.open().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::start(listener, store.clone(), config(lease))
        .await
        .expect("start");
    let url = format!("http://{}", server.addr());
    (store, server, url)
}

async fn harness(db: TestDb) -> Harness {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let (store, server, url) = start_on(&db, Duration::from_secs(30)).await;
    Harness {
        fake,
        store,
        server,
        url,
        _db: db,
    }
}

impl Harness {
    async fn client(&self, env: &str, role: Role) -> Client {
        let (_, secret) = create_key(&*self.store, env, role).await.expect("key");
        Client::new(&self.url, Some(secret)).expect("client")
    }

    async fn deploy(&self, env: &str, greeting: &str) -> String {
        let admin = self.client("*", Role::Admin).await;
        let up = admin
            .upload_bundle(&bundle(&self.fake, greeting))
            .await
            .expect("upload");
        admin.deploy(env, &up.id).await.expect("deploy");
        up.id
    }
}

async fn a_submitted_run_succeeds_with_its_steps(db: TestDb) {
    let h = harness(db).await;
    h.deploy("prod", "A").await;
    let client = h.client("prod", Role::Run).await;
    let sub = client
        .submit("prod", "pipe", &json!({ "text": "hi" }), None)
        .await
        .expect("submit");
    let run = client
        .get_run(&sub.id, Some(Duration::from_secs(30)))
        .await
        .expect("get");
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.output, Some(json!("echo: B echo: A hi")));
    assert_eq!(run.steps.len(), 2);
    assert_eq!(run.steps[0].step_id, "first");
    assert_eq!(run.steps[0].output, Some(json!("echo: A hi")));
    assert!(
        run.usage
            .is_some_and(|u| u["input_tokens"].as_u64() > Some(0))
    );
    assert_eq!(run.attempts, 1);

    let listed = client
        .runs(&RunFilter {
            env: Some("prod".into()),
            status: Some(RunStatus::Succeeded),
            ..RunFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sub.id);
    h.server.shutdown().await;
}

async fn an_idempotency_key_returns_the_same_run(db: TestDb) {
    let h = harness(db).await;
    h.deploy("prod", "A").await;
    let client = h.client("prod", Role::Run).await;
    let input = json!({ "text": "once" });
    let a = client
        .submit("prod", "pipe", &input, Some("k-1"))
        .await
        .expect("first");
    let b = client
        .submit("prod", "pipe", &input, Some("k-1"))
        .await
        .expect("repeat");
    assert_eq!(a.id, b.id);
    let other = client
        .submit("prod", "pipe", &json!({ "text": "else" }), Some("k-1"))
        .await
        .expect_err("a different request with the same key");
    assert_eq!(other.code(), Some("idempotency_conflict"));
    client.wait_run(&a.id).await.expect("wait");
    assert_eq!(h.fake.requests_for_model("m1").len(), 1);
    h.server.shutdown().await;
}

async fn invalid_input_is_refused_with_field_errors(db: TestDb) {
    let h = harness(db).await;
    h.deploy("prod", "A").await;
    let client = h.client("prod", Role::Run).await;
    let err = client
        .submit("prod", "pipe", &json!({ "txt": "hi" }), None)
        .await
        .expect_err("invalid");
    let flowrun_client::ClientError::Api {
        status, details, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*status, 400);
    let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["text", "txt"]);
    let unknown = client
        .submit("prod", "nope", &json!({}), None)
        .await
        .expect_err("unknown flow");
    assert_eq!(unknown.status(), Some(404));
    assert!(
        client
            .runs(&RunFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    h.server.shutdown().await;
}

async fn keys_are_scoped_to_an_env_and_a_role(db: TestDb) {
    let h = harness(db).await;
    let bundle_id = h.deploy("prod", "A").await;
    let anonymous = Client::new(&h.url, None).expect("client");
    let wrong = Client::new(&h.url, Some("frk_nope".into())).expect("client");
    for c in [&anonymous, &wrong] {
        let e = c.envs().await.expect_err("no key");
        assert_eq!(e.status(), Some(401));
    }
    let dev_runner = h.client("dev", Role::Run).await;
    let e = dev_runner
        .submit("prod", "pipe", &json!({ "text": "x" }), None)
        .await
        .expect_err("wrong env");
    assert_eq!(e.status(), Some(403));
    let prod_runner = h.client("prod", Role::Run).await;
    let e = prod_runner
        .deploy("prod", &bundle_id)
        .await
        .expect_err("run key deploys");
    assert_eq!(e.status(), Some(403));
    let e = prod_runner
        .upload_bundle(&bundle(&h.fake, "A"))
        .await
        .expect_err("run key uploads");
    assert_eq!(e.status(), Some(403));
    let deployer = h.client("prod", Role::Deploy).await;
    let e = deployer
        .submit("prod", "pipe", &json!({ "text": "x" }), None)
        .await
        .expect_err("deploy key runs");
    assert_eq!(e.status(), Some(403));
    deployer
        .deploy("prod", &bundle_id)
        .await
        .expect("deploy key deploys");
    let e = deployer
        .deploy("dev", &bundle_id)
        .await
        .expect_err("other env");
    assert_eq!(e.status(), Some(403));
    // A run of another env does not exist for a key.
    let run = prod_runner
        .submit("prod", "pipe", &json!({ "text": "x" }), None)
        .await
        .expect("submit");
    let e = dev_runner
        .get_run(&run.id, None)
        .await
        .expect_err("other env");
    assert_eq!(e.status(), Some(404));
    assert!(anonymous.ready().await.expect("readyz"));
    h.server.shutdown().await;
}

async fn promote_and_rollback_change_what_an_env_runs(db: TestDb) {
    let h = harness(db).await;
    let admin = h.client("*", Role::Admin).await;
    let v1 = h.deploy("dev", "A").await;
    admin.promote("dev", "prod").await.expect("promote");
    let v2 = h.deploy("dev", "Hello").await;
    assert_ne!(v1, v2);
    let envs = admin.envs().await.expect("envs");
    let of = |name: &str| {
        envs.iter()
            .find(|e| e.name == name)
            .map(|e| e.bundle_id.clone())
    };
    assert_eq!(of("prod"), Some(v1.clone()));
    assert_eq!(of("dev"), Some(v2.clone()));
    assert_eq!(admin.bundles().await.expect("versions").len(), 2);

    let output = |env: &'static str| {
        let admin = admin.clone();
        async move {
            let sub = admin
                .submit(env, "pipe", &json!({ "text": "x" }), None)
                .await
                .expect("submit");
            admin.wait_run(&sub.id).await.expect("wait").output
        }
    };
    assert_eq!(output("dev").await, Some(json!("echo: B echo: Hello x")));
    assert_eq!(output("prod").await, Some(json!("echo: B echo: A x")));

    let back = admin.rollback("dev").await.expect("rollback");
    assert_eq!(back.bundle_id, v1);
    assert_eq!(output("dev").await, Some(json!("echo: B echo: A x")));
    let e = admin.rollback("dev").await.expect_err("nothing before v1");
    assert_eq!(e.code(), Some("nothing_to_roll_back"));
    h.server.shutdown().await;
}

/// The lease of the crash tests.
const CRASH_LEASE: Duration = Duration::from_millis(600);

/// A server runs the two-step `pipe` until its first step is committed and the second hangs,
/// then dies (its task aborted, as by `kill -9`): the fake LLM, an admin key and the run's id.
async fn crashed_after_the_first_step(db: &TestDb) -> (FakeLlm, String, String) {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push_for_model("m2", Reply::hang());
    let (store, server, url) = start_on(db, CRASH_LEASE).await;
    let (_, secret) = create_key(&*store, "*", Role::Admin).await.expect("key");
    let client = Client::new(&url, Some(secret.clone())).expect("client");
    let up = client
        .upload_bundle(&bundle(&fake, "A"))
        .await
        .expect("upload");
    client.deploy("prod", &up.id).await.expect("deploy");
    let sub = client
        .submit("prod", "pipe", &json!({ "text": "hi" }), None)
        .await
        .expect("submit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let run = client.get_run(&sub.id, None).await.expect("get");
        if run.steps.len() == 1 && !fake.requests_for_model("m2").is_empty() {
            assert_eq!(run.status, RunStatus::Running);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got to step 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
    drop(store);
    (fake, secret, sub.id)
}

async fn a_run_survives_a_crash_and_its_finished_step_is_not_called_again(db: TestDb) {
    let (fake, secret, id) = crashed_after_the_first_step(&db).await;
    let (_store, server, url) = start_on(&db, CRASH_LEASE).await;
    let client = Client::new(&url, Some(secret)).expect("client");
    let run = tokio::time::timeout(Duration::from_secs(30), client.wait_run(&id))
        .await
        .expect("in time")
        .expect("wait");
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.output, Some(json!("echo: B echo: A hi")));
    assert_eq!(run.attempts, 2);
    assert_eq!(
        fake.requests_for_model("m1").len(),
        1,
        "step 1 was paid twice"
    );
    assert_eq!(fake.requests_for_model("m2").len(), 2);
    server.shutdown().await;
}

async fn a_run_whose_committed_steps_cannot_be_read_fails_instead_of_going_round(db: TestDb) {
    let (fake, secret, id) = crashed_after_the_first_step(&db).await;
    // The first step's record is damaged while nobody runs the run.
    db.raw_sql(&format!(
        "UPDATE steps SET record = '{{\"not\": \"a step' WHERE run_id = '{id}'"
    ))
    .await;

    let (store, server, url) = start_on(&db, CRASH_LEASE).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = store.run(&id).await.expect("read").expect("the run");
        if run.status.is_terminal() {
            break run;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {run:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(run.status, RunState::Failed, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .contains("committed steps"),
        "{run:?}"
    );
    assert_eq!(run.attempts, 2, "claimed once more, then failed");
    assert_eq!(fake.requests_for_model("m1").len(), 1, "nothing re-run");
    assert_eq!(fake.requests_for_model("m2").len(), 1);

    // The API still shows the run, with the damaged step marked rather than a 500.
    let response = reqwest::Client::new()
        .get(format!("{url}/v1/runs/{id}"))
        .bearer_auth(&secret)
        .send()
        .await
        .expect("GET the run");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["steps"][0]["step_index"], 0, "{body}");
    assert_eq!(body["steps"][0]["status"], "unreadable", "{body}");
    let why = body["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("cannot be read"), "{body}");
    server.shutdown().await;
}

/// Command tools and stdio MCP servers run programs on the machine: the server refuses the
/// bundle, naming each, even when the project allows command tools.
async fn bundles_that_would_run_local_programs_are_refused(db: TestDb) {
    let h = harness(db).await;
    let admin = h.client("*", Role::Admin).await;
    let mut files = bundle(&h.fake, "A");
    files[0].text.push_str(
        "allow_command_tools: true\nmcp_servers:\n  files: { command: [npx, files-server] }\n  search: { url: \"https://mcp.example.com/mcp\" }\n",
    );
    files.push(BundleFile {
        path: "flows/agent.yaml".into(),
        text: "steps:\n  - id: act\n    agent:\n      instructions: a\n      tools:\n        - name: shell\n          parameters: { type: object }\n          command: [sh, -c, \"cat\"]\n    with: { text: hi }\n".into(),
    });
    let e = admin
        .upload_bundle(&files)
        .await
        .expect_err("a bundle with local programs");
    assert_eq!(e.status(), Some(400), "{e}");
    assert_eq!(e.code(), Some("local_programs"), "{e}");
    let message = e.to_string();
    assert!(
        message.contains("MCP server `files` runs a local program"),
        "{message}"
    );
    assert!(message.contains("`shell` is a command tool"), "{message}");
    assert!(
        !message.contains("`search`"),
        "an HTTP MCP server is fine: {message}"
    );
    assert!(
        admin.bundles().await.expect("list").is_empty(),
        "nothing stored"
    );
}
