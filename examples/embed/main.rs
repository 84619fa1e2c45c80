//! Run a flowrun flow from a Rust program, in-process.
//!
//! Run it with `cargo run --example embed [PROJECT_DIR]` (default: `examples/quickstart`).
//! It loads the project, runs the `triage` flow on the offline mock provider and prints the
//! output. Add `.sink(...)` to the builder to record events, `.provider(...)` to inject one.

use std::sync::Arc;

use flowrun_core::{Executor, RunRequest};
use flowrun_local::LocalProject;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let default_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart");
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default_dir.into());
    let project = LocalProject::open(dir.as_ref())?.project;
    let executor = Executor::builder(Arc::new(project)).build()?;
    let input = serde_json::json!({ "ticket": "I was charged twice" });
    let outcome = executor.run(RunRequest::new("triage", input)).await?;
    println!("{}", outcome.output_text());
    Ok(())
}
