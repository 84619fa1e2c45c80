//! Snapshot tests of the eval reporters on one hand-built evaluation (a case that got better,
//! one worse, one unchanged, one whose baseline run failed, one tie whose pass status flipped;
//! pairwise reasons; an unknown cost on the draft side; text needing escaping), plus checks
//! of colours, escaping and the HTML page being self-contained.

use flowrun_core::assert::AssertionResult;
use flowrun_core::cost::Cost;
use flowrun_core::eval::{EvalReport, Pairwise, Preference, Verdict};
use flowrun_core::event::RunStatus;
use flowrun_core::provider::Usage;
use flowrun_core::testing::result::CaseResult;
use serde_json::json;

/// Text with everything the reporters must escape: HTML specials, quotes, a table pipe, a
/// newline and a control character (BEL).
const NASTY: &str = "<&>\"'| done\nsecond line\u{7}";

const TRIAGE: &str = "tests/triage.test.yaml";
const SUMMARY: &str = "tests/sum, mary.test.yaml";

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
        output: Some(json!("Sorry! A refund is issued.")),
        output_text: "Sorry! A refund is issued.".into(),
        error: None,
        assertions: vec![
            assertion("contains", true, "found \"refund\""),
            assertion("regex", true, "matched `sorry|apolog`"),
        ],
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

/// Both sides of every case: (draft, baseline).
fn sides() -> (Vec<CaseResult>, Vec<CaseResult>) {
    // Better: the baseline forgot to apologise.
    let better_draft = case(TRIAGE, 0, "refund request");
    let mut better_base = case(TRIAGE, 0, "refund request");
    better_base.output_text = "A refund is issued.".into();
    better_base.output = Some(json!("A refund is issued."));
    better_base.assertions[1] = assertion("regex", false, "no match for `sorry|apolog`");
    better_base.score = 0.5;
    better_base.pass = false;
    better_base.latency_ms = 100;

    // Worse: the draft's output and reason need escaping, and its cost is unknown.
    let name = "escapes <&>\"'|\nin the name";
    let mut worse_draft = case(TRIAGE, 1, name);
    worse_draft.output_text = NASTY.into();
    worse_draft.output = Some(json!(NASTY));
    worse_draft.assertions[1] =
        assertion("regex", false, &format!("no match for `a|b` in {NASTY}"));
    worse_draft.score = 0.5;
    worse_draft.pass = false;
    worse_draft.latency_ms = 950;
    worse_draft.usage.input_tokens = 300;
    worse_draft.usage.output_tokens = 80;
    worse_draft.cost = Cost::unknown("mystery-model");
    let worse_base = case(TRIAGE, 1, name);

    // Unchanged: the same on both sides.
    let same_draft = case(TRIAGE, 2, "greeting");
    let mut same_base = case(TRIAGE, 2, "greeting");
    same_base.latency_ms = 130;

    // The baseline's run failed; the draft's passes.
    let mut errored_base = case(SUMMARY, 0, "timeout");
    errored_base.status = RunStatus::Failed;
    errored_base.error = Some("provider error: timed out after 30s".into());
    errored_base.output = None;
    errored_base.output_text = String::new();
    errored_base.assertions = vec![];
    errored_base.score = 0.0;
    errored_base.pass = false;
    errored_base.latency_ms = 30_000;
    errored_base.usage = Usage::default();
    errored_base.cost = Cost::known(0.0);
    let mut errored_draft = case(SUMMARY, 0, "timeout");
    errored_draft.cached = true;
    errored_draft.latency_ms = 2;

    // Same score, but a required assertion now fails: a tie whose pass status flipped.
    let mut flipped_base = case(SUMMARY, 1, "tone");
    flipped_base.assertions = vec![
        assertion("contains", true, "found \"refund\""),
        assertion("llm_judge", false, "tone is curt (0.4 < 0.5)"),
    ];
    flipped_base.score = 0.5;
    let mut flipped_draft = flipped_base.clone();
    flipped_draft.assertions = vec![
        AssertionResult {
            required: true,
            ..assertion("contains", false, "missing \"refund\"")
        },
        assertion("llm_judge", true, "tone is warm (0.9)"),
    ];
    flipped_draft.pass = false;

    (
        vec![
            errored_draft,
            flipped_draft,
            better_draft,
            worse_draft,
            same_draft,
        ],
        vec![
            better_base,
            worse_base,
            same_base,
            errored_base,
            flipped_base,
        ],
    )
}

fn judge(draft: &CaseResult, _baseline: &CaseResult) -> Option<Pairwise> {
    match (draft.file.as_str(), draft.index) {
        (TRIAGE, 0) => Some(Pairwise {
            preference: Preference::Draft,
            consistent: true,
            reason: "The draft apologises & <b>names</b> the refund.".into(),
        }),
        (TRIAGE, 1) => Some(Pairwise {
            preference: Preference::Tie,
            consistent: false,
            reason: "the judge changed its mind with the order: A | B\nthen \"B\"".into(),
        }),
        (SUMMARY, 1) => Some(Pairwise {
            preference: Preference::Tie,
            consistent: true,
            reason: "both are fine".into(),
        }),
        _ => None,
    }
}

