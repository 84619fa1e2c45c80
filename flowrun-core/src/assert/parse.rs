//! Reading assertions from test files, with located diagnostics and "did you mean".

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{AssertionSpec, Check, JsonPathOp};
use crate::diag::{Diagnostic, did_you_mean};
use crate::spec::Duration;
use crate::yaml::{Document, Path};

/// Every check an assertion can name.
pub const CHECK_KEYS: [&str; 22] = [
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "icontains",
    "not_icontains",
    "regex",
    "not_regex",
    "starts_with",
    "not_starts_with",
    "is_json",
    "json_schema",
    "json_path",
    "length",
    "latency_max",
    "cost_max",
    "llm_judge",
    "command",
    "not_is_json",
    "tool_called",
    "tool_not_called",
    "turns",
];

const MODIFIERS: [&str; 6] = ["weight", "threshold", "required", "all", "model", "args"];
const JSON_PATH_OPS: [&str; 3] = ["equals", "contains", "exists"];

/// Reads the assertion `value` found at `path` of `doc`.
pub fn parse(doc: &Document, path: &Path, value: &Value) -> Result<AssertionSpec, Diagnostic> {
    let Value::Object(map) = value else {
        return Err(doc
            .error_at(
                path,
                "an assertion must be a mapping such as `{ contains: refund }`",
            )
            .with_help(format!("checks: {}", CHECK_KEYS.join(", "))));
    };
    let check_key = find_check_key(doc, path, map)?;
    for key in map
        .keys()
        .filter(|k| *k != check_key && !MODIFIERS.contains(&k.as_str()))
    {
        let allowed = check_key == "json_path" && JSON_PATH_OPS.contains(&key.as_str());
        if !allowed {
            return Err(unknown_key(doc, path, key, check_key));
        }
    }
    let r = Reader { doc, path, map };
    let check = r.check(check_key)?;
    let weight = r.number("weight")?.unwrap_or(1.0);
    if weight < 0.0 {
        return Err(doc.error_at(&path.key("weight"), "`weight` must be zero or more"));
    }
    let threshold = r.number("threshold")?.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(doc.error_at(
            &path.key("threshold"),
            "`threshold` must be between 0 and 1",
        ));
    }
    if map.contains_key("all") && !matches!(check, Check::Contains { .. }) {
        return Err(doc.error_at_key(
            &path.key("all"),
            "`all` goes with `contains` and its variants",
        ));
    }
    if map.contains_key("args") && !matches!(check, Check::ToolCalled { negate: false, .. }) {
        return Err(doc.error_at_key(&path.key("args"), "`args` goes with `tool_called`"));
    }
    if map.contains_key("model") && !matches!(check, Check::LlmJudge { .. }) {
        return Err(doc.error_at_key(&path.key("model"), "`model` goes with `llm_judge`"));
    }
    let required = r.boolean("required")?.unwrap_or(false);
    Ok(AssertionSpec {
        check,
        weight,
        threshold,
        required,
    })
}

fn find_check_key<'m>(
    doc: &Document,
    path: &Path,
    map: &'m Map<String, Value>,
) -> Result<&'m str, Diagnostic> {
    if let Some((key, _)) = map.get_key_value("json_path") {
        return Ok(key);
    }
    let checks: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| CHECK_KEYS.contains(k))
        .collect();
    match checks.as_slice() {
        [one] => Ok(one),
        [] => {
            let stray = map
                .keys()
                .find(|k| !MODIFIERS.contains(&k.as_str()) && !JSON_PATH_OPS.contains(&k.as_str()));
            match stray {
                Some(k) => Err(unknown_key(doc, path, k, "")),
                None => Err(doc
                    .error_at(path, "this assertion names no check")
                    .with_help(format!("add one of: {}", CHECK_KEYS.join(", ")))),
            }
        }
        [_, second, ..] => Err(doc
            .error_at_key(
                &path.key(*second),
                format!("an assertion has one check; this one also has `{second}`"),
            )
            .with_help("write each check as its own list item")),
    }
}

