//! Typed inputs of prompts and flows: declaration, defaults and validation of given values.

use std::fmt;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::diag::did_you_mean;

/// The type of an input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }

    pub fn accepts(self, v: &Value) -> bool {
        match self {
            InputType::String => v.is_string(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Number => v.is_number(),
            InputType::Boolean => v.is_boolean(),
            InputType::Array => v.is_array(),
            InputType::Object => v.is_object(),
        }
    }

    /// Reads a command-line `key=value` text as this type.
    pub fn parse_text(self, text: &str) -> Result<Value, String> {
        let parsed = match self {
            InputType::String => return Ok(Value::String(text.to_string())),
            _ => serde_json::from_str::<Value>(text).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(v) if self.accepts(&v) => Ok(v),
            _ => Err(format!("`{text}` is not a valid {}", self.as_str())),
        }
    }
}

impl fmt::Display for InputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared input: either just a type (`text: string`) or the long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum InputSpec {
    Short(InputType),
    Full(InputDetail),
}

/// The long form of an input declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputDetail {
    #[serde(rename = "type")]
    pub ty: InputType,
    /// Used when the caller gives no value; makes the input optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The only values allowed.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
}

impl InputSpec {
    pub fn ty(&self) -> InputType {
        match self {
            InputSpec::Short(t) => *t,
            InputSpec::Full(d) => d.ty,
        }
    }

    pub fn default_value(&self) -> Option<&Value> {
        match self {
            InputSpec::Short(_) => None,
            InputSpec::Full(d) => d.default.as_ref(),
        }
    }

    fn allowed(&self) -> Option<&[Value]> {
        match self {
            InputSpec::Short(_) => None,
            InputSpec::Full(d) => d.allowed.as_deref(),
        }
    }

    /// Why `value` is not acceptable for this input, if it is not.
    pub fn check(&self, value: &Value) -> Option<String> {
        if !self.ty().accepts(value) {
            return Some(format!("expected {}, got {}", self.ty(), json_type(value)));
        }
        if let Some(allowed) = self.allowed()
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Some(format!("must be one of {}", list.join(", ")));
        }
        None
    }
}

/// The JSON type name of a value, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A problem with one input value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "input `{}`: {}", self.field, self.message)
    }
}

/// Checks `given` against the declarations and fills in defaults; reports every problem.
pub fn resolve_inputs(
    decl: &IndexMap<String, InputSpec>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<InputError>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    for (name, spec) in decl {
        match given.get(name).or(spec.default_value()) {
            Some(v) => match spec.check(v) {
                Some(message) => errors.push(InputError {
                    field: name.clone(),
                    message,
                }),
                None => {
                    out.insert(name.clone(), v.clone());
                }
            },
            None => errors.push(InputError {
                field: name.clone(),
                message: format!("missing required {} input", spec.ty()),
            }),
        }
    }
    for name in given.keys().filter(|k| !decl.contains_key(*k)) {
        let hint = did_you_mean(name, decl.keys().map(String::as_str))
            .unwrap_or_else(|| "this takes no inputs".into());
        errors.push(InputError {
            field: name.clone(),
            message: format!("not a declared input; {hint}"),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The JSON Schema that values of these inputs must match (for APIs and editors).
pub fn input_schema(decl: &IndexMap<String, InputSpec>) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, spec) in decl {
        let mut p = Map::new();
        p.insert("type".into(), spec.ty().as_str().into());
        if let InputSpec::Full(d) = spec {
            if let Some(desc) = &d.description {
                p.insert("description".into(), desc.clone().into());
            }
            if let Some(def) = &d.default {
                p.insert("default".into(), def.clone());
            }
            if let Some(allowed) = &d.allowed {
                p.insert("enum".into(), Value::Array(allowed.clone()));
            }
        }
        if spec.default_value().is_none() {
            required.push(Value::String(name.clone()));
        }
        props.insert(name.clone(), Value::Object(p));
    }
    serde_json::json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl() -> IndexMap<String, InputSpec> {
        serde_json::from_value(json!({
            "text": "string",
            "style": { "type": "string", "default": "bullets", "enum": ["bullets", "prose"] },
            "n": "integer",
        }))
        .unwrap()
    }

    #[test]
    fn fills_defaults_and_validates() {
        let given = json!({ "text": "hi", "n": 2 });
        let out = resolve_inputs(&decl(), given.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({ "text": "hi", "style": "bullets", "n": 2 })
        );
    }

    #[test]
    fn reports_every_problem() {
        let given = json!({ "style": "poem", "n": "two", "txt": "x" });
        let errs = resolve_inputs(&decl(), given.as_object().unwrap()).unwrap_err();
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "input `text`: missing required string input",
                "input `style`: must be one of \"bullets\", \"prose\"",
                "input `n`: expected integer, got string",
                "input `txt`: not a declared input; did you mean `text`?",
            ]
        );
    }

    #[test]
    fn parses_cli_text_by_type() {
        assert_eq!(InputType::Integer.parse_text("42"), Ok(json!(42)));
        assert_eq!(InputType::String.parse_text("42"), Ok(json!("42")));
        assert!(InputType::Boolean.parse_text("yes").is_err());
        assert_eq!(InputType::Array.parse_text("[1,2]"), Ok(json!([1, 2])));
    }

    #[test]
    fn schema_marks_required() {
        let s = input_schema(&decl());
        assert_eq!(s["required"], json!(["text", "n"]));
        assert_eq!(s["properties"]["style"]["default"], "bullets");
    }
}
