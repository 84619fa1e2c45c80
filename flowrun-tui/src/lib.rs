//! `flowrun dev`: a terminal UI that shows, for every test case, the draft's output next to
//! the baseline's, re-running the draft as prompt files change.
//!
//! State, update and rendering are apart (see ARCHITECTURE.md): `app` holds the state and the
//! pure `update`, `ui` draws a frame from it, `event` maps keys to actions, `runtime` runs
//! the loop and the workers, and `reload` watches the project and rebuilds the draft off the
//! UI thread.

pub mod app;
pub mod event;
pub mod reload;
pub mod runtime;
pub mod ui;