fn unknown_key(doc: &Document, path: &Path, key: &str, check: &str) -> Diagnostic {
    let mut names: Vec<&str> = CHECK_KEYS.iter().chain(MODIFIERS.iter()).copied().collect();
    if check == "json_path" {
        names.extend(JSON_PATH_OPS);
    }
    let help = did_you_mean(key, names.iter().copied()).unwrap_or_else(|| "remove it".into());
    doc.error_at_key(&path.key(key), format!("unknown assertion key `{key}`"))
        .with_help(help)
}

struct Reader<'a> {
    doc: &'a Document,
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        self.doc.error_at(&self.path.key(key), message)
    }

    fn get(&self, key: &str) -> &Value {
        self.map.get(key).unwrap_or(&Value::Null)
    }

    fn string(&self, key: &str) -> Result<String, Diagnostic> {
        match self.get(key) {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.err(key, format!("`{key}` takes a text value"))),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, Diagnostic> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(self.err(key, format!("`{key}` takes a number"))),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Diagnostic> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(key, format!("`{key}` takes `true` or `false`"))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, Diagnostic> {
        match self.get(key) {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
                    _ => Err(self.err(key, format!("`{key}` takes text values"))),
                })
                .collect(),
            Value::Array(_) => Err(self.err(key, format!("`{key}` needs at least one value"))),
            _ => Ok(vec![self.string(key)?]),
        }
    }

    fn check(&self, key: &str) -> Result<Check, Diagnostic> {
        let negate = key.starts_with("not_");
        let base = key.trim_start_matches("not_");
        Ok(match base {
            "equals" => Check::Equals(self.get(key).clone(), negate),
            "contains" | "icontains" => Check::Contains {
                values: self.strings(key)?,
                all: self.boolean("all")?.unwrap_or(false),
                ignore_case: base == "icontains",
                negate,
            },
            "regex" => {
                let pattern = self.string(key)?;
                // A templated pattern is only known once rendered; it is checked then.
                let templated = pattern.contains("{{") || pattern.contains("{%");
                if !templated && let Err(e) = regex_lite_check(&pattern) {
                    return Err(self.err(key, format!("invalid regular expression: {e}")));
                }
                Check::Regex(pattern, negate)
            }
            "starts_with" => Check::StartsWith(self.string(key)?, negate),
            "is_json" => match self.get(key) {
                Value::Bool(b) => Check::IsJson(negate || !b),
                _ => return Err(self.err(key, "`is_json` takes `true` or `false`")),
            },
            "json_schema" => {
                let schema = self.get(key).clone();
                if let Err(e) = jsonschema::validator_for(&schema) {
                    return Err(self.err(key, format!("invalid JSON Schema: {e}")));
                }
                Check::JsonSchema(schema)
            }
            "json_path" => self.json_path(key)?,
            "length" => self.length(key)?,
            "latency_max" => {
                let d: Duration = self
                    .doc
                    .deserialize_at(&self.path.key(key), self.get(key))?;
                Check::LatencyMax(d.0)
            }
            "cost_max" => match self.get(key).as_f64() {
                Some(v) if v >= 0.0 => Check::CostMax(v),
                _ => return Err(self.err(key, "`cost_max` takes a cost in USD, such as 0.01")),
            },
            "llm_judge" => Check::LlmJudge {
                rubric: self.string(key)?,
                model: self
                    .map
                    .get("model")
                    .map(|_| self.string("model"))
                    .transpose()?,
            },
            "command" => Check::Command(self.string(key)?),
            "tool_called" => {
                let args = self.map.get("args").cloned();
                if args.as_ref().is_some_and(|a| !a.is_object()) {
                    return Err(self.err(
                        "args",
                        "`args` takes a mapping of argument values, such as `{ city: Paris }`",
                    ));
                }
                Check::ToolCalled {
                    name: self.tool_name(key)?,
                    args,
                    negate,
                }
            }
            "tool_not_called" => Check::ToolCalled {
                name: self.tool_name(key)?,
                args: None,
                negate: true,
            },
            "turns" => self.turns(key)?,
            _ => return Err(self.err(key, format!("unknown check `{key}`"))),
        })
    }

    fn json_path(&self, key: &str) -> Result<Check, Diagnostic> {
        let path = self.string(key)?;
        if let Err(e) = serde_json_path::JsonPath::parse(&path) {
            return Err(self
                .err(key, format!("invalid JSONPath: {e}"))
                .with_help("write it like `$.category` or `$.items[0].name`"));
        }
        let ops: Vec<&str> = JSON_PATH_OPS
            .iter()
            .copied()
            .filter(|k| self.map.contains_key(*k))
            .collect();
        let op = match ops.as_slice() {
            ["equals"] => JsonPathOp::Equals(self.get("equals").clone()),
            ["contains"] => JsonPathOp::Contains(self.get("contains").clone()),
            ["exists"] => JsonPathOp::Exists(self.boolean("exists")?.unwrap_or(true)),
            [] => JsonPathOp::Exists(true),
            _ => {
                return Err(self.err(
                    key,
                    "`json_path` takes one of `equals`, `contains`, `exists`",
                ));
            }
        };
        Ok(Check::JsonPath { path, op })
    }

    fn tool_name(&self, key: &str) -> Result<String, Diagnostic> {
        match self.get(key) {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(self.err(key, format!("`{key}` takes a tool's name"))),
        }
    }

    fn turns(&self, key: &str) -> Result<Check, Diagnostic> {
        let Value::Object(bounds) = self.get(key) else {
            return Err(self.err(key, "`turns` takes `{ max: N }`, `{ min: N }` or both"));
        };
        let (mut min, mut max) = (None, None);
        for (k, v) in bounds {
            let n = v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.err(key, format!("`turns.{k}` takes a whole number")))?;
            match k.as_str() {
                "min" => min = Some(n),
                "max" => max = Some(n),
                other => {
                    return Err(self.doc.error_at_key(
                        &self.path.key(key).key(other),
                        format!("unknown key `{other}`; `turns` takes `min` and `max`"),
                    ));
                }
            }
        }
        if min.is_none() && max.is_none() {
            return Err(self.err(key, "`turns` needs `min`, `max` or both"));
        }
        Ok(Check::Turns { min, max })
    }

    fn length(&self, key: &str) -> Result<Check, Diagnostic> {
        let Value::Object(bounds) = self.get(key) else {
            return Err(self.err(key, "`length` takes `{ min: N, max: N }`"));
        };
        let mut min = None;
        let mut max = None;
        for (k, v) in bounds {
            let n = v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.err(key, format!("`length.{k}` takes a whole number")))?;
            match k.as_str() {
                "min" => min = Some(n),
                "max" => max = Some(n),
                other => {
                    return Err(self.doc.error_at_key(
                        &self.path.key(key).key(other),
                        format!("unknown key `{other}`; `length` takes `min` and `max`"),
                    ));
                }
            }
        }
        if min.is_none() && max.is_none() {
            return Err(self.err(key, "`length` needs `min`, `max` or both"));
        }
        Ok(Check::Length { min, max })
    }
}

