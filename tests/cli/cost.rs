//! `flowrun cost`, `flowrun stats` and `budget:` limits end to end: runs against the fake LLM
//! server with known token counts and overridden prices, then reports checked against totals
//! computed by hand, and refusals checked against the requests the fake server saw.

use flowrun_fakellm::{FakeConfig, FakeLlm, Reply, Usage};

use crate::harness::{TestProject, run, with_filters};

const KEY: &str = "sk-test-secret-0123456789";

/// `priced` costs $0.001 per input token and $0.002 per output token; `mystery` has no price.
fn project(fake: &FakeLlm, budget: &str, params: &str) -> TestProject {
    TestProject::from_txtar(&format!(
        "-- flowrun.yaml --
providers:
  fake: {{ kind: openai, base_url: \"{}\", api_key_env: FAKE_KEY }}
models:
  priced: {{ provider: fake, model: priced-model }}
  mystery: {{ provider: fake, model: mystery-model }}
defaults: {{ model: priced, backoff: 10ms, timeout: 5s, retries: 0 }}
pricing:
  priced-model: {{ input_per_mtok: 1000, output_per_mtok: 2000 }}
{budget}
-- prompts/ask.yaml --
input: {{ question: string }}
{params}
messages:
  - system: Answer briefly.
  - user: \"{{{{ question }}}}\"
-- flows/twice.yaml --
input: {{ question: string }}
steps:
  - {{ id: first, prompt: ask, with: {{ question: \"{{{{ input.question }}}}\" }} }}
  - {{ id: second, prompt: ask, model: mystery, with: {{ question: again }} }}
",
        fake.openai_base_url()
    ))
}

fn flowrun_run(p: &TestProject, args: &[&str]) -> crate::harness::Outcome {
    run(p.flowrun().env("FAKE_KEY", KEY).args(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_totals_match_hand_computed_prices() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push_all([
        Reply::text("Paris.").with_usage(Usage::new(100, 20)),
        Reply::text("Rome.").with_usage(Usage::new(50, 10)),
        Reply::text("Again.").with_usage(Usage::new(10, 5)),
    ]);
    let p = project(&fake, "", "");
    let out = flowrun_run(&p, &["run", "ask", "--input", "question=France?"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = flowrun_run(&p, &["run", "flow/twice", "--input", "question=Italy?"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.request_count(), 3);

    let out = run(p.flowrun().args(["cost", "--by", "model", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    // priced: (100 + 50) × $0.001 + (20 + 10) × $0.002 = $0.21; mystery: unknown.
    let total = &report["total"];
    assert_eq!(total["calls"], 3);
    assert_eq!(total["input_tokens"], 160);
    assert_eq!(total["output_tokens"], 35);
    assert!(
        (total["cost"]["usd"].as_f64().unwrap() - 0.21).abs() < 1e-9,
        "{total}"
    );
    assert_eq!(
        total["cost"]["unknown_models"],
        serde_json::json!(["mystery-model"])
    );
    let groups = report["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["key"]["model"], "mystery-model");
    assert_eq!(groups[1]["key"]["model"], "priced-model");
    assert_eq!(groups[1]["calls"], 2);
    assert!(groups[1]["cost"]["unknown_models"].is_null());

    let out = run(p
        .flowrun()
        .args(["cost", "--by", "flow,prompt", "--since", "1d"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    with_filters(p.path(), || {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"\d{4}-\d\d-\d\d", "[DAY]");
        settings.bind(|| insta::assert_snapshot!("cost_by_flow_and_prompt", out.stdout));
    });

    let out = run(p.flowrun().args(["stats", "--by", "flow", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(report["groups"][0]["key"]["flow"], "-");
    assert_eq!(report["groups"][1]["key"]["flow"], "twice");
    assert_eq!(report["groups"][1]["calls"], 2);
    assert_eq!(report["total"]["errors"], 0);
    assert!(report["total"]["latency_ms"]["p99"].is_u64());

    let out = run(p.flowrun().args(["cost", "--by", "colour"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown grouping `colour`"),
        "{}",
        out.stderr
    );
    let out = run(p.flowrun().args(["cost", "--since", "last tuesday"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("invalid `--since`"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_budget_refuses_before_the_call() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push(Reply::text("never sent"));
    // Worst case of the call: over 100 output tokens × $0.002 = $0.2, above $0.01.
    let p = project(
        &fake,
        "budget: { max_cost_per_run: 0.01 }",
        "params: { max_tokens: 100 }",
    );
    let out = flowrun_run(&p, &["run", "ask", "--input", "question=France?"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("budget limit `max_cost_per_run` ($0.0100, flowrun.yaml) would be exceeded"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.request_count(), 0, "the provider was called");
    let out = run(p.flowrun().args(["runs", "--json"]));
    let runs: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(runs[0]["status"], "budget_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_counts_earlier_runs() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    for _ in 0..3 {
        fake.push(Reply::text("Paris.").with_usage(Usage::new(100, 20)));
    }
    // Each call costs $0.14; its worst case is under $0.05 (about 6 tokens in, 20 out). Run 3
    // would bring the day to $0.28 + up to $0.05 > $0.30.
    let p = project(
        &fake,
        "budget: { max_cost_per_day: 0.30 }",
        "params: { max_tokens: 20 }",
    );
    for _ in 0..2 {
        let out = flowrun_run(&p, &["run", "ask", "--input", "question=France?"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = flowrun_run(&p, &["run", "ask", "--input", "question=France?"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("budget limit `max_cost_per_day` ($0.3000, flowrun.yaml)")
            && out.stderr.contains("$0.2800 was spent today"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_budget_caps_tokens_per_call() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push(Reply::text("Paris.").with_usage(Usage::new(10, 2)));
    let p = project(&fake, "", "");
    p.write(
        "flows/capped.yaml",
        "input: { question: string }\nbudget: { max_tokens_per_call: 50 }\nsteps:\n  - { id: a, prompt: ask, with: { question: \"{{ input.question }}\" } }\n",
    );
    let out = flowrun_run(&p, &["run", "flow/capped", "--input", "question=France?"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.last_request().expect("request").body["max_tokens"], 50);
    let long = "word ".repeat(60);
    let out = flowrun_run(
        &p,
        &["run", "flow/capped", "--input", &format!("question={long}")],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`max_tokens_per_call` (50, flow `capped`)"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.request_count(), 1);
}
