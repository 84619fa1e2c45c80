//! `flowrun check` and load errors: every fixture in `tests/fixtures/errors/` is a broken
//! project; its diagnostics (file:line:col, snippet, hint) are snapshot-tested.

use crate::harness::{TestProject, run, with_filters};

#[test]
fn error_fixtures() {
    insta::glob!("../fixtures/errors", "*.txtar", |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        let project = TestProject::from_txtar(&text);
        let out = run(project.flowrun().arg("check"));
        assert_eq!(out.code, 2, "config errors exit 2\n{}", out.stderr);
        assert!(out.stdout.is_empty(), "diagnostics go to stderr");
        with_filters(project.path(), || insta::assert_snapshot!(out.stderr));
    });
}

#[test]
fn clean_project_passes() {
    let project = TestProject::copy_of("examples/quickstart");
    let out = run(project.flowrun().arg("check"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "ok: 3 prompts, 1 flow, 2 model aliases: no problems\n"
    );
}

#[test]
fn check_works_from_a_subdirectory() {
    let project = TestProject::copy_of("examples/quickstart");
    let out = run(project
        .flowrun()
        .current_dir(project.path().join("prompts"))
        .arg("check"));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn outside_a_project_says_how_to_start() {
    let dir = TestProject::empty();
    let out = run(dir.flowrun().arg("check"));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("run `flowrun init` to create one"),
        "{}",
        out.stderr
    );
}
