//! `GET /v1/usage` and `budget:` limits on the server, in-process on loopback against the fake
//! LLM with known token counts: report totals against hand-computed prices, scoping to the
//! key's environment, and a daily budget across runs refusing before the call (the fake sees
//! no request) and counted in `/metrics`. Each runs on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use flowrun_client::{BundleFile, Client, RunStatus, UsageQuery};
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply, Usage};
use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::ServerStore;
use flowrun_server::{Server, ServerConfig};
use serde_json::json;

use common::TestDb;

on_both!(
    usage_totals_match_hand_computed_prices,
    a_daily_budget_refuses_before_the_call_and_is_counted,
);

/// m1 costs $0.001 per input and $0.002 per output token; m2 has no price.
fn bundle(fake: &FakeLlm, budget: &str) -> Vec<BundleFile> {
    let file = |path: &str, text: String| BundleFile {
        path: path.into(),
        text,
    };
    vec![
        file(
            "flowrun.yaml",
            format!(
                "providers:\n  fake: {{ kind: openai, base_url: \"{}\" }}\ndefaults: {{ model: fake/m1, retries: 0, timeout: 60s }}\npricing:\n  m1: {{ input_per_mtok: 1000, output_per_mtok: 2000 }}\n{budget}\n",
                fake.openai_base_url()
            ),
        ),
        file(
            "prompts/a.yaml",
            "model: fake/m1\nparams: { max_tokens: 20 }\ninput: { text: string }\nmessages:\n  - user: \"A {{ text }}\"\n".into(),
        ),
        file(
            "prompts/b.yaml",
            "model: fake/m2\ninput: { text: string }\nmessages:\n  - user: \"B {{ text }}\"\n".into(),
        ),
        file(
            "flows/pipe.yaml",
            "input: { text: string }\nsteps:\n  - { id: first, prompt: a, with: { text: \"{{ input.text }}\" } }\n  - { id: second, prompt: b, with: { text: \"{{ steps.first.output }}\" } }\n".into(),
        ),
        file(
            "flows/one.yaml",
            "input: { text: string }\nsteps:\n  - { id: only, prompt: a, with: { text: \"{{ input.text }}\" } }\n".into(),
        ),
    ]
}

struct Harness {
    fake: FakeLlm,
    store: Arc<dyn ServerStore>,
    server: Server,
    _db: TestDb,
    url: String,
}

async fn harness(db: TestDb) -> Harness {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let store = db.open().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ServerConfig {
        workers: 1,
        poll: Duration::from_millis(50),
        grace: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server = Server::start(listener, store.clone(), config)
        .await
        .expect("start");
    let url = format!("http://{}", server.addr());
    Harness {
        fake,
        store,
        server,
        _db: db,
        url,
    }
}

impl Harness {
    async fn client(&self, env: &str, role: Role) -> Client {
        let (_, secret) = create_key(&*self.store, env, role).await.expect("key");
        Client::new(&self.url, Some(secret)).expect("client")
    }

    async fn deploy(&self, env: &str, budget: &str) {
        let admin = self.client("*", Role::Admin).await;
        let up = admin
            .upload_bundle(&bundle(&self.fake, budget))
            .await
            .expect("upload");
        admin.deploy(env, &up.id).await.expect("deploy");
    }

    async fn run(&self, client: &Client, env: &str, flow: &str) -> flowrun_client::Run {
        let sub = client
            .submit(env, flow, &json!({ "text": "hi" }), None)
            .await
            .expect("submit");
        client.wait_run(&sub.id).await.expect("wait")
    }
}

async fn usage_totals_match_hand_computed_prices(db: TestDb) {
    let h = harness(db).await;
    h.deploy("prod", "").await;
    h.deploy("staging", "").await;
    for _ in 0..2 {
        h.fake
            .push_for_model("m1", Reply::text("one two").with_usage(Usage::new(100, 20)));
        h.fake
            .push_for_model("m2", Reply::text("three").with_usage(Usage::new(10, 5)));
    }
    let prod = h.client("prod", Role::Run).await;
    for _ in 0..2 {
        let run = h.run(&prod, "prod", "pipe").await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    let query = UsageQuery {
        by: vec!["model".into()],
        since: Some("1d".into()),
        ..UsageQuery::default()
    };
    let report = prod.usage(&query).await.expect("usage");
    // m1: 2 × (100 × $0.001 + 20 × $0.002) = $0.28; m2 has no price.
    assert_eq!(report.total.calls, 4);
    assert_eq!(report.total.input_tokens, 220);
    assert_eq!(report.total.output_tokens, 50);
    assert!((report.total.cost.usd - 0.28).abs() < 1e-9, "{report:?}");
    assert_eq!(report.total.cost.unknown_models, ["m2"]);
    assert_eq!(report.groups.len(), 2);
    assert_eq!(report.groups[0].key["model"], "m1");
    assert_eq!(report.groups[0].calls, 2);
    assert_eq!(report.groups[0].errors, 0);
    assert!(report.groups[0].cost.unknown_models.is_empty());
    assert_eq!(report.groups[1].key["model"], "m2");
    assert_eq!(report.cost_per_day.len(), 1);

    // A staging key sees only staging (nothing ran there) and may not read prod.
    let staging = h.client("staging", Role::Run).await;
    let empty = staging.usage(&UsageQuery::default()).await.expect("usage");
    assert_eq!(empty.total.calls, 0);
    let denied = staging
        .usage(&UsageQuery {
            env: Some("prod".into()),
            ..UsageQuery::default()
        })
        .await
        .expect_err("other env");
    assert_eq!(denied.status(), Some(403));
    let bad = prod
        .usage(&UsageQuery {
            by: vec!["colour".into()],
            ..UsageQuery::default()
        })
        .await
        .expect_err("bad by");
    assert_eq!(bad.code(), Some("invalid_by"));
    h.server.shutdown().await;
}

async fn a_daily_budget_refuses_before_the_call_and_is_counted(db: TestDb) {
    let h = harness(db).await;
    // Each run costs $0.14; a call's worst case is under $0.05. The third run would bring the
    // day to $0.28 + up to $0.05, over $0.30.
    h.deploy("prod", "budget: { max_cost_per_day: 0.30 }").await;
    for _ in 0..3 {
        h.fake
            .push_for_model("m1", Reply::text("one two").with_usage(Usage::new(100, 20)));
    }
    let prod = h.client("prod", Role::Run).await;
    for _ in 0..2 {
        let run = h.run(&prod, "prod", "one").await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    let run = h.run(&prod, "prod", "one").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap_or_default();
    assert!(
        error.contains("budget limit `max_cost_per_day` ($0.3000, flowrun.yaml)"),
        "{error}"
    );
    assert_eq!(h.fake.requests_for_model("m1").len(), 2);
    let metrics = prod.metrics().await.expect("metrics");
    assert!(
        metrics.contains("flowrun_budget_refusals_total{env=\"prod\"} 1"),
        "{metrics}"
    );
    h.server.shutdown().await;
}