/// Validates a regular expression by compiling it.
fn regex_lite_check(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The JSON Schema of one assertion, for editors.
#[derive(Debug)]
pub struct AssertionSchema;

impl schemars::JsonSchema for AssertionSchema {
    fn schema_name() -> Cow<'static, str> {
        "Assertion".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut props = Map::new();
        for key in CHECK_KEYS {
            props.insert(
                key.into(),
                serde_json::json!({ "description": format!("the `{key}` check") }),
            );
        }
        props.insert("weight".into(), serde_json::json!({ "type": "number", "minimum": 0, "description": "relative weight in the case score (default 1)" }));
        props.insert("threshold".into(), serde_json::json!({ "type": "number", "minimum": 0, "maximum": 1, "description": "score needed to pass (default 0.5)" }));
        props.insert(
            "required".into(),
            serde_json::json!({ "type": "boolean", "description": "a failure fails the case" }),
        );
        props.insert("all".into(), serde_json::json!({ "type": "boolean", "description": "contains: every value must appear" }));
        props.insert(
            "model".into(),
            serde_json::json!({ "type": "string", "description": "llm_judge: the judge model" }),
        );
        props.insert("args".into(), serde_json::json!({ "type": "object", "description": "tool_called: a call's arguments contain these values" }));
        props.insert("exists".into(), serde_json::json!({ "type": "boolean", "description": "json_path: the query selects something" }));
        schemars::json_schema!({
            "type": "object",
            "description": "One check (`contains`, `json_path`, `llm_judge`, …) with optional modifiers",
            "properties": props,
            "additionalProperties": false,
            "minProperties": 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(yaml: &str) -> Result<AssertionSpec, Diagnostic> {
        let doc = Document::parse("t.test.yaml", yaml).unwrap();
        let value = doc.value.clone();
        parse(&doc, &Path::root(), &value)
    }

    #[test]
    fn reads_checks_and_modifiers() {
        let a = parse_one("{ contains: [refund, sorry], all: true, weight: 2, required: true }")
            .unwrap();
        assert_eq!(
            a.check,
            Check::Contains {
                values: vec!["refund".into(), "sorry".into()],
                all: true,
                ignore_case: false,
                negate: false
            }
        );
        assert_eq!((a.weight, a.threshold, a.required), (2.0, 0.5, true));
        let j = parse_one("{ json_path: $.category, equals: billing }").unwrap();
        assert_eq!(
            j.check,
            Check::JsonPath {
                path: "$.category".into(),
                op: JsonPathOp::Equals("billing".into())
            }
        );
        let l = parse_one("{ latency_max: 2s }").unwrap();
        assert_eq!(
            l.check,
            Check::LatencyMax(std::time::Duration::from_secs(2))
        );
        assert_eq!(
            parse_one("{ not_icontains: As an AI }")
                .unwrap()
                .check
                .name(),
            "not_icontains"
        );
    }

    #[test]
    fn explains_mistakes() {
        let e = parse_one("{ contians: refund }").unwrap_err();
        assert_eq!(e.message, "unknown assertion key `contians`");
        assert_eq!(e.help.as_deref(), Some("did you mean `contains`?"));
        let e = parse_one("{ contains: a, regex: b }").unwrap_err();
        assert!(e.message.contains("one check"), "{}", e.message);
        let e = parse_one("{ regex: '(' }").unwrap_err();
        assert!(
            e.message.starts_with("invalid regular expression"),
            "{}",
            e.message
        );
        let e = parse_one("{ json_path: 'nope[' }").unwrap_err();
        assert!(e.message.starts_with("invalid JSONPath"), "{}", e.message);
        let e = parse_one("{ tool_caled: search }").unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean `tool_called`?"));
        let e = parse_one("{ turns: { maximum: 3 } }").unwrap_err();
        assert!(
            e.message.contains("`turns` takes `min` and `max`"),
            "{}",
            e.message
        );
        let e = parse_one("{ contains: a, args: { q: 1 } }").unwrap_err();
        assert_eq!(e.message, "`args` goes with `tool_called`");
        let t = parse_one("{ tool_called: search, args: { q: rust } }").unwrap();
        assert_eq!(
            t.check,
            Check::ToolCalled {
                name: "search".into(),
                args: Some(serde_json::json!({"q": "rust"})),
                negate: false
            }
        );
        let e = parse_one("{ equals: x, threshold: 3 }").unwrap_err();
        assert_eq!(e.message, "`threshold` must be between 0 and 1");
    }
}
