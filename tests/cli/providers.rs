//! `flowrun run` against real wire formats: the fake LLM server on loopback stands in for
//! OpenAI and Anthropic; keys come from the environment and never show in output.

use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};

use crate::harness::{TestProject, run};

const KEY: &str = "sk-test-secret-0123456789";

fn project_for(fake: &FakeLlm) -> TestProject {
    TestProject::from_txtar(&format!(
        "-- flowrun.yaml --
providers:
  openai: {{ kind: openai, base_url: \"{}\", api_key_env: FAKE_OPENAI_KEY }}
  claude: {{ kind: anthropic, base_url: \"{}\", api_key_env: FAKE_ANTHROPIC_KEY }}
models:
  gpt: {{ provider: openai, model: gpt-4o-mini }}
  sonnet: {{ provider: claude, model: claude-sonnet-4-5 }}
defaults: {{ model: gpt, backoff: 10ms, timeout: 5s }}
-- prompts/ask.yaml --
input: {{ question: string }}
messages:
  - system: Answer briefly.
  - user: \"{{{{ question }}}}\"
-- prompts/ask-claude.yaml --
model: sonnet
input: {{ question: string }}
messages:
  - user: \"{{{{ question }}}}\"
",
        fake.openai_base_url(),
        fake.anthropic_base_url()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_run_records_usage_and_known_cost() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push(Reply::text("Paris."));
    let project = project_for(&fake);
    let out = run(project.flowrun().env("FAKE_OPENAI_KEY", KEY).args([
        "run",
        "ask",
        "--json",
        "--input",
        "question=Capital of France?",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let record: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(record["output"], "Paris.");
    // The fake counts words: 2 (system) + 3 (user) in, 1 out; gpt-4o-mini is in the price table.
    assert_eq!(record["usage"]["input_tokens"], 5);
    assert_eq!(record["usage"]["output_tokens"], 1);
    let cost = record["cost_usd"].as_f64().expect("known cost");
    assert!(
        (cost - (5.0 * 0.15 + 1.0 * 0.6) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    let req = fake.last_request().expect("request");
    assert_eq!(req.body["messages"][1]["content"], "Capital of France?");
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_run_retries_a_429_and_show_lists_attempts() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push(
        Reply::error(429, "slow down").with_retry_after(std::time::Duration::from_millis(100)),
    );
    fake.push(Reply::text("Bonjour."));
    let project = project_for(&fake);
    let out = run(project.flowrun().env("FAKE_ANTHROPIC_KEY", KEY).args([
        "run",
        "ask-claude",
        "--input",
        "question=Hello in French?",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "Bonjour.\n");
    assert!(
        out.stderr
            .contains("attempt 1 on claude/claude-sonnet-4-5 failed: rate limited (HTTP 429)"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.request_count(), 2);

    let runs: serde_json::Value =
        serde_json::from_str(&run(project.flowrun().args(["runs", "--json"])).stdout)
            .expect("JSON");
    let id = runs[0]["id"].as_str().expect("id").to_string();
    let shown = run(project.flowrun().args(["show", &id]));
    assert!(
        shown.stdout.contains("attempt 1 claude/claude-sonnet-4-5"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("failed: rate limited (HTTP 429)"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("attempt 2 claude/claude-sonnet-4-5"),
        "{}",
        shown.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_fails_without_calling_and_names_the_variable() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = project_for(&fake);
    let out = run(project
        .flowrun()
        .args(["run", "ask", "--input", "question=hi"]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("environment variable `FAKE_OPENAI_KEY` is not set"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_request_fails_once_with_exit_1() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push(Reply::error(400, "bad request: unsupported parameter"));
    let project = project_for(&fake);
    let out = run(project.flowrun().env("FAKE_OPENAI_KEY", KEY).args([
        "run",
        "ask",
        "--input",
        "question=hi",
    ]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("request rejected (HTTP 400)"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.request_count(), 1, "400 is not retried");
    let runs: serde_json::Value =
        serde_json::from_str(&run(project.flowrun().args(["runs", "--json"])).stdout)
            .expect("JSON");
    assert_eq!(runs[0]["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_final_step_on_a_terminal() {
    // `script` runs flowrun under a pseudo-terminal, as a user's shell would.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED streams_the_final_step_on_a_terminal: `script` (util-linux) is not installed"
        );
        return;
    }
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push(Reply::text("one two three four five"));
    fake.push(Reply::text("one two three four five"));
    let project = project_for(&fake);
    let flowrun = assert_cmd::cargo::cargo_bin("flowrun");
    let command = format!("{} run ask --input question=count", flowrun.display());
    let mut tty = std::process::Command::new("script");
    tty.args(["-qefc", &command, "/dev/null"])
        .current_dir(project.path())
        .env("FAKE_OPENAI_KEY", KEY)
        .env("NO_COLOR", "1");
    let out = tty.output().expect("script runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(screen.contains("one two three four five\n"), "{screen}");
    assert!(
        fake.last_request().expect("request").stream,
        "a terminal gets a streamed call"
    );

    // Piped output is not streamed, and records the same output.
    let piped = run(project.flowrun().env("FAKE_OPENAI_KEY", KEY).args([
        "run",
        "ask",
        "-q",
        "--input",
        "question=count",
    ]));
    assert_eq!(piped.stdout, "one two three four five\n");
    assert!(!fake.last_request().expect("request").stream);
    let runs: serde_json::Value =
        serde_json::from_str(&run(project.flowrun().args(["runs", "--json"])).stdout)
            .expect("JSON");
    assert_eq!(
        runs[0]["output"], runs[1]["output"],
        "streamed and plain runs record the same output"
    );
}
