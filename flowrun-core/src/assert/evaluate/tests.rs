//! Tests of assertion evaluation: a table of assertions as written in test files against
//! outputs, fake judges and command runners, and case scores.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Hooks, Observed, case_score, evaluate};
use crate::assert::{AssertionResult, AssertionSpec, CommandOutput, CommandRunner, Grade, Judge};
use crate::cost::Cost;
use crate::yaml::{Document, Path};

/// Reads one assertion as a test file would.
fn spec(yaml: &str) -> AssertionSpec {
    let doc = Document::parse("t.test.yaml", yaml).unwrap();
    let value = doc.value.clone();
    crate::assert::parse(&doc, &Path::root(), &value)
        .unwrap_or_else(|d| panic!("{yaml}: {}", d.message))
}

/// What a fake run produced.
#[derive(Debug, Clone)]
struct Run {
    output: Option<Value>,
    latency_ms: u64,
    cost: Cost,
    error: Option<String>,
}

fn text(s: &str) -> Run {
    Run {
        output: Some(Value::String(s.into())),
        latency_ms: 100,
        cost: Cost::known(0.001),
        error: None,
    }
}

fn json_out(v: Value) -> Run {
    Run {
        output: Some(v),
        ..text("")
    }
}

fn failed(error: &str) -> Run {
    Run {
        output: None,
        error: Some(error.into()),
        ..text("")
    }
}

impl Run {
    fn latency(self, latency_ms: u64) -> Self {
        Run { latency_ms, ..self }
    }

    fn cost(self, cost: Cost) -> Self {
        Run { cost, ..self }
    }
}

/// Grades by its rubric: `score=N …` gives N, `fail` an error; the reason echoes what it got.
struct FakeJudge;

#[async_trait]
impl Judge for FakeJudge {
    async fn grade(
        &self,
        rubric: &str,
        output: &str,
        input: &Value,
        model: Option<&str>,
    ) -> Result<Grade, String> {
        if rubric == "fail" {
            return Err("rate limited".into());
        }
        let score = rubric
            .strip_prefix("score=")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .ok_or("bad rubric")?;
        let reason = format!("rubric {rubric:?} model {model:?} output {output:?} input {input}");
        Ok(Grade { score, reason })
    }
}

/// Canned results by command.
struct FakeRunner;

