//! `flowrun schema`: the committed schemas are current, and the example files validate
//! against them (what an editor will check).

use std::path::Path;

use crate::harness::{TestProject, repo_root, run};

fn generated() -> TestProject {
    let dir = TestProject::empty();
    let out = run(dir.flowrun().args(["schema", "--out", "."]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    dir
}

#[test]
fn committed_schemas_are_current() {
    let fresh = generated();
    for dir in [
        "schemas",
        "examples/quickstart/schemas",
        "examples/ci/schemas",
        "examples/agent/schemas",
    ] {
        for name in [
            "config.schema.json",
            "prompt.schema.json",
            "flow.schema.json",
            "test.schema.json",
        ] {
            let committed =
                std::fs::read_to_string(repo_root().join(dir).join(name)).unwrap_or_default();
            let now = std::fs::read_to_string(fresh.path().join(name)).expect("generated");
            assert!(
                committed == now,
                "{dir}/{name} is stale: run `cargo run -- schema --out {dir}`"
            );
        }
    }
}

#[test]
fn committed_openapi_document_is_current() {
    let out = run(TestProject::empty().flowrun().args(["serve", "openapi"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let committed =
        std::fs::read_to_string(repo_root().join("schemas/openapi.json")).unwrap_or_default();
    assert!(
        committed == out.stdout,
        "schemas/openapi.json is stale: run `cargo run -- serve openapi > schemas/openapi.json`"
    );
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
}

fn validate(schema_file: &Path, yaml_file: &Path) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_file).expect("schema")).expect("json");
    let text = std::fs::read_to_string(yaml_file).expect("yaml");
    let doc =
        flowrun_core::yaml::Document::parse(yaml_file.display().to_string(), text).expect("parses");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator
        .iter_errors(&doc.value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{}: {errors:?}", yaml_file.display());
}

#[test]
fn example_files_match_their_schemas() {
    let root = repo_root().join("examples/quickstart");
    validate(
        &root.join("schemas/config.schema.json"),
        &root.join("flowrun.yaml"),
    );
    for name in ["classify", "reply", "summarize"] {
        validate(
            &root.join("schemas/prompt.schema.json"),
            &root.join(format!("prompts/{name}.yaml")),
        );
    }
    validate(
        &root.join("schemas/flow.schema.json"),
        &root.join("flows/triage.yaml"),
    );
    for name in ["summarize", "triage"] {
        validate(
            &root.join("schemas/test.schema.json"),
            &root.join(format!("tests/{name}.test.yaml")),
        );
    }

    let ci = repo_root().join("examples/ci");
    validate(
        &ci.join("schemas/config.schema.json"),
        &ci.join("flowrun.yaml"),
    );
    for name in ["classify", "reply"] {
        validate(
            &ci.join("schemas/prompt.schema.json"),
            &ci.join(format!("prompts/{name}.yaml")),
        );
    }
    validate(
        &ci.join("schemas/flow.schema.json"),
        &ci.join("flows/triage.yaml"),
    );
    for name in ["classify", "triage"] {
        validate(
            &ci.join("schemas/test.schema.json"),
            &ci.join(format!("tests/{name}.test.yaml")),
        );
    }

    let agent = repo_root().join("examples/agent");
    validate(
        &agent.join("schemas/config.schema.json"),
        &agent.join("flowrun.yaml"),
    );
    for name in ["support_agent", "describe_order"] {
        validate(
            &agent.join("schemas/prompt.schema.json"),
            &agent.join(format!("prompts/{name}.yaml")),
        );
    }
    for name in ["support", "order_lookup"] {
        validate(
            &agent.join("schemas/flow.schema.json"),
            &agent.join(format!("flows/{name}.yaml")),
        );
    }
    validate(
        &agent.join("schemas/test.schema.json"),
        &agent.join("tests/support.test.yaml"),
    );
}

#[test]
fn schemas_reject_unknown_keys() {
    let fresh = generated();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fresh.path().join("prompt.schema.json")).expect("schema"),
    )
    .expect("json");
    let bad = serde_json::json!({ "modle": "fast", "messages": [{ "user": "hi" }] });
    assert!(!jsonschema::is_valid(&schema, &bad));
}
