//! The embedding example (`examples/embed/main.rs`) builds and runs: a Rust app loads the
//! quickstart project and runs a flow in-process.

use crate::harness::repo_root;

#[test]
fn embed_example_runs_the_quickstart_flow() {
    // `cargo test` builds the package's examples next to the test binaries.
    let exe = std::env::current_exe().expect("test exe");
    let debug_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let example = debug_dir
        .join("examples")
        .join(format!("embed{}", std::env::consts::EXE_SUFFIX));
    if !example.is_file() {
        // Only a plain `cargo test` builds examples; a filtered run builds it here.
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", "embed"])
            .status()
            .expect("cargo");
        assert!(built.success(), "cannot build the embed example");
    }
    let out = std::process::Command::new(example)
        .arg(repo_root().join("examples/quickstart"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let output: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(output["category"], "billing");
}
