//! The JSON reporter: the whole [`SuiteReport`] as pretty-printed JSON.

use flowrun_core::testing::result::SuiteReport;

/// The whole report as pretty JSON (the same shape the history stores and `--format json`
/// prints).
pub fn json(report: &SuiteReport) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(text) => text,
        // Serializing plain data does not fail; should it ever, say so in valid JSON.
        Err(e) => {
            serde_json::json!({ "error": format!("cannot serialize the report: {e}") }).to_string()
        }
    }
}
