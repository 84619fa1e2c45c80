//! `flowrun eval`, `flowrun evals` and `flowrun eval show` end to end: a project in a temp git
//! repository on the fake LLM server, its committed version as the baseline and an edited
//! prompt in the working tree as the draft.
//!
//! The fake echoes (`echo: <user message>`), so each side's output follows from its prompt
//! text: the committed prompt asks to mention the refund policy, the tests check for it, and
//! a draft that drops the sentence fails every case.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowrun_fakellm::{FakeConfig, FakeLlm, RecordedRequest, Reply};
use serde_json::Value;

use crate::harness::{Outcome, TestProject, run, with_filters};

const KEY: &str = "sk-test-secret-0123456789";

/// The prompt's user message on each version.
const WITH_POLICY: &str = "{{ question }} Mention our 30-day refund policy.";
const WITHOUT_POLICY: &str = "{{ question }}";
/// The text only the `WITH_POLICY` version sends.
const POLICY: &str = "Mention our 30-day refund policy.";

const QUESTIONS: [&str; 6] = [
    "Where is my order?",
    "Can I change my plan?",
    "How do I cancel?",
    "Is there a student discount?",
    "Why was I charged?",
    "Can I pause my subscription?",
];

// ---------------------------------------------------------------------------------------
// Git, isolated from the user's configuration (shared with `ci_example`)

/// Whether git can be run; says so loudly when it cannot.
pub(crate) fn have_git() -> bool {
    let ok = Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: git is not installed; the git baseline checks did not run");
    }
    ok
}

/// Runs git in `dir` with a fixed identity and no global or system configuration; panics
/// when it fails. Returns stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(["-c", "commit.gpgsign=false", "-c", "core.autocrlf=false"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", dir.join(".no-global-gitconfig"))
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `git init -b <branch>`.
pub(crate) fn git_init(dir: &Path, branch: &str) {
    git(dir, &["init", "-q", "-b", branch]);
}

/// Stages everything (what `.gitignore` allows) and commits it.
pub(crate) fn commit_all(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
}

/// `git status --porcelain`, HEAD, and every file outside `.git` with its contents.
fn tree_state(dir: &Path) -> (String, String, Vec<(PathBuf, Vec<u8>)>) {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n == ".git" || n == ".flowrun")
                {
                    continue;
                }
                walk(&path, out);
            } else {
                out.push((path.clone(), std::fs::read(&path).expect("read")));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    (
        git(dir, &["status", "--porcelain"]),
        git(dir, &["rev-parse", "HEAD"]),
        files,
    )
}

// ---------------------------------------------------------------------------------------
// The project

/// `flowrun.yaml` on the fake (and a `judge` alias on `judge-model`), the `answer` prompt
/// with `user` as its user message, and six cases that pass when the output mentions the
/// refund policy.
fn project_files(fake: &FakeLlm, user: &str) -> String {
    let mut text = format!(
        "-- flowrun.yaml --
providers:
  openai: {{ kind: openai, base_url: \"{}\", api_key_env: FAKE_OPENAI_KEY }}
models:
  gpt: {{ provider: openai, model: gpt-4o-mini }}
  judge: {{ provider: openai, model: judge-model }}
defaults: {{ model: gpt, backoff: 10ms, timeout: 5s }}
-- .gitignore --
.flowrun/
-- tests/answer.test.yaml --
target: answer
cases:
",
        fake.openai_base_url()
    );
    for q in QUESTIONS {
        text.push_str(&format!(
            "  - {{ name: \"{}\", input: {{ question: \"{q}\" }}, assert: [{{ icontains: refund policy }}] }}\n",
            q.trim_end_matches('?').to_lowercase()
        ));
    }
    format!("{text}-- prompts/answer.yaml --\n{}", answer_prompt(user))
}

fn answer_prompt(user: &str) -> String {
    format!(
        "input: {{ question: string }}\nmessages:\n  - system: You answer support questions.\n  - user: \"{user}\"\n"
    )
}

/// A project whose committed version (branch `main`) has `committed` as its user message
/// and whose working tree has `draft`; `None` when git is missing.
fn repo(fake: &FakeLlm, committed: &str, draft: &str) -> Option<TestProject> {
    if !have_git() {
        return None;
    }
    let project = TestProject::from_txtar(&project_files(fake, committed));
    git_init(project.path(), "main");
    commit_all(project.path(), "the baseline");
    project.write("prompts/answer.yaml", &answer_prompt(draft));
    Some(project)
}

/// `flowrun ARGS` in the project with the fake's key.
fn flowrun(project: &TestProject, args: &[&str]) -> Outcome {
    run(project.flowrun().env("FAKE_OPENAI_KEY", KEY).args(args))
}

/// `flowrun eval --format json ARGS`, parsed.
fn eval_json(project: &TestProject, args: &[&str]) -> (Outcome, Value) {
    let mut all = vec!["eval", "--format", "json"];
    all.extend_from_slice(args);
    let out = flowrun(project, &all);
    let report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--format json is JSON ({e}):\n{}\n{}",
            out.stdout, out.stderr
        )
    });
    (out, report)
}

