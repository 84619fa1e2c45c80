//! Reporters for `flowrun test`: pure functions that turn a [`SuiteReport`] into text.
//!
//! Each reporter takes the finished report and returns a `String`; none of them does IO or
//! looks at the terminal (the caller decides where the text goes and whether to colour it).
//!
//! - [`json`]: the whole report as pretty JSON.
//! - [`junit`]: JUnit XML for CI systems (one `<testsuite>` per test file).
//! - [`markdown`]: a summary line and a table, e.g. for `$GITHUB_STEP_SUMMARY` or a PR comment.
//! - [`html`]: one self-contained page with expandable case details.
//! - [`github_annotations`]: GitHub Actions workflow commands (`::error file=…::…`).
//! - [`terminal`]: the human summary printed after a run, optionally with ANSI colours.
//!
//! [`eval`] holds the same kind of reporters for `flowrun eval`'s draft-versus-baseline
//! [`EvalReport`] ([`eval_json`], [`eval_terminal`], [`eval_markdown`], [`eval_html`]).
//!
//! [`SuiteReport`]: flowrun_core::testing::result::SuiteReport
//! [`EvalReport`]: flowrun_core::eval::EvalReport

mod common;
pub mod eval;
mod github;
mod html;
mod json;
mod junit;
mod markdown;
mod terminal;

pub use eval::{eval_html, eval_json, eval_markdown, eval_terminal};
pub use github::github_annotations;
pub use html::html;
pub use json::json;
pub use junit::junit;
pub use markdown::markdown;
pub use terminal::terminal;

#[cfg(test)]
mod tests;
