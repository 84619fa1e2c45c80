//! flowrun's embeddable core: the file formats, template rendering, model providers, the
//! executor with retries and fallbacks, and cost accounting.
//!
//! Architecture invariant: this crate does no file, database or terminal IO. Project files come
//! in as [`project::SourceFile`]s; run records go out through [`event::EventSink`].
//! Network IO happens only inside the HTTP providers.
//!
//! ```no_run
//! # async fn demo(files: Vec<flowrun_core::project::SourceFile>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use flowrun_core::{Executor, Project, RunRequest};
//! let project = Arc::new(Project::load(files)?);
//! let executor = Executor::builder(project).build()?;
//! let outcome = executor.run(RunRequest::new("summarize", serde_json::json!({ "text": "hi" }))).await?;
//! println!("{}", outcome.output_text());
//! # Ok(()) }
//! ```

pub mod agent;
pub mod assert;
pub mod cache;
pub mod cassette;
pub mod check;
pub mod cost;
pub mod diag;
pub mod eval;
pub mod event;
pub mod exec;
pub mod models;
pub mod project;
pub mod provider;
pub mod render;
pub mod retry;
pub mod spec;
pub mod spend;
pub mod testing;
pub mod usage;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics};
pub use event::{EventSink, RunEvent};
pub use exec::{Executor, RunOutcome, RunRequest, RunStatus};
pub use project::{Project, SourceFile};

/// A new, time-ordered unique id (UUID v7) for runs and records.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
