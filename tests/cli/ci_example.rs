//! The CI example (`examples/ci`): its committed cassette replays with no key and no network,
//! the pull-request eval passes on it, and its workflows use the flags checked here.
//!
//! The cassette is recorded from scripted, realistic replies served by the fake LLM server,
//! so anyone can make it again (and must, after changing a prompt or a test of the example):
//!
//! ```sh
//! FLOWRUN_RECORD_EXAMPLE=1 cargo test --test cli ci_example
//! ```

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
use serde_json::Value;

use crate::eval_cmd::{commit_all, git_init, have_git};
use crate::harness::{Outcome, TestProject, repo_root, run};

const EXAMPLE: &str = "examples/ci";
const CASSETTE: &str = "tests/cassette.json";
/// The key the recording runs with: a real-looking one, so that finding no `sk-` in the
/// cassette shows that keys are not recorded.
const DUMMY_KEY: &str = "sk-recording-dummy-0000000000000000";
/// The `created` time of every recorded reply, so that recording again gives the same file.
const RECORDED_AT: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// What `gpt-4o-mini` (alias `fast`) answers, in the order `flowrun test -j 1` asks: the
/// classify cases (the inline one, then the dataset rows), then each triage case's classify
/// and reply steps.
const FAST_REPLIES: [&str; 13] = [
    // tests/classify.test.yaml
    r#"{"category": "billing", "urgency": "high", "summary": "Customer's card was charged three times this morning and they cannot pay rent."}"#,
    r#"{"category": "billing", "urgency": "high", "summary": "Customer was charged twice for March invoice INV-20931; the second charge overdrew their account."}"#,
    r#"{"category": "billing", "urgency": "low", "summary": "Customer asks whether cancelling an annual plan midway refunds the remaining months."}"#,
    r#"{"category": "bug", "urgency": "normal", "summary": "Desktop app 4.2.1 on Windows 11 crashes when uploading PDFs larger than 20 MB."}"#,
    r#"{"category": "account", "urgency": "high", "summary": "SSO sign-in fails with an invalid SAML response, blocking a 40-person team."}"#,
    r#"{"category": "shipping", "urgency": "normal", "summary": "Hardware security key is late and its tracking has not updated in six days."}"#,
    r#"{"category": "other", "urgency": "low", "summary": "Customer asks for a dark mode in the dashboard."}"#,
    // tests/triage.test.yaml: a double charge
    r#"{"category": "billing", "urgency": "high", "summary": "Customer was billed twice ($49 each) for the Pro plan this month."}"#,
    "Hi Dana,\n\nI'm sorry you were billed twice for the Pro plan this month. I've escalated this to the on-call team, and our billing team will review both $49 charges within one business day. We'll update this ticket as soon as the review is done.\n\nAcme Support",
    // an outage
    r#"{"category": "bug", "urgency": "high", "summary": "Production API in eu-west-1 has returned 502 errors for 20 minutes, affecting all customers."}"#,
    "Hi Priya,\n\nThank you for reporting this, and I'm sorry for the disruption. Errors across your production API are our top priority: I've escalated this to the on-call team, who are investigating now. We'll post an update on this ticket within 30 minutes, sooner if we find the cause.\n\nAcme Support",
    // a how-to question
    r#"{"category": "account", "urgency": "low", "summary": "Customer asks how to change the email address on their account."}"#,
    "Hi there,\n\nHappy to help! Go to Settings → Profile → Email, enter the new address and click Save. We'll send a confirmation link to the new address; the change takes effect once you open it.\n\nAcme Support",
];

/// What `gpt-4o` (alias `judge`) answers to the `llm_judge` assertions, in case order.
const JUDGE_REPLIES: [&str; 3] = [
    r#"{"score": 0.9, "reason": "The reply apologizes, says billing will review the charge within one business day, and promises no refund."}"#,
    r#"{"score": 0.85, "reason": "The reply treats the outage as urgent, says it was escalated, and asks for nothing the ticket already gives."}"#,
    r#"{"score": 0.95, "reason": "The reply is friendly, brief, and gives clear steps to change the email address."}"#,
];

/// `flowrun` started in `cwd`, with no colour and no key, the endpoint override at `base_url`.
fn flowrun_in(cwd: &Path, base_url: &str) -> Command {
    let mut cmd = Command::cargo_bin("flowrun").expect("flowrun binary");
    cmd.current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("GITHUB_ACTIONS")
        .env("OPENAI_BASE_URL", base_url);
    cmd
}

/// An OpenAI base URL on a loopback port nothing listens on: any call would be refused.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

