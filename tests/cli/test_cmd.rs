//! `flowrun test`, `flowrun tests` and `flowrun test show`: the offline quickstart suite,
//! suites against the fake LLM server (verdicts, selection, repeats, reporters, the response
//! cache, cassettes, the judge, commands), bad test files, and stored test runs.

use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
use serde_json::Value;

use crate::harness::{Outcome, TestProject, run, with_filters};

const KEY: &str = "sk-test-secret-0123456789";

/// A project on the fake server: an `answer` prompt on `gpt` (gpt-4o-mini) and a `judge`
/// alias on `judge-model`. The fake echoes by default (`echo: <question>`), so a case's
/// verdict follows from its question unless replies are scripted.
const CONFIG: &str = "-- flowrun.yaml --
providers:
  openai: { kind: openai, base_url: \"BASE_URL\", api_key_env: FAKE_OPENAI_KEY }
models:
  gpt: { provider: openai, model: gpt-4o-mini }
  judge: { provider: openai, model: judge-model }
defaults: { model: gpt, backoff: 10ms, timeout: 5s }
-- prompts/answer.yaml --
input: { question: string }
messages:
  - system: You answer support questions.
  - user: \"{{ question }}\"
";

/// Two cases: `refund` passes on the echo, `greeting` fails.
const TWO_CASES: &str = "-- tests/answer.test.yaml --
target: answer
cases:
  - name: refund
    input: { question: Can I get a refund? }
    tags: [billing]
    assert: [{ contains: refund }]
  - name: greeting
    input: { question: Hello there }
    assert: [{ contains: refund }]
";

fn fake_project(fake: &FakeLlm, tests: &str) -> TestProject {
    let config = CONFIG.replace("BASE_URL", &fake.openai_base_url());
    TestProject::from_txtar(&format!("{config}{tests}"))
}

/// `flowrun test ARGS` with the fake's key set.
fn flowrun_test(project: &TestProject, args: &[&str]) -> Outcome {
    run(project
        .flowrun()
        .env("FAKE_OPENAI_KEY", KEY)
        .arg("test")
        .args(args))
}

/// `flowrun test --format json ARGS`, parsed.
fn json_report(project: &TestProject, args: &[&str]) -> (Outcome, Value) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = flowrun_test(project, &all);
    let report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--format json is JSON ({e}):\n{}\n{}",
            out.stdout, out.stderr
        )
    });
    (out, report)
}

/// `(case, pass)` of every result, in report order.
fn verdicts(report: &Value) -> Vec<(String, bool)> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["case"].as_str().expect("case").to_string(),
                r["pass"].as_bool().expect("pass"),
            )
        })
        .collect()
}