/// The user message of a request to the fake.
fn user_text(r: &RecordedRequest) -> String {
    r.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// How many answer requests the fake received with and without `text` in the user message.
fn answer_requests(fake: &FakeLlm, text: &str) -> (usize, usize) {
    let answers = fake.requests_for_model("gpt-4o-mini");
    let with = answers
        .iter()
        .filter(|r| user_text(r).contains(text))
        .count();
    (with, answers.len() - with)
}

fn no_panic(out: &Outcome) {
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// Insta filters for an eval report: those of the harness, the baseline commit, the start
/// time and the (timing-dependent) latency row.
fn with_eval_filters(dir: &Path, f: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"git:main \([0-9a-f]{8}\)", "git:main ([COMMIT])");
    settings.add_filter(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "[DATE] UTC");
    settings.add_filter(r"(?m)^(\|? ?latency p50\b).*$", "$1 [LATENCY]");
    settings.bind(|| with_filters(dir, f));
}

// ---------------------------------------------------------------------------------------
// Verdicts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worse_draft_fails_the_gate_and_leaves_the_working_tree_alone() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITH_POLICY, WITHOUT_POLICY) else {
        return;
    };
    let before = tree_state(project.path());
    assert_eq!(before.0, " M prompts/answer.yaml\n");

    let gated = flowrun(
        &project,
        &["eval", "--baseline", "git:main", "--fail-if-worse"],
    );
    assert_eq!(gated.code, 1, "{}\n{}", gated.stdout, gated.stderr);
    no_panic(&gated);
    assert!(
        gated.stdout.starts_with("flowrun eval: worse\n"),
        "{}",
        gated.stdout
    );
    assert!(gated.stderr.starts_with("evaluation "), "{}", gated.stderr);
    with_eval_filters(project.path(), || {
        insta::assert_snapshot!("worse_terminal", gated.stdout);
    });
    assert_eq!(answer_requests(&fake, POLICY), (6, 6), "both sides ran");

    // Without the flag a worse verdict is reported, not a failure.
    let reported = flowrun(&project, &["eval", "--baseline", "git:main"]);
    assert_eq!(reported.code, 0, "{}", reported.stderr);
    assert!(reported.stdout.starts_with("flowrun eval: worse\n"));

    // The CI comment.
    let markdown = flowrun(
        &project,
        &["eval", "--baseline", "git:main", "--format", "markdown"],
    );
    assert_eq!(markdown.code, 0, "{}", markdown.stderr);
    with_eval_filters(project.path(), || {
        insta::assert_snapshot!("worse_markdown", markdown.stdout);
    });

    assert_eq!(
        tree_state(project.path()),
        before,
        "the working tree, the index and HEAD are untouched"
    );
    assert_eq!(git(project.path(), &["stash", "list"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clearly_better_draft_is_better_and_json_has_the_verdict() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITHOUT_POLICY, WITH_POLICY) else {
        return;
    };
    let (out, report) = eval_json(&project, &["--baseline", "git:main", "--fail-if-worse"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(report["verdict"], "better");
    assert_eq!(report["draft_wins"], 6);
    assert_eq!(report["baseline_wins"], 0);
    assert_eq!(report["ties"], 0);
    // Six cases, all one way: a two-sided sign test gives 2 × 0.5⁶.
    let p = report["p_value"].as_f64().expect("p_value");
    assert!((p - 0.03125).abs() < 1e-9, "{p}");
    assert_eq!(report["draft"]["pass_rate"], 1.0);
    assert_eq!(report["baseline_summary"]["pass_rate"], 0.0);
    assert!(
        report["baseline"]
            .as_str()
            .is_some_and(|b| b.starts_with("git:main (")),
        "{}",
        report["baseline"]
    );
    let cases = report["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 6);
    let first = &cases[0];
    assert_eq!(first["case"], "where is my order");
    assert_eq!(first["preference"], "draft");
    assert_eq!(
        first["draft"]["output"],
        "echo: Where is my order? Mention our 30-day refund policy."
    );
    assert_eq!(first["baseline"]["output"], "echo: Where is my order?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_baseline_is_compared_the_same_way() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    // No git here: the draft and the baseline are two directories.
    let draft = TestProject::from_txtar(&project_files(&fake, WITH_POLICY));
    let old = TestProject::from_txtar(&project_files(&fake, WITHOUT_POLICY));
    let dir = old.path().display().to_string();
    let (out, report) = eval_json(&draft, &["--baseline", &format!("dir:{dir}")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(report["verdict"], "better");
    assert_eq!(report["baseline"], dir.as_str());

    // A bare path is a directory too; swapped, the verdict flips.
    let (out, report) = eval_json(
        &old,
        &[
            "--baseline",
            &draft.path().display().to_string(),
            "--fail-if-worse",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(report["verdict"], "worse");
    assert!(
        !old.path().join(".git").exists() && !draft.path().join(".git").exists(),
        "no repository was made"
    );
}

// ---------------------------------------------------------------------------------------
// The cache

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_eval_runs_only_the_draft() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITH_POLICY, WITHOUT_POLICY) else {
        return;
    };
    let first = flowrun(&project, &["eval", "--baseline", "git:main"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(answer_requests(&fake, POLICY), (6, 6));

    // Edit the draft again: only it is asked; the baseline's answers come from the cache.
    project.write(
        "prompts/answer.yaml",
        &answer_prompt("{{ question }} Be brief."),
    );
    let (second, report) = eval_json(&project, &["--baseline", "git:main"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        answer_requests(&fake, POLICY).0,
        6,
        "no new baseline request"
    );
    assert_eq!(answer_requests(&fake, "Be brief.").0, 6);
    let cases = report["cases"].as_array().expect("cases");
    assert!(cases.iter().all(|c| c["baseline"]["cached"] == true));
    assert!(cases.iter().all(|c| c["draft"]["cached"] == false));
    assert_eq!(report["verdict"], "worse");

    // `--no-cache` asks the draft's model again, never the baseline's.
    let (third, report) = eval_json(&project, &["--baseline", "git:main", "--no-cache"]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(answer_requests(&fake, POLICY).0, 6);
    assert_eq!(answer_requests(&fake, "Be brief.").0, 12);
    let cases = report["cases"].as_array().expect("cases");
    assert!(cases.iter().all(|c| c["baseline"]["cached"] == true));

    // Nothing changed: the cache answers both sides.
    let before = fake.request_count();
    let (fourth, _) = eval_json(&project, &["--baseline", "git:main"]);
    assert_eq!(fourth.code, 0, "{}", fourth.stderr);
    assert_eq!(fake.request_count(), before);
}

// ---------------------------------------------------------------------------------------
// The pairwise judge

/// The text between `<tag>\n` and `\n</tag>` in `text`.
fn between(text: &str, tag: &str) -> String {
    let open = format!("<{tag}>\n");
    let close = format!("\n</{tag}>");
    let start = text.find(&open).map(|i| i + open.len()).expect("open tag");
    let end = text[start..].find(&close).expect("close tag") + start;
    text[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairwise_asks_in_both_orders_and_a_judge_that_flips_is_a_tie() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITH_POLICY, WITHOUT_POLICY) else {
        return;
    };
    // Both versions pass, so only the judge can tell them apart.
    let passing = std::fs::read_to_string(project.path().join("tests/answer.test.yaml"))
        .expect("test file")
        .replace("icontains: refund policy", "icontains: echo");
    project.write("tests/answer.test.yaml", &passing);
    git(
        project.path(),
        &[
            "commit",
            "-qm",
            "both versions pass",
            "--",
            "tests/answer.test.yaml",
        ],
    );
    // A judge with position bias: whatever comes first wins.
    for _ in 0..2 * QUESTIONS.len() {
        fake.push_for_model(
            "judge-model",
            Reply::text(r#"{"winner": "A", "reason": "Output A is clearer."}"#),
        );
    }

    let (out, report) = eval_json(&project, &["--baseline", "git:main", "--pairwise"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let asked = fake.requests_for_model("judge-model");
    assert_eq!(
        asked.len(),
        2 * QUESTIONS.len(),
        "two pairwise requests per case"
    );
    for q in QUESTIONS {
        let draft = format!("echo: {q}");
        let baseline = format!("echo: {q} {POLICY}");
        let echo = format!("echo: {q}");
        let mut firsts: Vec<String> = asked
            .iter()
            .map(|r| between(&user_text(r), "output_a"))
            .filter(|a| a.starts_with(&echo))
            .collect();
        firsts.sort();
        assert_eq!(
            firsts,
            [draft.clone(), baseline.clone()],
            "each order once for {q:?}"
        );
        let criteria = asked
            .iter()
            .map(user_text)
            .find(|t| between(t, "output_a") == draft)
            .expect("draft first");
        assert_eq!(between(&criteria, "output_b"), baseline);
        assert!(criteria.contains("Criteria: Which output better does what the input asks"));
    }
    assert_eq!(report["verdict"], "no_significant_change");
    assert_eq!(report["ties"], 6);
    for c in report["cases"].as_array().expect("cases") {
        assert_eq!(c["pairwise"]["preference"], "tie", "{c:#}");
        assert_eq!(c["pairwise"]["consistent"], false);
        assert!(
            c["pairwise"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("the judge changed its mind with the order")),
            "{c:#}"
        );
        assert_eq!(c["preference"], "tie");
    }
    let terminal = flowrun(&project, &["eval", "--baseline", "git:main", "--pairwise"]);
    assert_eq!(
        fake.requests_for_model("judge-model").len(),
        2 * QUESTIONS.len(),
        "the judge's answers are cached too"
    );
    assert!(
        terminal.stdout.contains("no case changed (6 unchanged)"),
        "{}",
        terminal.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_pairwise_judge_decides_between_passing_versions() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITHOUT_POLICY, WITH_POLICY) else {
        return;
    };
    // Both versions pass; the judge (offline rules) prefers the output with the policy in
    // whichever position it is shown.
    let text = std::fs::read_to_string(project.path().join("tests/answer.test.yaml"))
        .expect("test file")
        .replace("icontains: refund policy", "icontains: echo");
    project.write("tests/answer.test.yaml", &text);
    let config = std::fs::read_to_string(project.path().join("flowrun.yaml"))
        .expect("config")
        .replace(
            "  judge: { provider: openai, model: judge-model }",
            "  judge: { provider: rules, model: judge }",
        )
        .replace(
            "providers:\n",
            "providers:\n  rules:\n    kind: mock\n    rules:\n      - when: \"refund policy.\\n</output_a>\"\n        reply: '{\"winner\": \"A\", \"reason\": \"A states the refund policy.\"}'\n      - reply: '{\"winner\": \"B\", \"reason\": \"B states the refund policy.\"}'\n",
        );
    project.write("flowrun.yaml", &config);
    git(
        project.path(),
        &[
            "commit",
            "-qm",
            "both versions pass; an offline judge",
            "--",
            "flowrun.yaml",
            "tests/answer.test.yaml",
        ],
    );
    assert_eq!(
        git(project.path(), &["status", "--porcelain"]),
        " M prompts/answer.yaml\n",
        "only the draft prompt differs"
    );

    let (out, report) = eval_json(
        &project,
        &[
            "--baseline",
            "git:main",
            "--pairwise",
            "Which answer states the refund policy?",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(report["draft"]["pass_rate"], 1.0);
    assert_eq!(report["baseline_summary"]["pass_rate"], 1.0);
    assert_eq!(report["verdict"], "better", "{:#}", report["cases"][0]);
    assert_eq!(report["draft_wins"], 6);
    for c in report["cases"].as_array().expect("cases") {
        assert_eq!(c["pairwise"]["preference"], "draft", "{c:#}");
        assert_eq!(c["pairwise"]["consistent"], true);
        assert_eq!(c["pairwise"]["reason"], "A states the refund policy.");
    }
    assert_eq!(
        fake.request_count(),
        2 * QUESTIONS.len(),
        "the answers on the fake, the judge offline"
    );
}

// ---------------------------------------------------------------------------------------
// Reports and stored evaluations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_is_one_self_contained_page_with_both_outputs() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITH_POLICY, WITHOUT_POLICY) else {
        return;
    };
    let out = flowrun(
        &project,
        &[
            "eval",
            "--baseline",
            "git:main",
            "--format",
            "html",
            "--output",
            "eval.html",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "", "the report went to the file");
    assert!(
        out.stderr.starts_with("flowrun eval: worse\n"),
        "a summary on stderr: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("wrote the report to eval.html"),
        "{}",
        out.stderr
    );
    let html = std::fs::read_to_string(project.path().join("eval.html")).expect("eval.html");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.trim_end().ends_with("</html>"));
    for external in ["http://", "https://", "<script", "<link", "src="] {
        assert!(
            !html.to_lowercase().contains(external),
            "`{external}` in the page"
        );
    }
    assert!(html.contains("<pre>echo: Where is my order? Mention our 30-day refund policy.</pre>"));
    assert!(html.contains("<pre>echo: Where is my order?</pre>"));
    assert!(html.contains("<title>flowrun eval: worse</title>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evals_lists_stored_evaluations_and_eval_show_prints_one() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITH_POLICY, WITHOUT_POLICY) else {
        return;
    };
    let none = flowrun(&project, &["evals", "--json"]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert_eq!(none.stdout.trim(), "[]");

    let worse = flowrun(&project, &["eval", "--baseline", "git:main"]);
    assert_eq!(worse.code, 0, "{}", worse.stderr);
    project.write("prompts/answer.yaml", &answer_prompt(WITH_POLICY));
    let same = flowrun(&project, &["eval", "--baseline", "git:main"]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    assert!(
        same.stdout
            .starts_with("flowrun eval: no significant change\n")
    );

    let listed = flowrun(&project, &["evals", "--json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let rows: Value = serde_json::from_str(&listed.stdout).expect("JSON");
    let rows = rows.as_array().expect("a list");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["verdict"], "no significant change", "newest first");
    assert_eq!(rows[1]["verdict"], "worse");
    assert_eq!(rows[1]["cases"], 6);
    assert_eq!(rows[1]["draft_pass_rate"], 0.0);
    assert_eq!(rows[1]["baseline_pass_rate"], 1.0);
    assert!(
        rows[1]["baseline"]
            .as_str()
            .is_some_and(|b| b.starts_with("git:main (")),
        "{}",
        rows[1]["baseline"]
    );
    let id = rows[1]["id"].as_str().expect("id");
    assert!(worse.stderr.contains(&format!("evaluation {id}")));

    let table = flowrun(&project, &["evals"]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.starts_with("ID "), "{}", table.stdout);
    assert!(table.stdout.contains(id), "{}", table.stdout);

    // A unique prefix: the timestamp part of the id and a little more.
    let prefix = &id[..23];
    let shown = flowrun(&project, &["eval", "show", prefix]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert_eq!(
        shown.stdout, worse.stdout,
        "the stored report, as printed then"
    );
    let as_json = flowrun(&project, &["eval", "show", prefix, "--format", "json"]);
    let stored: Value = serde_json::from_str(&as_json.stdout).expect("JSON");
    assert_eq!(stored["id"], id);
    assert_eq!(stored["verdict"], "worse");

    let unknown = flowrun(&project, &["eval", "show", "ffffffff"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no evaluation with id `ffffffff`"),
        "{}",
        unknown.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Usage errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_git_ref_is_a_usage_error() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITH_POLICY, WITHOUT_POLICY) else {
        return;
    };
    let out = flowrun(&project, &["eval", "--baseline", "git:no-such-branch"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .starts_with("error: unknown git ref `no-such-branch`: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: compare with another version"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.request_count(), 0, "nothing ran");
    with_filters(project.path(), || {
        insta::assert_snapshot!("unknown_git_ref", out.stderr);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_without_the_tested_target_is_a_usage_error() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let Some(project) = repo(&fake, WITH_POLICY, WITH_POLICY) else {
        return;
    };
    // The draft adds a prompt and its tests; main has neither.
    project.write(
        "prompts/greet.yaml",
        &answer_prompt("Say hello: {{ question }}"),
    );
    project.write(
        "tests/greet.test.yaml",
        "target: prompt/greet\ncases:\n  - { name: hello, input: { question: hi }, assert: [{ contains: hello }] }\n",
    );
    let out = flowrun(&project, &["eval", "--baseline", "git:main"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("error: the baseline (git:main (")
            && out.stderr.contains(") has no prompt/greet"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--filter"), "{}", out.stderr);
    assert_eq!(fake.request_count(), 0, "nothing ran");

    // Leaving the new tests out works.
    let only = flowrun(&project, &["eval", "--baseline", "git:main", "answer"]);
    assert_eq!(only.code, 0, "{}", only.stderr);
    assert!(
        only.stdout
            .starts_with("flowrun eval: no significant change\n")
    );
}
