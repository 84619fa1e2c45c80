//! Prompt tests: cases from test files and datasets, run through the executor, scored by
//! assertions. Pure logic: datasets come in as text, results go out as values.

pub mod cases;
pub mod dataset;
pub mod judge;
pub mod result;
pub mod runner;

pub use cases::{TestCase, cases_of};
pub use result::{CaseResult, SuiteReport, Summary};
pub use runner::{TestOptions, run_tests};
