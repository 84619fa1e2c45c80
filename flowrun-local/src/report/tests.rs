//! Snapshot tests of every reporter on one hand-built suite (two files; passing, failing,
//! flaky, errored and cached cases; text needing escaping), and a JUnit schema check.

use std::path::Path;
use std::process::Command;

use flowrun_core::assert::AssertionResult;
use flowrun_core::cost::Cost;
use flowrun_core::event::RunStatus;
use flowrun_core::provider::Usage;
use flowrun_core::testing::result::{CaseResult, SuiteReport};
use serde_json::json;

/// Text with everything the reporters must escape: XML/HTML specials, a table pipe, a
/// newline and a control character (BEL).
const NASTY: &str = "<&>\"'| done\nsecond line\u{7}";

fn case(file: &str, index: usize, name: &str) -> CaseResult {
    CaseResult {
        file: file.into(),
        case: name.into(),
        index,
        repeat: 1,
        target: "prompt/triage".into(),
        tags: vec![],
        input: json!({ "ticket": "My order is late" }),
        run_id: Some(format!("run-{index}")),
        status: RunStatus::Succeeded,
        output: Some(json!("refund issued")),
        output_text: "refund issued".into(),
        error: None,
        assertions: vec![assertion("contains", true, "found \"refund\"")],
        score: 1.0,
        pass: true,
        latency_ms: 120,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 20,
            cached_tokens: 0,
            reasoning_tokens: 0,
        },
        cost: Cost::known(0.00015),
        cached: false,
    }
}

fn assertion(name: &str, pass: bool, reason: &str) -> AssertionResult {
    AssertionResult {
        name: name.into(),
        score: if pass { 1.0 } else { 0.0 },
        pass,
        reason: reason.into(),
        weight: 1.0,
        required: false,
    }
}

fn fixture() -> SuiteReport {
    let a = "tests/triage.test.yaml";
    let b = "tests/sum, mary.test.yaml";
    let passing = case(a, 0, "refund request");

    let mut failing = case(a, 1, "escapes <&>\"'|");
    failing.output_text = NASTY.into();
    failing.output = Some(json!(NASTY));
    failing.assertions = vec![
        assertion("contains", true, "found \"done\""),
        assertion("regex", false, &format!("no match for `a|b` in {NASTY}")),
    ];
    failing.score = 0.5;
    failing.pass = false;
    failing.latency_ms = 950;
    failing.cost = Cost::unknown("mystery-model");

    let flaky: Vec<CaseResult> = (1..=3)
        .map(|repeat| {
            let mut r = case(a, 2, "flaky tone");
            r.repeat = repeat;
            r.latency_ms = 200 + u64::from(repeat) * 10;
            if repeat == 2 {
                r.pass = false;
                r.score = 0.0;
                r.output_text = "meh".into();
                r.output = Some(json!("meh"));
                r.assertions = vec![assertion("llm_judge", false, "tone is curt (0.2 < 0.5)")];
            }
            r
        })
        .collect();

    let mut errored = case(b, 0, "timeout");
    errored.status = RunStatus::Failed;
    errored.error = Some("provider error: timed out after 30s: 100%, done".into());
    errored.output = None;
    errored.output_text = String::new();
    errored.assertions = vec![];
    errored.score = 0.0;
    errored.pass = false;
    errored.latency_ms = 30_000;
    errored.usage = Usage::default();
    errored.cost = Cost::known(0.0);

    let mut cached = case(b, 1, "cached summary");
    cached.cached = true;
    cached.latency_ms = 2;
    cached.cost = Cost::known(0.0);

    let mut results = vec![errored, cached, passing, failing];
    results.extend(flaky);
    let mut report = SuiteReport::new(1_714_564_800_000, 31_234, 0.9, results);
    report.id = Some("suite-0001".into());
    report
}

fn visible_escapes(text: &str) -> String {
    text.replace('\u{1b}', "␛")
}