fn expect_success(what: &str, out: &Outcome) {
    assert_eq!(
        out.code, 0,
        "{what} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
}

/// Records the example's cassette into the repository from the scripted replies.
async fn record(copy: &Path, cassette: &Path) {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    for reply in FAST_REPLIES {
        fake.push_for_model("gpt-4o-mini", Reply::text(reply));
    }
    for reply in JUDGE_REPLIES {
        fake.push_for_model("gpt-4o", Reply::text(reply));
    }
    let out = run(flowrun_in(copy, &fake.openai_base_url())
        .env("OPENAI_API_KEY", DUMMY_KEY)
        .arg("test")
        .arg("--record")
        .arg(cassette)
        .args(["-j", "1", "--no-cache"]));
    expect_success("recording", &out);
    assert_eq!(
        fake.pending_replies(),
        0,
        "every scripted reply was used: the example's cases changed, update the replies"
    );
    assert_eq!(
        fake.requests_for_model("gpt-4o-mini").len(),
        FAST_REPLIES.len()
    );
    assert_eq!(fake.requests_for_model("gpt-4o").len(), JUDGE_REPLIES.len());
    assert_eq!(
        fake.request_count(),
        FAST_REPLIES.len() + JUDGE_REPLIES.len()
    );

    // The reply times are the only thing that differs between recordings: pin them.
    let text = std::fs::read_to_string(cassette).expect("recorded cassette");
    let mut value: Value = serde_json::from_str(&text).expect("cassette JSON");
    for entry in value["entries"].as_array_mut().expect("entries") {
        entry["response"]["raw"]["created"] = RECORDED_AT.into();
    }
    let pinned = serde_json::to_string_pretty(&value).expect("JSON") + "\n";
    let read = flowrun_core::cassette::Cassette::from_text(&pinned).expect("a valid cassette");
    assert_eq!(
        read.to_text(),
        pinned,
        "the cassette is in its canonical form"
    );
    std::fs::write(cassette, pinned).expect("write cassette");
    eprintln!(
        "recorded {} exchanges to {}",
        read.len(),
        cassette.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_example_replays_offline_and_passes_the_pull_request_eval() {
    let project = TestProject::copy_of(EXAMPLE);
    let copy = project.path().to_path_buf();
    if std::env::var("FLOWRUN_RECORD_EXAMPLE").is_ok_and(|v| v == "1") {
        let committed: PathBuf = repo_root().join(EXAMPLE).join(CASSETTE);
        record(&copy, &committed).await;
        std::fs::copy(&committed, copy.join(CASSETTE)).expect("copy the new cassette");
    }

    // (a) What the push workflow runs, from another directory through `-C`: no key, and the
    // endpoint override on a closed port, so a call that missed the cassette would fail.
    let elsewhere = TestProject::empty();
    let closed = closed_port_url();
    let replayed = run(flowrun_in(elsewhere.path(), &closed)
        .arg("-C")
        .arg(&copy)
        .args(["test", "--replay", CASSETTE]));
    expect_success("the replayed suite", &replayed);
    assert!(
        replayed
            .stdout
            .contains("10 passed, 0 failed (100% ≥ min 100%): PASS"),
        "{}",
        replayed.stdout
    );
    assert!(
        replayed.stdout.contains("· 10 cached"),
        "every case was answered from the cassette:\n{}",
        replayed.stdout
    );
    let junit = run(flowrun_in(elsewhere.path(), &closed)
        .arg("-C")
        .arg(&copy)
        .args([
            "test",
            "--replay",
            CASSETTE,
            "--format",
            "junit",
            "--output",
            "junit.xml",
        ]));
    expect_success("the JUnit run", &junit);
    let xml = std::fs::read_to_string(copy.join("junit.xml")).expect("junit.xml in the project");
    assert!(xml.contains("<testsuites"), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    let (replayed_json, report) = {
        let out = run(
            flowrun_in(&copy, &closed).args(["test", "--replay", CASSETTE, "--format", "json"])
        );
        let report: Value = serde_json::from_str(&out.stdout).expect("JSON report");
        (out, report)
    };
    expect_success("the JSON run", &replayed_json);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 10);
    for r in results {
        assert_eq!(r["pass"], true, "{r:#}");
        assert_eq!(r["cached"], true, "{r:#}");
    }

    // (c) The cassette holds no key; the workflows run what this test checks.
    let cassette = std::fs::read_to_string(copy.join(CASSETTE)).expect("cassette");
    assert!(!cassette.contains("sk-"), "a key in the cassette");
    assert!(!cassette.contains("OPENAI_API_KEY"));
    assert!(!cassette.to_lowercase().contains("authorization"));
    let workflows = repo_root().join(EXAMPLE).join(".github/workflows");
    let push = std::fs::read_to_string(workflows.join("test.yml")).expect("test.yml");
    for needle in [
        "flowrun test --replay tests/cassette.json",
        "--format junit --output junit.xml",
        "cargo install --locked --git",
    ] {
        assert!(push.contains(needle), "test.yml lacks `{needle}`");
    }
    assert!(
        !push.contains("secrets.OPENAI_API_KEY"),
        "push CI needs no key"
    );
    let pr = std::fs::read_to_string(workflows.join("eval.yml")).expect("eval.yml");
    for needle in [
        "pull_request",
        "fetch-depth: 0",
        "--baseline git:origin/main",
        "--fail-if-worse",
        "--format markdown --output eval.md",
        "secrets.OPENAI_API_KEY",
        "gh pr comment",
        "upload-artifact",
    ] {
        assert!(pr.contains(needle), "eval.yml lacks `{needle}`");
    }

    // (b) The pull-request eval, as the workflow runs it, on a repository whose main branch is
    // the example: replayed, the draft is the baseline, so nothing changed.
    if !have_git() {
        return;
    }
    git_init(&copy, "main");
    commit_all(&copy, "the CI example");
    let evaluated = run(flowrun_in(&copy, &closed).args([
        "eval",
        "--baseline",
        "git:main",
        "--fail-if-worse",
        "--replay",
        CASSETTE,
        "--format",
        "markdown",
        "--output",
        "eval.md",
    ]));
    expect_success("the eval", &evaluated);
    assert!(
        evaluated
            .stderr
            .contains("flowrun eval: no significant change"),
        "{}",
        evaluated.stderr
    );
    let markdown = std::fs::read_to_string(copy.join("eval.md")).expect("eval.md");
    assert!(markdown.contains("no significant change"), "{markdown}");
    let terminal = run(flowrun_in(&copy, &closed).args([
        "eval",
        "--baseline",
        "git:main",
        "--fail-if-worse",
        "--replay",
        CASSETTE,
    ]));
    expect_success("the terminal eval", &terminal);
    assert!(
        terminal
            .stdout
            .starts_with("flowrun eval: no significant change\n"),
        "{}",
        terminal.stdout
    );
    assert!(terminal.stdout.contains("10 cases"), "{}", terminal.stdout);
}

/// The `flowrun …` commands of a workflow job, in order, as its `run:` steps give them.
fn job_commands(workflow: &str, job: &str) -> Vec<String> {
    let mut in_job = false;
    let mut commands = Vec::new();
    for line in workflow.lines() {
        if !line.starts_with("    ") && line.starts_with("  ") && line.trim_end().ends_with(':') {
            in_job = line.trim() == format!("{job}:");
            continue;
        }
        let text = line.trim();
        let text = text.strip_prefix("run: ").unwrap_or(text);
        if in_job && text.starts_with("flowrun ") {
            commands.push(text.to_string());
        }
    }
    commands
}

/// Splits a workflow command into arguments (the commands use plain double quotes only).
fn words(command: &str) -> Vec<String> {
    command
        .split_whitespace()
        .map(|w| w.trim_matches('"').to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_example_deploy_workflow_deploys_dev_and_promotes_prod() {
    let workflow = std::fs::read_to_string(
        repo_root()
            .join(EXAMPLE)
            .join(".github/workflows/deploy.yml"),
    )
    .expect("deploy.yml");
    for needle in ["branches: [main]", "workflow_dispatch", "environment: prod"] {
        assert!(workflow.contains(needle), "deploy.yml lacks `{needle}`");
    }
    let server_home = TestProject::empty();
    let (serving, url, token) =
        crate::serve::start_server(&server_home, &server_home.path().join("server.db")).await;
    let client = flowrun_client::Client::new(&url, Some(token.clone())).expect("client");

    // Each job runs in a fresh checkout of the example, as on a runner.
    for job in ["deploy-dev", "promote-prod"] {
        let commands = job_commands(&workflow, job);
        assert!(commands.len() >= 2, "{job}: {commands:?}");
        let checkout = TestProject::copy_of(EXAMPLE);
        for command in commands {
            let command = command.replace("${{ vars.FLOWRUN_URL }}", &url);
            let args = words(&command);
            let out = checkout
                .flowrun()
                .args(&args[1..])
                .env("FLOWRUN_DEV_TOKEN", &token)
                .env("FLOWRUN_PROD_TOKEN", &token)
                .env_remove("FLOWRUN_TOKEN")
                .env_remove("FLOWRUN_REMOTE")
                .output()
                .expect("flowrun");
            assert!(
                out.status.success(),
                "{job}: `{command}` failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let envs = client.envs().await.expect("envs");
        let dev = envs.iter().find(|e| e.name == "dev").expect("dev deployed");
        if job == "promote-prod" {
            let prod = envs
                .iter()
                .find(|e| e.name == "prod")
                .expect("prod promoted");
            assert_eq!(prod.bundle_id, dev.bundle_id);
        } else {
            assert!(envs.iter().all(|e| e.name != "prod"), "{envs:?}");
        }
    }
    drop(serving);
}