fn no_panic(out: &Outcome) {
    assert!(
        !out.stderr.contains("panicked"),
        "flowrun panicked:\n{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Offline

#[test]
fn quickstart_tests_pass_offline() {
    let project = TestProject::copy_of("examples/quickstart");
    let out = run(project.flowrun().arg("test"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("6 passed, 0 failed (100% ≥ min 100%): PASS"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.starts_with("test run "), "{}", out.stderr);
    with_filters(project.path(), || {
        insta::assert_snapshot!("quickstart_stdout", out.stdout);
        insta::assert_snapshot!("quickstart_stderr", out.stderr);
    });
}

// ---------------------------------------------------------------------------------------
// Verdicts and selection against the fake server

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_case_exits_1_and_shows_why() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let out = flowrun_test(&project, &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "✗ tests/answer.test.yaml › greeting: contains: expected \"refund\"; got \"echo: Hello there\""
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("1 passed, 1 failed (50% < min 100%): FAIL"),
        "{}",
        out.stdout
    );
    assert_eq!(fake.request_count(), 2);
    let users: Vec<Value> = fake
        .requests()
        .iter()
        .map(|r| r.body["messages"][1]["content"].clone())
        .collect();
    assert!(
        users.contains(&Value::from("Can I get a refund?")),
        "{users:?}"
    );
    assert!(users.contains(&Value::from("Hello there")), "{users:?}");
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pass_rate_lets_a_partial_suite_pass() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let out = flowrun_test(&project, &["--min-pass-rate", "0.5"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("1 passed, 1 failed (50% ≥ min 50%): PASS"),
        "{}",
        out.stdout
    );
    // The failure is still reported.
    assert!(out.stdout.contains("✗ tests/answer.test.yaml › greeting"));

    let bad = flowrun_test(&project, &["--min-pass-rate", "1.5"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("between 0 and 1"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_stops_after_the_first_failure() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(
        &fake,
        "-- tests/answer.test.yaml --
target: answer
cases:
  - { name: first fails, input: { question: Hi }, assert: [{ contains: refund }] }
  - { name: second, input: { question: a refund }, assert: [{ contains: refund }] }
  - { name: third, input: { question: a refund? }, assert: [{ contains: refund }] }
  - { name: fourth, input: { question: refund! }, assert: [{ contains: refund }] }
",
    );
    let (out, report) = json_report(&project, &["-j", "1", "--fail-fast"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(verdicts(&report), [("first fails".to_string(), false)]);
    assert_eq!(report["summary"]["runs"], 1);
    assert_eq!(fake.request_count(), 1, "no case starts after the failure");

    // Without it every case runs.
    let (out, report) = json_report(&project, &["-j", "1", "--no-cache"]);
    assert_eq!(out.code, 1);
    assert_eq!(report["summary"]["runs"], 4);
    assert_eq!(report["summary"]["passed"], 3);
    assert_eq!(fake.request_count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_reports_a_flaky_case_with_its_pass_rate() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push_all([
        Reply::text("Yes, a refund is possible."),
        Reply::text("I cannot help with that."),
        Reply::text("Sure, we will refund you."),
    ]);
    let project = fake_project(
        &fake,
        "-- tests/answer.test.yaml --
target: answer
cases:
  - name: refund
    input: { question: Can I get my money back? }
    assert: [{ contains: refund }]
",
    );
    let out = flowrun_test(&project, &["--repeat", "3", "-j", "1"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(fake.request_count(), 3, "every repeat calls the model");
    assert!(
        out.stdout
            .contains("~ flaky tests/answer.test.yaml › refund: passed 2/3 (66.7%)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("✗ tests/answer.test.yaml › refund #2: contains:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("2 passed, 1 failed (66.7% < min 100%): FAIL"),
        "{}",
        out.stdout
    );

    let runs = run(project.flowrun().args(["tests", "--json"]));
    let rows: Value = serde_json::from_str(&runs.stdout).expect("JSON");
    let id = rows[0]["id"].as_str().expect("id");
    let shown = run(project
        .flowrun()
        .args(["test", "show", id, "--format", "json"]));
    let report: Value = serde_json::from_str(&shown.stdout).expect("JSON");
    let flaky = &report["summary"]["flaky"];
    assert_eq!(flaky.as_array().map(Vec::len), Some(1), "{flaky}");
    assert_eq!(flaky[0]["case"], "refund");
    assert_eq!(
        (flaky[0]["runs"].clone(), flaky[0]["passes"].clone()),
        (3.into(), 2.into())
    );

    // The repeats' answers still fill the cache for ordinary runs.
    let (out, report) = json_report(&project, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(report["summary"]["cached"], 1);
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_and_tag_select_cases() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(
        &fake,
        "-- tests/answer.test.yaml --
target: answer
cases:
  - { name: refund by card, input: { question: card refund }, tags: [billing], assert: [{ contains: refund }] }
  - { name: refund by bank, input: { question: bank refund }, tags: [billing, slow], assert: [{ contains: refund }] }
  - { name: password, input: { question: reset password }, tags: [account], assert: [{ contains: password }] }
",
    );
    let (out, report) = json_report(&project, &["--filter", "refund"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        verdicts(&report),
        [
            ("refund by card".to_string(), true),
            ("refund by bank".to_string(), true)
        ]
    );
    assert_eq!(fake.request_count(), 2);

    let (out, report) = json_report(&project, &["--tag", "account", "--no-cache"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(verdicts(&report), [("password".to_string(), true)]);
    assert_eq!(fake.request_count(), 3);
    assert_eq!(
        fake.last_request().expect("request").body["messages"][1]["content"],
        "reset password"
    );

    let (_, report) = json_report(&project, &["--tag", "slow", "--tag", "account"]);
    assert_eq!(report["summary"]["runs"], 2);
    let (_, report) = json_report(&project, &["--filter", "bank", "--tag", "billing"]);
    assert_eq!(verdicts(&report), [("refund by bank".to_string(), true)]);

    let none = flowrun_test(&project, &["--filter", "nothing matches"]);
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(
        none.stderr.contains("no test cases to run"),
        "{}",
        none.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Reporters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_has_the_summary_and_every_result() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let (out, report) = json_report(&project, &[]);
    assert_eq!(out.code, 1);
    let s = &report["summary"];
    assert_eq!(
        (s["runs"].clone(), s["passed"].clone(), s["failed"].clone()),
        (2.into(), 1.into(), 1.into())
    );
    assert_eq!(s["pass_rate"], 0.5);
    assert_eq!(s["cached"], 0);
    // The fake counts words: 4 (system) + 5 and 2 (user) in; 6 and 3 out.
    assert_eq!(s["usage"]["input_tokens"], 15);
    assert_eq!(s["usage"]["output_tokens"], 9);
    assert_eq!(report["min_pass_rate"], 1.0);
    assert!(report["id"].is_string(), "the stored id is in the report");
    let greeting = &report["results"][1];
    assert_eq!(greeting["case"], "greeting");
    assert_eq!(greeting["file"], "tests/answer.test.yaml");
    assert_eq!(greeting["target"], "prompt/answer");
    assert_eq!(greeting["status"], "succeeded");
    assert_eq!(greeting["output"], "echo: Hello there");
    assert_eq!(greeting["assertions"][0]["name"], "contains");
    assert_eq!(greeting["assertions"][0]["pass"], false);
    assert_eq!(report["results"][0]["tags"], serde_json::json!(["billing"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_report_is_written_and_valid() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let out = flowrun_test(&project, &["--format", "junit", "--output", "report.xml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stdout, "", "the report goes to the file");
    assert!(
        out.stderr
            .contains("1 passed, 1 failed (50% < min 100%): FAIL"),
        "the terminal summary goes to stderr:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("wrote the report to report.xml"),
        "{}",
        out.stderr
    );
    let xml = std::fs::read_to_string(project.path().join("report.xml")).expect("report.xml");
    assert!(
        xml.contains("<testsuites name=\"flowrun\" tests=\"2\" failures=\"1\" errors=\"0\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testcase classname=\"tests/answer.test.yaml\" name=\"greeting\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"contains: expected &quot;refund&quot;"),
        "{xml}"
    );
    assert!(
        !project.path().join("report.tmp~").exists(),
        "no temp file is left behind"
    );

    let xsd = crate::harness::repo_root().join("flowrun-local/tests/data/junit.xsd");
    match std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(project.path().join("report.xml"))
        .output()
    {
        Ok(lint) => assert!(
            lint.status.success(),
            "xmllint rejects the report:\n{}\n{xml}",
            String::from_utf8_lossy(&lint.stderr)
        ),
        Err(e) => eprintln!(
            "SKIPPED junit_report_is_written_and_valid: schema validation, xmllint cannot run ({e}); install libxml2-utils"
        ),
    }
}

/// Filters for what varies in reports beyond the harness's: dates in HTML and latencies.
fn with_report_filters(project: &TestProject, f: impl FnOnce()) {
    with_filters(project.path(), || {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "[DATE] UTC");
        settings.bind(f);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_report() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let out = flowrun_test(&project, &["--format", "markdown"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("## ❌ flowrun test: FAIL\n"),
        "{}",
        out.stdout
    );
    with_report_filters(&project, || insta::assert_snapshot!(out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_report() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let out = flowrun_test(&project, &["--format", "html"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.starts_with("<!DOCTYPE html>"), "{}", out.stdout);
    assert!(out.stdout.trim_end().ends_with("</html>"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("<script")
            && !out.stdout.contains("src=")
            && !out.stdout.contains("href="),
        "one self-contained page"
    );
    // The page's content; its inline stylesheet is left out.
    let body = &out.stdout[out.stdout.find("<body>").expect("body")..];
    with_report_filters(&project, || insta::assert_snapshot!(body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_actions_get_error_annotations() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let out = run(project
        .flowrun()
        .env("FAKE_OPENAI_KEY", KEY)
        .env("GITHUB_ACTIONS", "true")
        .arg("test"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let errors: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("::error "))
        .collect();
    assert_eq!(
        errors,
        [
            "::error file=tests/answer.test.yaml,title=greeting::contains: expected \"refund\"; got \"echo: Hello there\""
        ],
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("::notice::flowrun test: 1 passed, 1 failed")),
        "{}",
        out.stdout
    );

    // Not on GitHub: no workflow commands.
    let plain = flowrun_test(&project, &[]);
    assert!(!plain.stdout.contains("::error"), "{}", plain.stdout);
}

// ---------------------------------------------------------------------------------------
// Response cache and cassettes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_is_served_from_the_cache() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let (first, report) = json_report(&project, &[]);
    assert_eq!(first.code, 1);
    assert_eq!(report["summary"]["cached"], 0);
    assert_eq!(fake.request_count(), 2);

    let (second, report) = json_report(&project, &[]);
    assert_eq!(second.code, 1, "same verdicts from the cache");
    assert_eq!(fake.request_count(), 2, "no new request");
    assert_eq!(report["summary"]["cached"], 2);
    assert!(
        report["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["cached"] == true)
    );
    assert_eq!(report["results"][0]["output"], "echo: Can I get a refund?");
    let terminal = flowrun_test(&project, &[]);
    assert!(
        terminal.stdout.contains("· 2 cached"),
        "{}",
        terminal.stdout
    );
    assert_eq!(fake.request_count(), 2);

    let (_, report) = json_report(&project, &["--no-cache"]);
    assert_eq!(fake.request_count(), 4, "--no-cache calls again");
    assert_eq!(report["summary"]["cached"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cassette_records_and_replays_without_the_network() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let recorded = flowrun_test(&project, &["--record", "tests.cassette"]);
    assert_eq!(recorded.code, 1, "{}", recorded.stderr);
    assert!(
        recorded
            .stderr
            .contains("recorded 2 exchanges to tests.cassette"),
        "{}",
        recorded.stderr
    );
    assert_eq!(fake.request_count(), 2);
    let cassette =
        std::fs::read_to_string(project.path().join("tests.cassette")).expect("cassette");
    assert!(!cassette.contains(KEY), "the cassette holds no key");
    let parsed: Value = serde_json::from_str(&cassette).expect("cassette is JSON");
    assert_eq!(parsed["format"], "flowrun-cassette");
    assert_eq!(parsed["entries"].as_array().map(Vec::len), Some(2));
    assert!(cassette.contains("echo: Hello there"));

    // A case added after recording misses, and no call goes out although the server is up.
    project.write(
        "tests/answer.test.yaml",
        &format!(
            "{}  - name: new case\n    input: {{ question: Is shipping free? }}\n    assert: [{{ contains: shipping }}]\n",
            TWO_CASES.trim_start_matches("-- tests/answer.test.yaml --\n")
        ),
    );
    let missed = flowrun_test(
        &project,
        &["--filter", "new case", "--replay", "tests.cassette"],
    );
    assert_eq!(missed.code, 1, "{}\n{}", missed.stdout, missed.stderr);
    no_panic(&missed);
    assert!(
        missed.stdout.contains(
            "✗ tests/answer.test.yaml › new case: run failed: step `answer` failed: \
             no recorded response for this call (prompt answer, model openai/gpt-4o-mini)"
        ),
        "{}",
        missed.stdout
    );
    let (out, report) = json_report(&project, &["--replay", "tests.cassette"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        verdicts(&report),
        [
            ("refund".to_string(), true),
            ("greeting".to_string(), false),
            ("new case".to_string(), false)
        ]
    );
    assert_eq!(report["summary"]["cached"], 2);
    let error = report["results"][2]["error"].as_str().expect("error");
    assert!(
        error.contains(
            "no recorded response for this call (prompt answer, model openai/gpt-4o-mini)"
        ) && error.ends_with("(case `new case` of tests/answer.test.yaml)"),
        "{error}"
    );
    assert_eq!(fake.request_count(), 2, "replay never calls a provider");

    // No server and no key: the recorded cases replay from the file alone.
    fake.shutdown().await;
    let replayed =
        run(project
            .flowrun()
            .args(["test", "--filter", "refund", "--replay", "tests.cassette"]));
    assert_eq!(replayed.code, 0, "{}\n{}", replayed.stdout, replayed.stderr);
    assert!(
        replayed
            .stdout
            .contains("1 passed, 0 failed (100% ≥ min 100%): PASS")
            && replayed.stdout.contains("· 1 cached"),
        "{}",
        replayed.stdout
    );

    let gone = run(project
        .flowrun()
        .args(["test", "--replay", "missing.cassette"]));
    assert_eq!(gone.code, 2, "{}", gone.stderr);
    assert!(
        gone.stderr
            .contains("cannot read cassette missing.cassette"),
        "{}",
        gone.stderr
    );
}

// ---------------------------------------------------------------------------------------
// External checks: the judge and commands

const JUDGED: &str = "-- tests/answer.test.yaml --
target: answer
cases:
  - name: judged
    input: { question: Can I get a refund? }
    assert:
      - { llm_judge: The answer mentions a refund, threshold: 0.7 }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_that_answers_garbage_fails_the_assertion() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    // The judge's first reply and its repair both fail to be JSON.
    fake.push_for_model("judge-model", Reply::text("Looks good to me!"));
    fake.push_for_model("judge-model", Reply::text("Still not JSON, sorry."));
    let project = fake_project(&fake, JUDGED);
    let (out, report) = json_report(&project, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    no_panic(&out);
    let judged = &report["results"][0];
    assert_eq!(judged["status"], "succeeded", "the case's own run worked");
    let assertion = &judged["assertions"][0];
    assert_eq!(assertion["name"], "llm_judge");
    assert_eq!(assertion["pass"], false);
    assert_eq!(assertion["score"], 0.0);
    let reason = assertion["reason"].as_str().expect("reason");
    assert!(reason.starts_with("judge failed: "), "{reason}");
    assert!(
        reason.contains(
            "the reply is not valid JSON for the output schema, even after one repair attempt"
        ),
        "{reason}"
    );
    assert_eq!(
        fake.requests_for_model("judge-model").len(),
        2,
        "one call, one repair"
    );
    assert_eq!(fake.requests_for_model("gpt-4o-mini").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_score_above_the_threshold_passes() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push_for_model(
        "judge-model",
        Reply::text(r#"{"score": 0.9, "reason": "It talks about a refund."}"#),
    );
    let project = fake_project(&fake, JUDGED);
    let (out, report) = json_report(&project, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let assertion = &report["results"][0]["assertions"][0];
    assert_eq!(assertion["pass"], true);
    assert_eq!(assertion["score"], 0.9);
    assert_eq!(assertion["reason"], "It talks about a refund.");
    let judged = fake.requests_for_model("judge-model");
    assert_eq!(judged.len(), 1);
    let asked = judged[0].body["messages"][1]["content"]
        .as_str()
        .expect("text");
    assert!(
        asked.contains("Rubric: The answer mentions a refund"),
        "{asked}"
    );
    assert!(asked.contains("echo: Can I get a refund?"), "{asked}");

    // A score under the threshold fails, with the judge's reason.
    fake.push_for_model(
        "judge-model",
        Reply::text(r#"{"score": 0.4, "reason": "Barely related."}"#),
    );
    let out = flowrun_test(&project, &["--no-cache"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("✗ tests/answer.test.yaml › judged: llm_judge: Barely related."),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_assertions_run_a_shell_command() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(
        &fake,
        "-- tests/answer.test.yaml --
target: answer
defaults:
  assert: [{ command: grep -q refund }]
cases:
  - { name: mentions refund, input: { question: refund please } }
  - { name: does not, input: { question: hello } }
",
    );
    let (out, report) = json_report(&project, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        verdicts(&report),
        [
            ("mentions refund".to_string(), true),
            ("does not".to_string(), false)
        ]
    );
    assert_eq!(
        report["results"][0]["assertions"][0]["reason"],
        "`grep -q refund` exited with code 0"
    );
    assert_eq!(
        report["results"][1]["assertions"][0]["reason"],
        "`grep -q refund` exited with code 1"
    );
}

// ---------------------------------------------------------------------------------------
// Bad test files

#[test]
fn test_error_fixtures() {
    insta::glob!("../fixtures/test_errors", "*.txtar", |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        let project = TestProject::from_txtar(&text);
        let out = run(project.flowrun().arg("test"));
        assert_eq!(out.code, 2, "bad test files exit 2\n{}", out.stderr);
        assert!(out.stdout.is_empty(), "diagnostics go to stderr");
        assert!(
            !project.path().join(".flowrun").exists(),
            "nothing runs or is stored"
        );
        with_filters(project.path(), || insta::assert_snapshot!(out.stderr));
    });
}

// ---------------------------------------------------------------------------------------
// Stored test runs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_runs_are_listed_and_shown() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = fake_project(&fake, TWO_CASES);
    let (first, first_report) = json_report(&project, &["--filter", "refund"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let (second, second_report) = json_report(&project, &[]);
    assert_eq!(second.code, 1);

    let listed = run(project.flowrun().args(["tests", "--json"]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let rows: Value = serde_json::from_str(&listed.stdout).expect("JSON");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    // Newest first.
    assert_eq!(rows[0]["id"], second_report["id"]);
    assert_eq!(rows[1]["id"], first_report["id"]);
    let counts = |r: &Value| {
        (
            r["runs"].as_u64(),
            r["passed"].as_u64(),
            r["failed"].as_u64(),
            r["pass_rate"].as_f64(),
        )
    };
    assert_eq!(counts(&rows[0]), (Some(2), Some(1), Some(1), Some(0.5)));
    assert_eq!(counts(&rows[1]), (Some(1), Some(1), Some(0), Some(1.0)));
    assert_eq!(rows[0]["min_pass_rate"], 1.0);
    assert_eq!(
        rows[0]["cost_usd"], second_report["summary"]["cost"]["usd"],
        "{}",
        second_report["summary"]["cost"]
    );

    let id = second_report["id"].as_str().expect("id");
    let shown = run(project
        .flowrun()
        .args(["test", "show", &id[..13], "--format", "json"]));
    assert_eq!(
        shown.code, 1,
        "a failed run shows with exit 1\n{}",
        shown.stderr
    );
    let back: Value = serde_json::from_str(&shown.stdout).expect("JSON");
    assert_eq!(back, second_report, "the stored report is the one printed");

    let shown_first =
        run(project
            .flowrun()
            .args(["test", "show", first_report["id"].as_str().expect("id")]));
    assert_eq!(shown_first.code, 0);
    assert!(
        shown_first.stdout.contains("1 passed, 0 failed"),
        "{}",
        shown_first.stdout
    );

    let table = run(project.flowrun().arg("tests"));
    assert_eq!(table.code, 0);
    assert_eq!(table.stdout.lines().count(), 3, "{}", table.stdout);
    assert!(table.stdout.contains("50.0%"), "{}", table.stdout);

    let unknown = run(project.flowrun().args(["test", "show", "ffffffff"]));
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no test run with id `ffffffff`"),
        "{}",
        unknown.stderr
    );
}