#[async_trait]
impl CommandRunner for FakeRunner {
    async fn run(&self, command: &str, stdin: &str) -> Result<CommandOutput, String> {
        let out = |code: Option<i32>, stdout: &str, stderr: &str| {
            Ok(CommandOutput {
                exit_code: code,
                stdout: stdout.into(),
                stderr: stderr.into(),
            })
        };
        match command {
            "exit 0" => out(Some(0), "", ""),
            "exit 2" => out(Some(2), "ignored stdout", "\nbad thing\nmore detail"),
            "score" => out(Some(0), r#"{"score": 0.8, "reason": "close enough"}"#, ""),
            "score-high" => out(Some(1), r#" {"score": 7} "#, ""),
            "pass-false" => out(Some(0), r#"{"pass": false, "reason": "nope"}"#, ""),
            "pass-true" => out(Some(3), r#"{"pass": true}"#, ""),
            "garbage" => out(Some(1), "oops: not json\n{", ""),
            "array-ok" => out(Some(0), "[1, 2]", ""),
            "signal" => out(None, "", "killed"),
            "stdin" => out(
                Some(0),
                &json!({ "score": 1, "reason": format!("stdin was {stdin}") }).to_string(),
                "",
            ),
            c if c.starts_with("check ") => out(Some(0), &format!("ran {c}"), ""),
            _ => Err("no such program".into()),
        }
    }
}

const HOOKS: Hooks<'static> = Hooks {
    judge: Some(&FakeJudge),
    command: Some(&FakeRunner),
};

/// Evaluates one assertion written in YAML against `run`.
async fn eval_with(yaml: &str, run: &Run, hooks: Hooks<'_>) -> AssertionResult {
    let text = match &run.output {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let input = json!({ "country": "France" });
    let vars = json!({ "expected": "Paris", "bad": "(", "n": 3 });
    let observed = Observed {
        output: run.output.as_ref(),
        text: &text,
        latency_ms: run.latency_ms,
        cost: &run.cost,
        input: &input,
        vars: &vars,
        error: run.error.as_deref(),
        agent_turns: &[],
    };
    let mut results = evaluate(&[spec(yaml)], &observed, hooks).await;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

/// One row's mismatch, if any: whether it passed and what its reason says.
async fn check(yaml: &str, run: &Run, expect_pass: bool, reason_contains: &str) -> Option<String> {
    let r = eval_with(yaml, run, HOOKS).await;
    let consistent = (0.0..=1.0).contains(&r.score) && (!r.pass || r.score >= spec(yaml).threshold);
    if r.pass == expect_pass && r.reason.contains(reason_contains) && consistent {
        None
    } else {
        Some(format!(
            "{yaml} on {:?}: expected pass={expect_pass} with reason containing {reason_contains:?}, got pass={} score={} reason {:?}",
            run.output, r.pass, r.score, r.reason
        ))
    }
}

#[tokio::test]
async fn checks_table() {
    let table: Vec<(&str, Run, bool, &str)> = vec![
        // equals
        (
            "{ equals: Paris }",
            text("  Paris\n"),
            true,
            "output equals \"Paris\"",
        ),
        (
            "{ equals: Paris }",
            text("London"),
            false,
            "expected \"Paris\", got \"London\"",
        ),
        (
            "{ not_equals: Paris }",
            text("Paris "),
            false,
            "expected anything but \"Paris\", got exactly that",
        ),
        (
            "{ not_equals: Paris }",
            text("London"),
            true,
            "output differs from \"Paris\"",
        ),
        ("{ equals: 42 }", text("42.0"), true, "output equals 42"),
        (
            "{ equals: { a: 1 } }",
            json_out(json!({ "a": 1 })),
            true,
            "output equals {\"a\":1}",
        ),
        (
            "{ equals: { a: 1 } }",
            json_out(json!({ "a": 2 })),
            false,
            "expected {\"a\":1}, got {\"a\":2}",
        ),
        (
            "{ equals: [1, 2] }",
            text("not json"),
            false,
            "expected [1,2]; the output is not json (expected ident",
        ),
        (
            "{ not_equals: [1, 2] }",
            text("nope"),
            true,
            "so it differs from [1,2]",
        ),
        (
            "{ not_equals: [1, 2] }",
            text("[1, 2]"),
            false,
            "expected anything but [1,2]",
        ),
        (
            "{ equals: '{{ vars.expected }}' }",
            text("Paris"),
            true,
            "output equals \"Paris\"",
        ),
        (
            "{ equals: 'Capital of {{ input.country }}' }",
            text("Capital of France"),
            true,
            "equals \"Capital of France\"",
        ),
        (
            "{ equals: '{{ vars.missing }}' }",
            text("Paris"),
            false,
            "could not render the template \"{{ vars.missing }}\": undefined variable",
        ),
        (
            "{ equals: '{{ vars.missing }}', threshold: 0 }",
            text("Paris"),
            false,
            "undefined variable",
        ),
        (
            "{ equals: { city: '{{ vars.expected }}' } }",
            json_out(json!({ "city": "Paris" })),
            true,
            "output equals {\"city\":\"Paris\"}",
        ),
        // contains family
        (
            "{ contains: refund }",
            text("We will refund you"),
            true,
            "found \"refund\"",
        ),
        (
            "{ contains: refund }",
            text("No."),
            false,
            "expected \"refund\"; got \"No.\"",
        ),
        (
            "{ contains: [refund, sorry] }",
            text("so sorry"),
            true,
            "found \"sorry\"",
        ),
        (
            "{ contains: [refund, sorry] }",
            text("hello"),
            false,
            "expected one of \"refund\", \"sorry\"; got \"hello\"",
        ),
        (
            "{ contains: [refund, sorry], all: true }",
            text("sorry, refund"),
            true,
            "found all of \"refund\", \"sorry\"",
        ),
        (
            "{ contains: [refund, sorry], all: true }",
            text("sorry"),
            false,
            "missing \"refund\" in \"sorry\"",
        ),
        (
            "{ contains: Refund }",
            text("a refund"),
            false,
            "expected \"Refund\"",
        ),
        (
            "{ icontains: ÉCOLE }",
            text("à l'école"),
            true,
            "found \"ÉCOLE\" (ignoring case)",
        ),
        (
            "{ icontains: [x, y], all: true }",
            text("X alone"),
            false,
            "missing \"y\" (ignoring case)",
        ),
        (
            "{ contains: 42 }",
            text("the answer is 42"),
            true,
            "found \"42\"",
        ),
        (
            "{ contains: '{{ vars.expected }}' }",
            text("It is Paris."),
            true,
            "found \"Paris\"",
        ),
        (
            "{ contains: '{{ nope }}' }",
            text("It is Paris."),
            false,
            "undefined variable",
        ),
        (
            "{ not_contains: sorry }",
            text("fine"),
            true,
            "\"sorry\" is absent",
        ),
        (
            "{ not_contains: sorry }",
            text("I'm sorry"),
            false,
            "found \"sorry\", which should be absent, in \"I'm sorry\"",
        ),
        (
            "{ not_contains: [As an AI, sorry] }",
            text("Sure"),
            true,
            "none of \"As an AI\", \"sorry\" is present",
        ),
        (
            "{ not_icontains: AS AN AI }",
            text("as an ai model"),
            false,
            "found \"AS AN AI\" (ignoring case), which should be absent",
        ),
        (
            "{ not_icontains: AS AN AI }",
            text("sure"),
            true,
            "\"AS AN AI\" is absent (ignoring case)",
        ),
        (
            "{ not_contains: [a1, b2], all: true }",
            text("a1 only"),
            true,
            "not all present: missing \"b2\"",
        ),
        (
            "{ not_contains: [a1, b2], all: true }",
            text("a1 and b2"),
            false,
            "found all of \"a1\", \"b2\", which should not all appear",
        ),
        // regex
        (
            r"{ regex: '^\d{3}-\d{4}$' }",
            text("555-1234"),
            true,
            "matched \"555-1234\"",
        ),
        (
            r"{ regex: '^\d{3}-\d{4}$' }",
            text("call me"),
            false,
            "expected a match for /^\\d{3}-\\d{4}$/; got \"call me\"",
        ),
        (
            "{ not_regex: '(?i)as an ai' }",
            text("As an AI, I cannot"),
            false,
            "matched \"As an AI\", which it should not",
        ),
        (
            "{ not_regex: '(?i)as an ai' }",
            text("Sure"),
            true,
            "no match for /(?i)as an ai/",
        ),
        (
            "{ regex: '^{{ vars.expected }}$' }",
            text("Paris"),
            true,
            "/^Paris$/ matched \"Paris\"",
        ),
        (
            "{ regex: 'x{{ vars.bad }}' }",
            text("Paris"),
            false,
            "invalid regular expression /x(/: error: unclosed group",
        ),
        // starts_with
        (
            "{ starts_with: Dear }",
            text("  Dear John"),
            true,
            "output starts with \"Dear\"",
        ),
        (
            "{ starts_with: Dear }",
            text("Hi John"),
            false,
            "expected the output to start with \"Dear\"; got \"Hi John\"",
        ),
        (
            "{ not_starts_with: Sure }",
            text("Sure thing"),
            false,
            "expected the output not to start with \"Sure\"",
        ),
        (
            "{ not_starts_with: Sure }",
            text("Okay"),
            true,
            "output does not start with \"Sure\"",
        ),
        (
            "{ starts_with: '{{ vars.expected }},' }",
            text("Paris, France"),
            true,
            "starts with \"Paris,\"",
        ),
        // length
        (
            "{ length: { min: 3, max: 5 } }",
            text("héllo"),
            true,
            "length 5 is within 3..5",
        ),
        (
            "{ length: { max: 3 } }",
            text("four"),
            false,
            "expected at most 3 characters; got 4",
        ),
        (
            "{ length: { min: 10 } }",
            text("short"),
            false,
            "expected at least 10 characters; got 5",
        ),
        (
            "{ length: { min: 1 } }",
            text("x"),
            true,
            "length 1 is at least 1",
        ),
        // is_json
        (
            "{ is_json: true }",
            text(r#"{"a": 1}"#),
            true,
            "output is valid json",
        ),
        (
            "{ is_json: true }",
            text("{a: 1}"),
            false,
            "expected json; the output is not json (key must be a string",
        ),
        (
            "{ is_json: true }",
            json_out(json!({ "a": [1] })),
            true,
            "output is valid json",
        ),
        (
            "{ is_json: false }",
            text("hello"),
            true,
            "output is not json",
        ),
        (
            "{ not_is_json: true }",
            text("[1]"),
            false,
            "expected output that is not json; got valid json [1]",
        ),
        // json_schema
        (
            "{ json_schema: { type: object, required: [name], properties: { age: { type: integer } } } }",
            json_out(json!({ "name": "x", "age": 3 })),
            true,
            "output matches the schema",
        ),
        (
            "{ json_schema: { type: object, required: [name], properties: { age: { type: integer } } } }",
            text(r#"{"age": "old"}"#),
            false,
            "at `/age`: \"old\" is not of type \"integer\"",
        ),
        (
            "{ json_schema: { type: object, required: [name], properties: { age: { type: integer } } } }",
            text(r#"{"age": 1}"#),
            false,
            "output does not match the schema: at the root: \"name\" is a required property",
        ),
        (
            "{ json_schema: { required: [a, b, c, d, e] } }",
            json_out(json!({})),
            false,
            "(and 2 more)",
        ),
        (
            "{ json_schema: { type: object } }",
            text("nope"),
            false,
            "expected json matching the schema; the output is not json",
        ),
        // json_path
        (
            "{ json_path: $.category, equals: billing }",
            json_out(json!({ "category": "billing" })),
            true,
            "`$.category` is \"billing\"",
        ),
        (
            "{ json_path: $.category, equals: billing }",
            text(r#"{"category": "tech"}"#),
            false,
            "expected `$.category` to equal \"billing\"; found \"tech\"",
        ),
        (
            "{ json_path: $.n, equals: '42' }",
            json_out(json!({ "n": 42 })),
            true,
            "`$.n` is \"42\"",
        ),
        (
            "{ json_path: $.n, equals: 42 }",
            json_out(json!({ "n": 42.0 })),
            true,
            "`$.n` is 42",
        ),
        (
            "{ json_path: $.city, equals: '{{ vars.expected }}' }",
            json_out(json!({ "city": "Paris" })),
            true,
            "is \"Paris\"",
        ),
        (
            "{ json_path: $.city, equals: '{{ vars.nope }}' }",
            json_out(json!({ "city": "Paris" })),
            false,
            "undefined variable",
        ),
        (
            "{ json_path: $.city, equals: Paris }",
            json_out(json!({})),
            false,
            "`$.city` selected nothing; expected \"Paris\"",
        ),
        (
            "{ json_path: $.tags, contains: urgent }",
            json_out(json!({ "tags": ["urgent", "x"] })),
            true,
            "`$.tags` contains \"urgent\"",
        ),
        (
            "{ json_path: $.tags, contains: urgent }",
            json_out(json!({ "tags": ["a", "b"] })),
            false,
            "expected `$.tags` to contain \"urgent\"; found [\"a\",\"b\"]",
        ),
        (
            "{ json_path: $.summary, contains: refund }",
            json_out(json!({ "summary": "a refund was issued" })),
            true,
            "contains \"refund\"",
        ),
        (
            "{ json_path: $.meta, contains: id }",
            json_out(json!({ "meta": { "id": 1 } })),
            true,
            "`$.meta` contains \"id\"",
        ),
        (
            "{ json_path: $.ids, contains: 3 }",
            json_out(json!({ "ids": [1, 2, 3] })),
            true,
            "`$.ids` contains 3",
        ),
        (
            "{ json_path: '$.items[*].name', contains: pen }",
            json_out(json!({ "items": [{ "name": "cup" }, { "name": "pen" }] })),
            true,
            "contains \"pen\"",
        ),
        (
            "{ json_path: $.tags, contains: x }",
            json_out(json!({})),
            false,
            "`$.tags` selected nothing; expected it to contain \"x\"",
        ),
        (
            "{ json_path: $.a }",
            json_out(json!({ "a": null })),
            true,
            "`$.a` selected null",
        ),
        (
            "{ json_path: $.a }",
            json_out(json!({ "b": 1 })),
            false,
            "expected `$.a` to select something; it selected nothing in {\"b\":1}",
        ),
        (
            "{ json_path: $.error, exists: false }",
            json_out(json!({})),
            true,
            "`$.error` selected nothing",
        ),
        (
            "{ json_path: $.error, exists: false }",
            json_out(json!({ "error": "x" })),
            false,
            "expected `$.error` to select nothing; it selected \"x\"",
        ),
        (
            "{ json_path: $.a }",
            text("hi"),
            false,
            "expected json for `$.a`; the output is not json",
        ),
        // latency and cost
        (
            "{ latency_max: 2s }",
            text("x").latency(1500),
            true,
            "latency 1500 ms is within 2000 ms",
        ),
        (
            "{ latency_max: 2s }",
            text("x").latency(2500),
            false,
            "latency 2500 ms exceeds the maximum 2000 ms",
        ),
        (
            "{ cost_max: 0.01 }",
            text("x").cost(Cost::known(0.002)),
            true,
            "cost $0.002000 is within $0.0100",
        ),
        (
            "{ cost_max: 0.01 }",
            text("x").cost(Cost::known(0.05)),
            false,
            "cost $0.0500 exceeds the maximum $0.0100",
        ),
        (
            "{ cost_max: 0.01 }",
            text("x").cost(Cost::unknown("mystery-model")),
            false,
            "the cost is unknown: no price for mystery-model",
        ),
        (
            "{ cost_max: 1, threshold: 0 }",
            text("x").cost(Cost::unknown("m")),
            false,
            "no price for m",
        ),
        // failed runs: nothing passes, not even negations
        (
            "{ contains: x }",
            failed("timeout after 30s"),
            false,
            "the run failed: timeout after 30s",
        ),
        (
            "{ not_contains: x }",
            failed("timeout after 30s"),
            false,
            "the run failed: timeout after 30s",
        ),
        (
            "{ not_equals: x }",
            failed("boom"),
            false,
            "the run failed: boom",
        ),
        (
            "{ is_json: false }",
            failed("boom"),
            false,
            "the run failed: boom",
        ),
        (
            "{ not_regex: x, threshold: 0 }",
            failed("boom"),
            false,
            "the run failed: boom",
        ),
        (
            "{ latency_max: 1h }",
            failed("boom"),
            false,
            "the run failed: boom",
        ),
        (
            "{ llm_judge: score=1 }",
            failed("boom"),
            false,
            "the run failed: boom",
        ),
        (
            "{ contains: x }",
            Run {
                error: None,
                ..failed("")
            },
            false,
            "the run failed: no output",
        ),
        // llm_judge with a fake judge
        (
            "{ llm_judge: 'score=0.9 is polite' }",
            text("hi"),
            true,
            "rubric \"score=0.9 is polite\" model None output \"hi\"",
        ),
        (
            "{ llm_judge: 'score=0.9 about {{ input.country }}', model: judge-x }",
            text("hi"),
            true,
            "about France\" model Some(\"judge-x\")",
        ),
        (
            "{ llm_judge: 'score=0.9', model: judge-x }",
            text("hi"),
            true,
            "input {\"country\":\"France\"}",
        ),
        (
            "{ llm_judge: 'score=0.4' }",
            text("hi"),
            false,
            "rubric \"score=0.4\"",
        ),
        (
            "{ llm_judge: 'score=0.4', threshold: 0.3 }",
            text("hi"),
            true,
            "rubric",
        ),
        (
            "{ llm_judge: fail }",
            text("hi"),
            false,
            "judge failed: rate limited",
        ),
        (
            "{ llm_judge: fail, threshold: 0 }",
            text("hi"),
            false,
            "judge failed: rate limited",
        ),
        (
            "{ llm_judge: score=NaN }",
            text("hi"),
            false,
            "(the judge's score was not a number)",
        ),
        (
            "{ llm_judge: '{{ vars.nope }}' }",
            text("hi"),
            false,
            "undefined variable",
        ),
        // command with a fake runner
        (
            "{ command: exit 0 }",
            text("hi"),
            true,
            "`exit 0` exited with code 0",
        ),
        (
            "{ command: exit 2 }",
            text("hi"),
            false,
            "`exit 2` exited with code 2: bad thing",
        ),
        ("{ command: score }", text("hi"), true, "close enough"),
        (
            "{ command: score, threshold: 0.9 }",
            text("hi"),
            false,
            "close enough",
        ),
        (
            "{ command: score-high }",
            text("hi"),
            true,
            "`score-high` scored 7",
        ),
        ("{ command: pass-false }", text("hi"), false, "nope"),
        (
            "{ command: pass-true }",
            text("hi"),
            true,
            "`pass-true` reported a pass",
        ),
        (
            "{ command: garbage }",
            text("hi"),
            false,
            "`garbage` exited with code 1: oops: not json",
        ),
        (
            "{ command: array-ok }",
            text("hi"),
            true,
            "`array-ok` exited with code 0: [1, 2]",
        ),
        (
            "{ command: signal }",
            text("hi"),
            false,
            "`signal` was killed by a signal: killed",
        ),
        (
            "{ command: stdin }",
            text("the output"),
            true,
            "stdin was the output",
        ),
        (
            "{ command: 'check {{ vars.expected }}' }",
            text("hi"),
            true,
            "exited with code 0: ran check Paris",
        ),
        (
            "{ command: missing }",
            text("hi"),
            false,
            "command `missing` could not run: no such program",
        ),
        (
            "{ command: missing, threshold: 0 }",
            text("hi"),
            false,
            "could not run",
        ),
    ];
    let mut mismatches = Vec::new();
    for (yaml, run, pass, reason) in &table {
        if let Some(m) = check(yaml, run, *pass, reason).await {
            mismatches.push(m);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} rows failed:\n{}",
        mismatches.len(),
        table.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn scores_and_modifiers() {
    let r = eval_with(
        "{ contains: a, weight: 2.5, required: true }",
        &text("a"),
        HOOKS,
    )
    .await;
    assert_eq!(
        (r.name.as_str(), r.score, r.pass, r.weight, r.required),
        ("contains", 1.0, true, 2.5, true)
    );
    let r = eval_with("{ not_icontains: b }", &text("B"), HOOKS).await;
    assert_eq!(
        (r.name.as_str(), r.score, r.pass, r.weight, r.required),
        ("not_icontains", 0.0, false, 1.0, false)
    );
    let r = eval_with("{ llm_judge: score=0.9 }", &text("x"), HOOKS).await;
    assert_eq!((r.score, r.pass), (0.9, true));
    let r = eval_with("{ llm_judge: score=1.7 }", &text("x"), HOOKS).await;
    assert_eq!((r.score, r.pass), (1.0, true));
    let r = eval_with("{ llm_judge: score=-3 }", &text("x"), HOOKS).await;
    assert_eq!((r.score, r.pass), (0.0, false));
    let r = eval_with("{ llm_judge: score=NaN, threshold: 0 }", &text("x"), HOOKS).await;
    assert_eq!(r.score, 0.0);
    let r = eval_with("{ command: score }", &text("x"), HOOKS).await;
    assert_eq!(
        (r.score, r.pass, r.reason.as_str()),
        (0.8, true, "close enough")
    );
    let r = eval_with("{ command: score-high }", &text("x"), HOOKS).await;
    assert_eq!(r.score, 1.0);
    let r = eval_with("{ contains: x }", &failed("boom"), HOOKS).await;
    assert_eq!(
        (r.score, r.pass, r.reason.as_str()),
        (0.0, false, "the run failed: boom")
    );
}

#[tokio::test]
async fn missing_hooks_fail_clearly() {
    let none = Hooks::default();
    let r = eval_with("{ llm_judge: score=1, threshold: 0 }", &text("x"), none).await;
    assert_eq!(
        (r.pass, r.reason.as_str()),
        (
            false,
            "no judge configured: set `defaults.judge` in flowrun.yaml"
        )
    );
    let r = eval_with("{ command: exit 0, threshold: 0 }", &text("x"), none).await;
    assert_eq!(
        (r.pass, r.reason.as_str()),
        (false, "commands are not enabled here")
    );
}

#[tokio::test]
async fn long_outputs_are_quoted_short_on_one_line() {
    let long = format!("line one\n{}", "y".repeat(200));
    let r = eval_with("{ contains: zzz }", &text(&long), HOOKS).await;
    let expected = format!("expected \"zzz\"; got \"line one\\n{}…\"", "y".repeat(71));
    assert_eq!(r.reason, expected);
    assert!(!r.reason.contains('\n'));
}

/// Meets a second judge call at a barrier: only concurrent calls finish.
struct BarrierJudge {
    barrier: tokio::sync::Barrier,
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl Judge for BarrierJudge {
    async fn grade(
        &self,
        rubric: &str,
        _: &str,
        _: &Value,
        _: Option<&str>,
    ) -> Result<Grade, String> {
        self.barrier.wait().await;
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(rubric.to_string());
        }
        Ok(Grade {
            score: if rubric == "good" { 1.0 } else { 0.0 },
            reason: format!("graded {rubric}"),
        })
    }
}

#[tokio::test]
async fn calls_out_concurrently_and_keeps_order() {
    let judge = BarrierJudge {
        barrier: tokio::sync::Barrier::new(2),
        seen: Mutex::new(Vec::new()),
    };
    let hooks = Hooks {
        judge: Some(&judge),
        command: Some(&FakeRunner),
    };
    let specs: Vec<AssertionSpec> = [
        "{ llm_judge: bad }",
        "{ contains: o }",
        "{ llm_judge: good }",
        "{ command: exit 2 }",
    ]
    .iter()
    .map(|y| spec(y))
    .collect();
    let (input, vars, cost) = (json!({}), json!({}), Cost::known(0.0));
    let output = json!("hello");
    let observed = Observed {
        output: Some(&output),
        text: "hello",
        latency_ms: 1,
        cost: &cost,
        input: &input,
        vars: &vars,
        error: None,
        agent_turns: &[],
    };
    let results = tokio::time::timeout(Duration::from_secs(5), evaluate(&specs, &observed, hooks))
        .await
        .expect("both judge calls were in flight together");
    let summary: Vec<(&str, bool, &str)> = results
        .iter()
        .map(|r| (r.name.as_str(), r.pass, r.reason.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("llm_judge", false, "graded bad"),
            ("contains", true, "found \"o\""),
            ("llm_judge", true, "graded good"),
            ("command", false, "`exit 2` exited with code 2: bad thing"),
        ]
    );
    assert_eq!(judge.seen.lock().map(|s| s.len()).unwrap_or(0), 2);
}

#[test]
fn evaluate_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (input, cost) = (json!({}), Cost::default());
    let observed = Observed {
        output: None,
        text: "",
        latency_ms: 0,
        cost: &cost,
        input: &input,
        vars: &input,
        error: None,
        agent_turns: &[],
    };
    let fut = evaluate(&[], &observed, HOOKS);
    assert_send(&fut);
}

fn result(score: f64, pass: bool, weight: f64, required: bool) -> AssertionResult {
    AssertionResult {
        name: "x".into(),
        score,
        pass,
        reason: String::new(),
        weight,
        required,
    }
}

#[test]
fn case_score_weighs_and_gates() {
    assert_eq!(case_score(&[], None), (1.0, true));
    assert_eq!(case_score(&[], Some(0.9)), (1.0, true));

    let mixed = [
        result(1.0, true, 1.0, false),
        result(0.0, false, 3.0, false),
    ];
    assert_eq!(case_score(&mixed, None), (0.25, false));
    assert_eq!(case_score(&mixed, Some(0.2)), (0.25, true));
    assert_eq!(case_score(&mixed, Some(0.3)), (0.25, false));

    let partial = [result(0.5, true, 1.0, false), result(0.9, true, 1.0, false)];
    let (score, pass) = case_score(&partial, None);
    assert!((score - 0.7).abs() < 1e-12 && pass, "{score}");

    let zero_weights = [
        result(0.0, false, 0.0, false),
        result(1.0, true, 0.0, false),
    ];
    assert_eq!(case_score(&zero_weights, None), (1.0, false));
    assert_eq!(case_score(&zero_weights, Some(0.9)), (1.0, true));

    let weightless_ignored = [
        result(1.0, true, 1.0, false),
        result(0.0, false, 0.0, false),
    ];
    assert_eq!(case_score(&weightless_ignored, Some(1.0)), (1.0, true));

    let required_failed = [result(1.0, true, 9.0, false), result(0.0, false, 1.0, true)];
    assert_eq!(case_score(&required_failed, Some(0.5)), (0.9, false));
    let optional_failed = [
        result(1.0, true, 9.0, false),
        result(0.0, false, 1.0, false),
    ];
    assert_eq!(case_score(&optional_failed, Some(0.5)), (0.9, true));

    let odd = [
        result(f64::NAN, false, 1.0, false),
        result(1.0, true, 1.0, false),
    ];
    assert_eq!(case_score(&odd, Some(0.5)), (0.5, true));
}
