//! `flowrun run`, `runs` and `show` on the offline quickstart project: output, records,
//! exit codes, and two processes sharing the history.

use serde_json::{Value, json};

use crate::harness::{TestProject, run, with_filters};

const TICKET: &str = "ticket=I was charged twice";

fn quickstart() -> TestProject {
    TestProject::copy_of("examples/quickstart")
}

fn runs_json(project: &TestProject) -> Value {
    let out = run(project.flowrun().args(["runs", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).expect("runs --json is JSON")
}

#[test]
fn runs_the_triage_flow_offline() {
    let project = quickstart();
    let out = run(project.flowrun().args(["run", "triage", "--input", TICKET]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let output: Value = serde_json::from_str(&out.stdout).expect("flow output is JSON");
    assert_eq!(
        output,
        json!({
            "category": "billing",
            "urgency": "high",
            "reply": "Thanks for telling us. We are sorry about the trouble and are fixing it right now."
        })
    );
    with_filters(project.path(), || insta::assert_snapshot!(out.stderr));
}

#[test]
fn json_record_has_steps_usage_and_cost() {
    let project = quickstart();
    let out =
        run(project
            .flowrun()
            .args(["run", "flow/triage", "--json", "--quiet", "--input", TICKET]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr, "");
    let record: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["target"], "flow/triage");
    assert_eq!(record["cost_usd"], 0.0);
    let steps = record["steps"].as_array().expect("steps");
    assert_eq!(
        steps
            .iter()
            .map(|s| s["step_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["classify", "reply"]
    );
    assert_eq!(
        steps[0]["output"],
        json!({"category": "billing", "urgency": "high"})
    );
    let total: u64 = steps
        .iter()
        .map(|s| s["usage"]["input_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(record["usage"]["input_tokens"].as_u64(), Some(total));
}

#[test]
fn history_lists_and_shows_the_run() {
    let project = quickstart();
    let out = run(project
        .flowrun()
        .args(["run", "triage", "-q", "--input", TICKET]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let runs = runs_json(&project);
    let runs = runs.as_array().expect("list");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "succeeded");
    let id = runs[0]["id"].as_str().expect("id");

    let shown = run(project.flowrun().args(["show", &id[..13]]));
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    with_filters(project.path(), || insta::assert_snapshot!(shown.stdout));

    let detail: Value =
        serde_json::from_str(&run(project.flowrun().args(["show", id, "--json"])).stdout)
            .expect("JSON");
    assert_eq!(
        detail["steps"][1]["messages"][1]["content"],
        "Draft a reply to this billing ticket:\nI was charged twice"
    );
    assert_eq!(detail["calls"].as_array().map(Vec::len), Some(2));
    assert!(
        detail["calls"][1]["raw_response"].is_object(),
        "the raw response is shown: {detail}"
    );

    let listed = run(project.flowrun().arg("runs"));
    assert!(listed.stdout.contains(id), "{}", listed.stdout);
}

#[test]
fn prompt_runs_with_defaults_and_typed_inputs() {
    let project = quickstart();
    let out =
        run(project
            .flowrun()
            .args(["run", "summarize", "-q", "--input", "text=Rust is fast."]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "echo: Summarize in three bullet points:\nRust is fast.\n"
    );
}

#[test]
fn input_file_is_read_and_flags_win() {
    let project = quickstart();
    project.write(
        "in.json",
        r#"{"text": "from file", "style": "one sentence"}"#,
    );
    let out = run(project.flowrun().args([
        "run",
        "summarize",
        "-q",
        "--input-file",
        "in.json",
        "--input",
        "text=from flag",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "echo: Summarize in one sentence:\nfrom flag\n");
}

#[test]
fn bad_input_is_a_usage_error_and_records_nothing() {
    let project = quickstart();
    let out = run(project.flowrun().args([
        "run",
        "summarize",
        "--input",
        "txt=hello",
        "--input",
        "style=haiku",
    ]));
    assert_eq!(out.code, 2);
    with_filters(project.path(), || insta::assert_snapshot!(out.stderr));
    assert_eq!(runs_json(&project), json!([]));
}

#[test]
fn unknown_target_suggests_a_name() {
    let project = quickstart();
    let out = run(project.flowrun().args(["run", "triag"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("no prompt or flow named `triag`; did you mean `triage`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn malformed_input_file_names_line_and_column() {
    let project = quickstart();
    project.write("in.json", "{\n  \"text\": oops\n}");
    let out = run(project
        .flowrun()
        .args(["run", "summarize", "--input-file", "in.json"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("in.json:2:11: invalid JSON"),
        "{}",
        out.stderr
    );
}

#[test]
fn two_processes_share_the_history() {
    let project = quickstart();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("flowrun"))
                .current_dir(project.path())
                .args(["run", "triage", "-q", "--input", TICKET])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let runs = runs_json(&project);
    let runs = runs.as_array().expect("list");
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));
}

#[test]
fn show_unknown_run_is_explained() {
    let project = quickstart();
    let out = run(project.flowrun().args(["show", "0123abcd"]));
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "error: no run with id `0123abcd`; `flowrun runs` lists them\n"
    );
}

#[test]
fn version_is_printed() {
    let out = run(TestProject::empty().flowrun().arg("--version"));
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        format!("flowrun {}\n", env!("CARGO_PKG_VERSION"))
    );
}
