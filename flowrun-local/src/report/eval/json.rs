//! The JSON reporter for `flowrun eval`: the whole [`EvalReport`] as pretty-printed JSON.

use flowrun_core::eval::EvalReport;

/// The whole evaluation as pretty JSON (the shape `--format json` prints; it parses back into
/// an [`EvalReport`]).
pub fn eval_json(report: &EvalReport) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(text) => text,
        // Serializing plain data does not fail; should it ever, say so in valid JSON.
        Err(e) => serde_json::json!({ "error": format!("cannot serialize the evaluation: {e}") })
            .to_string(),
    }
}