fn fixture() -> EvalReport {
    let (draft, baseline) = sides();
    let mut report = EvalReport::new(
        1_714_564_800_000,
        31_234,
        "git:feature/a|b (3f2a1b9c)".into(),
        draft,
        baseline,
        &judge,
    );
    report.id = Some("eval-0001".into());
    report
}

/// `wins` cases the draft wins and `losses` it loses, to reach a significant verdict.
fn lopsided(wins: usize, losses: usize) -> EvalReport {
    let mut draft = Vec::new();
    let mut baseline = Vec::new();
    for i in 0..wins + losses {
        let mut d = case(TRIAGE, i, &format!("case {i}"));
        let mut b = d.clone();
        let loser = if i < wins { &mut b } else { &mut d };
        loser.score = 0.0;
        loser.pass = false;
        draft.push(d);
        baseline.push(b);
    }
    EvalReport::new(0, 10, "HEAD".into(), draft, baseline, &|_, _| None)
}

fn visible_escapes(text: &str) -> String {
    text.replace('\u{1b}', "␛")
}

#[test]
fn report_eval_fixture_is_what_the_snapshots_assume() {
    let report = fixture();
    assert_eq!(report.cases.len(), 5);
    assert_eq!(
        (report.draft_wins, report.baseline_wins, report.ties),
        (2, 1, 2)
    );
    assert_eq!(report.verdict, Verdict::NoSignificantChange);
    assert_eq!(report.deltas.cost_usd, None);
    assert_eq!(lopsided(6, 0).verdict, Verdict::Better);
    assert_eq!(lopsided(0, 6).verdict, Verdict::Worse);
}

#[test]
fn report_eval_json_snapshot() {
    let text = super::eval_json(&fixture());
    let back: EvalReport = serde_json::from_str(&text).expect("json parses back");
    assert_eq!(back, fixture());
    insta::assert_snapshot!("eval_json", text);
}

#[test]
fn report_eval_terminal_snapshots() {
    let report = fixture();
    let plain = super::eval_terminal(&report, false);
    assert!(!plain.contains('\u{1b}'), "no ANSI codes without colour");
    assert!(!plain.contains('\u{7}'));
    insta::assert_snapshot!("eval_terminal_plain", plain);
    insta::assert_snapshot!(
        "eval_terminal_color",
        visible_escapes(&super::eval_terminal(&report, true))
    );
}

#[test]
fn report_eval_terminal_colours_the_verdict() {
    let better = super::eval_terminal(&lopsided(6, 0), true);
    assert!(better.starts_with("\x1b[1m\x1b[32mflowrun eval: better\x1b[0m\n"));
    let worse = super::eval_terminal(&lopsided(0, 6), true);
    assert!(worse.starts_with("\x1b[1m\x1b[31mflowrun eval: worse\x1b[0m\n"));
    let plain = super::eval_terminal(&lopsided(6, 0), false);
    assert!(plain.starts_with("flowrun eval: better\n"));
    assert!(plain.contains("sign test p = 0.0313"), "{plain}");
}

#[test]
fn report_eval_markdown_snapshot() {
    insta::assert_snapshot!("eval_markdown", super::eval_markdown(&fixture()));
}

#[test]
fn report_eval_html_snapshot() {
    insta::assert_snapshot!("eval_html", super::eval_html(&fixture()));
}

#[test]
fn report_eval_markdown_tables_hold_their_shape() {
    let markdown = super::eval_markdown(&fixture());
    let mut rows = 0;
    for row in markdown.lines().filter(|l| l.starts_with('|')) {
        let pipes = row
            .match_indices('|')
            .filter(|(i, _)| !row[..*i].ends_with('\\'))
            .count();
        // The summary table has four columns, the case tables eight.
        assert!(pipes == 5 || pipes == 9, "{pipes} pipes: {row}");
        rows += 1;
    }
    // Summary: header, rule, six metrics; cases: two headers, two rules, five cases.
    assert_eq!(rows, 8 + 9);
    assert!(!markdown.contains('\u{7}') && !markdown.contains("<&>") && !markdown.contains("<b>"));
}

#[test]
fn report_eval_html_is_self_contained_and_escaped() {
    let html = super::eval_html(&fixture());
    for needle in [
        "http://", "https://", "<script", "<link", "src=", "url(", "@import",
    ] {
        assert!(
            !html.contains(needle),
            "HTML references an external resource: {needle}"
        );
    }
    assert!(!html.contains('\u{7}') && !html.contains("<&>") && !html.contains("<b>"));
    assert!(html.contains("&lt;&amp;&gt;&quot;&#39;| done\nsecond line"));
    assert_eq!(html.matches("<tr class=\"changed ").count(), 4);
}

#[test]
fn report_eval_empty_renders() {
    let report = EvalReport::new(0, 0, "HEAD".into(), vec![], vec![], &|_, _| None);
    for text in [
        super::eval_json(&report),
        super::eval_markdown(&report),
        super::eval_html(&report),
        super::eval_terminal(&report, true),
    ] {
        assert!(!text.is_empty());
    }
    assert!(super::eval_terminal(&report, false).ends_with("no cases ran\n"));
    assert!(super::eval_markdown(&report).ends_with("No cases ran.\n"));
}
