//! `flowrun init`: a new project that checks and runs offline at once.

use crate::harness::{TestProject, run};

#[test]
fn scaffolds_a_working_project() {
    let dir = TestProject::empty();
    let out = run(dir.flowrun().args(["init", "support"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let root = dir.path().join("support");
    for file in [
        "flowrun.yaml",
        "prompts/classify.yaml",
        "flows/triage.yaml",
        "partials/tone.j2",
        "schemas/prompt.schema.json",
    ] {
        assert!(root.join(file).is_file(), "{file} missing");
    }
    let gitignore = std::fs::read_to_string(root.join(".gitignore")).expect("gitignore");
    assert!(gitignore.lines().any(|l| l == ".flowrun/"), "{gitignore}");

    let checked = run(dir.flowrun().args(["-C", "support", "check"]));
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    let ran = run(dir.flowrun().args([
        "-C",
        "support",
        "run",
        "triage",
        "-q",
        "--input",
        "ticket=app crashes",
    ]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(root.join(".flowrun/flowrun.db").is_file());
}

#[test]
fn refuses_to_overwrite_a_project() {
    let dir = TestProject::empty();
    assert_eq!(run(dir.flowrun().arg("init")).code, 0);
    let again = run(dir.flowrun().arg("init"));
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already has a flowrun.yaml"),
        "{}",
        again.stderr
    );
}
