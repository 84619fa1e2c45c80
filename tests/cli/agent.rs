//! Agent steps through the binary: the offline example agent (`examples/agent`) runs, is
//! tested with transcript assertions, and is shown turn by turn by `flowrun show`.

use serde_json::Value;

use crate::harness::{TestProject, run, with_filters};

const QUESTION: &str = "question=Hi! Where is my order A-17?";

fn example() -> TestProject {
    TestProject::copy_of("examples/agent")
}

/// The id of the latest run of `target` (tool flows are runs of their own).
fn run_id_of(project: &TestProject, target: &str) -> String {
    let out = run(project.flowrun().args(["runs", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let runs: Value = serde_json::from_str(&out.stdout).expect("JSON");
    runs.as_array()
        .expect("list")
        .iter()
        .find(|r| r["target"] == target)
        .and_then(|r| r["id"].as_str())
        .expect("a run of the target")
        .to_string()
}

#[test]
fn the_example_agent_runs_offline_and_is_shown_turn_by_turn() {
    let project = example();
    let out = run(project
        .flowrun()
        .args(["run", "support", "--input", QUESTION]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "Your order A-17 (two desk lamps) shipped on Monday and arrives on Thursday."
    );
    assert!(
        out.stderr.contains("turn 1 · lookup_order"),
        "{}",
        out.stderr
    );

    let id = run_id_of(&project, "support");
    let shown = run(project.flowrun().args(["show", &id]));
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    with_filters(project.path(), || insta::assert_snapshot!(shown.stdout));

    let detail: Value =
        serde_json::from_str(&run(project.flowrun().args(["show", &id, "--json"])).stdout)
            .expect("JSON");
    assert_eq!(detail["steps"][0]["agent_stop"], "answered");
    let turns = detail["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 2);
    let result = &turns[0]["tool_results"][0];
    assert_eq!(result["name"], "lookup_order");
    assert_eq!(
        result["output"],
        "Order A-17: two desk lamps, shipped on Monday, arriving Thursday."
    );
    // The tool's own run is recorded and can be shown too.
    let tool_run = result["run_id"].as_str().expect("tool run id");
    let tool = run(project.flowrun().args(["show", tool_run]));
    assert_eq!(tool.code, 0, "{}", tool.stderr);
    assert!(tool.stdout.contains("flow/order_lookup"), "{}", tool.stdout);
}

#[test]
fn transcript_assertions_pass_and_fail() {
    let project = example();
    let out = run(project.flowrun().arg("test"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    project.write(
        "tests/support.test.yaml",
        r#"target: flow/support
cases:
  - name: strict
    input: { question: "Where is my order A-17?" }
    assert:
      - tool_called: lookup_order
        args: { order_id: B-2 }
      - tool_called: service_status
      - turns: { max: 1 }
"#,
    );
    let out = run(project.flowrun().args(["test", "--format", "json"]));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("JSON report");
    let text = report.to_string();
    for reason in [
        "`lookup_order` was called 1 time(s), never with {\\\"order_id\\\":\\\"B-2\\\"}",
        "`service_status` was not called (called: lookup_order)",
        "2 turns, more than the maximum 1",
    ] {
        assert!(text.contains(reason), "missing {reason:?} in {text}");
    }
}
