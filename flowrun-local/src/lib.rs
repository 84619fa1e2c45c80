//! flowrun's local side: finding and reading a project from disk, secrets from `.env`, and the
//! SQLite history of runs (`.flowrun/flowrun.db`).
//!
//! Architecture invariant: this is the only crate that touches the project's files and the
//! local database; flowrun-core gets plain values and events.

pub mod baseline;
pub mod executors;
pub mod process;
pub mod project_dir;
pub mod remotes;
pub mod report;
pub mod store;
pub mod testing;

pub use process::LocalProcesses;
pub use project_dir::{LoadError, LocalProject, find_root};
pub use store::{Store, StoreError};
