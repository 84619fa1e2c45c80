//! Structured output: parse the reply as JSON, validate it against the prompt's schema, and
//! ask the model once to repair an invalid reply, carrying the validation error.

use serde_json::Value;

use super::StepFailure;
use super::call::Caller;
use crate::event::RunStatus;
use crate::provider::{ChatRequest, ChatResponse, Message, Role};

/// The step's JSON output, after at most one repair round.
pub(super) async fn parse_with_repair(
    caller: &mut Caller<'_, '_, '_>,
    request: &ChatRequest,
    response: ChatResponse,
    schema: Option<&Value>,
) -> Result<Value, StepFailure> {
    caller.record.output_text = Some(response.text.clone());
    let problem = match validate(&response.text, schema) {
        Ok(v) => return Ok(v),
        Err(problem) => problem,
    };
    let mut repair = request.clone();
    repair
        .messages
        .push(Message::new(Role::Assistant, response.text));
    repair.messages.push(Message::new(
        Role::User,
        format!("Your reply is not valid: {problem}. Reply again with only the corrected JSON value, nothing else."),
    ));
    let second = caller.call(&repair, true).await?;
    caller.record.output_text = Some(second.text.clone());
    validate(&second.text, schema).map_err(|again| StepFailure {
        status: RunStatus::Failed,
        message: format!("the reply is not valid JSON for the output schema, even after one repair attempt: {again}"),
    })
}

/// Parses `text` (allowing a ```json fence) and checks it against `schema`.
pub fn validate(text: &str, schema: Option<&Value>) -> Result<Value, String> {
    let body = strip_fence(text);
    let value: Value = serde_json::from_str(body).map_err(|e| format!("it is not JSON ({e})"))?;
    if let Some(schema) = schema {
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| format!("the output schema is invalid ({e})"))?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect();
        if !errors.is_empty() {
            return Err(format!(
                "it does not match the schema ({})",
                errors.join("; ")
            ));
        }
    }
    Ok(value)
}

/// `text` cut to 200 characters with an ellipsis, for error messages.
pub(super) fn cut_text(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(200).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_against_schema() {
        let schema = json!({"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}});
        assert_eq!(
            validate("```json\n{\"summary\": \"x\"}\n```", Some(&schema)),
            Ok(json!({"summary": "x"}))
        );
        let err = validate("{\"summary\": 3}", Some(&schema)).unwrap_err();
        assert!(err.contains("at `/summary`"), "{err}");
        assert!(
            validate("nope", None)
                .unwrap_err()
                .starts_with("it is not JSON")
        );
    }
}