#[test]
fn report_json_snapshot() {
    let text = super::json(&fixture());
    let back: SuiteReport = serde_json::from_str(&text).expect("json parses back");
    assert_eq!(back, fixture());
    insta::assert_snapshot!("json", text);
}

#[test]
fn report_junit_snapshot() {
    insta::assert_snapshot!("junit", super::junit(&fixture()));
}

#[test]
fn report_markdown_snapshot() {
    insta::assert_snapshot!("markdown", super::markdown(&fixture()));
}

#[test]
fn report_html_snapshot() {
    insta::assert_snapshot!("html", super::html(&fixture()));
}

#[test]
fn report_github_snapshot() {
    insta::assert_snapshot!("github", super::github_annotations(&fixture()));
}

#[test]
fn report_terminal_snapshots() {
    let report = fixture();
    let plain = super::terminal(&report, false);
    assert!(!plain.contains('\u{1b}'), "no ANSI codes without colour");
    insta::assert_snapshot!("terminal_plain", plain);
    insta::assert_snapshot!(
        "terminal_color",
        visible_escapes(&super::terminal(&report, true))
    );
}

#[test]
fn report_empty_suite_renders() {
    let report = SuiteReport::new(0, 0, 1.0, vec![]);
    for text in [
        super::json(&report),
        super::junit(&report),
        super::markdown(&report),
        super::html(&report),
        super::github_annotations(&report),
        super::terminal(&report, true),
    ] {
        assert!(!text.is_empty());
    }
    assert!(super::terminal(&report, false).contains("0 passed, 0 failed (no cases ran): FAIL"));
}

#[test]
fn report_escapes_untrusted_text() {
    let report = fixture();
    let junit = super::junit(&report);
    assert!(!junit.contains('\u{7}') && !junit.contains("<&>"));
    let html = super::html(&report);
    assert!(!html.contains('\u{7}') && !html.contains("<&>"));
    let markdown = super::markdown(&report);
    for row in markdown.lines().filter(|l| l.starts_with("| ")) {
        // Seven columns: eight unescaped pipes.
        let pipes = row
            .match_indices('|')
            .filter(|(i, _)| !row[..*i].ends_with('\\'))
            .count();
        assert_eq!(pipes, 8, "{row}");
    }
    let github = super::github_annotations(&report);
    for line in github.lines() {
        assert!(line.starts_with("::"), "one command per line: {line}");
    }
    let terminal = super::terminal(&report, false);
    assert!(!terminal.contains('\u{7}'));
}

#[test]
fn report_html_is_self_contained() {
    let html = super::html(&fixture());
    for needle in [
        "http://", "https://", "<script", "<link", "src=", "url(", "@import",
    ] {
        assert!(
            !html.contains(needle),
            "HTML references an external resource: {needle}"
        );
    }
}

#[test]
fn report_junit_validates_against_xsd() {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit.xsd");
    if Command::new("xmllint").arg("--version").output().is_err() {
        eprintln!(
            "\n**********\nSKIPPED: xmllint not installed (apt-get install libxml2-utils)\n**********\n"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, report) in [
        ("suite.xml", fixture()),
        ("empty.xml", SuiteReport::new(0, 0, 1.0, vec![])),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, super::junit(&report)).expect("write junit");
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&xsd)
            .arg(&path)
            .output()
            .expect("run xmllint");
        assert!(
            out.status.success(),
            "{name} does not validate:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn report_timestamps_are_iso8601() {
    assert_eq!(super::common::iso8601(0), "1970-01-01T00:00:00");
    assert_eq!(
        super::common::iso8601(1_714_564_800_000),
        "2024-05-01T12:00:00"
    );
    assert_eq!(
        super::common::iso8601(951_782_400_000),
        "2000-02-29T00:00:00"
    );
    assert_eq!(super::common::iso8601(-1_000), "1969-12-31T23:59:59");
}
