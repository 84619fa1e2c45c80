//! Checks on the output as JSON: `is_json`, `json_schema`, `json_path`.
//!
//! The output's JSON is the output value itself when it is not a string (a JSON-mode
//! prompt's output), else its text parsed as JSON.

use std::borrow::Cow;

use serde_json::Value;
use serde_json_path::JsonPath;

use super::template::Templates;
use super::{Verdict, cut, show};
use crate::assert::JsonPathOp;

/// How many schema errors a reason lists.
const MAX_SCHEMA_ERRORS: usize = 3;
/// How many selected values a `json_path` reason shows.
const MAX_NODES_SHOWN: usize = 3;

/// The output as JSON, or why it is not JSON.
pub(super) fn output_json(output: &Value) -> Result<Cow<'_, Value>, String> {
    match output {
        Value::String(text) => serde_json::from_str(text)
            .map(Cow::Owned)
            .map_err(|e| e.to_string()),
        other => Ok(Cow::Borrowed(other)),
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let integers = !x.is_f64() && !y.is_f64();
            if integers {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

/// [`json_eq`], except that a string and a non-string compare by their string forms
/// (`"42"` equals `42`).
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(s), other) | (other, Value::String(s)) if !other.is_string() => {
            string_form(other) == s.as_str()
        }
        _ => json_eq(a, b),
    }
}

fn string_form(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Whether a selected value contains `wanted`: equals it, has it as an array element, as a
/// substring, or as an object key.
fn node_contains(node: &Value, wanted: &Value) -> bool {
    loose_eq(node, wanted)
        || match node {
            Value::Array(items) => items.iter().any(|item| loose_eq(item, wanted)),
            Value::String(s) => s.contains(string_form(wanted).as_ref()),
            Value::Object(map) => wanted.as_str().is_some_and(|k| map.contains_key(k)),
            _ => false,
        }
}

fn not_json(expected: &str, error: &str, output: &Value) -> Verdict {
    Verdict::fail(format!(
        "expected {expected}; the output is not json ({error}): {}",
        show(output)
    ))
}

/// `is_json` (or, negated, `is_json: false` / `not_is_json`).
pub(super) fn is_json(output: &Value, negate: bool) -> Verdict {
    match (negate, output_json(output)) {
        (false, Ok(_)) => Verdict::pass("output is valid json"),
        (false, Err(e)) => not_json("json", &e, output),
        (true, Ok(v)) => Verdict::fail(format!(
            "expected output that is not json; got valid json {}",
            show(&v)
        )),
        (true, Err(_)) => Verdict::pass("output is not json"),
    }
}

/// `json_schema`: the output is JSON valid against the schema.
pub(super) fn schema(schema: &Value, output: &Value) -> Verdict {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => return Verdict::error(format!("invalid json schema: {}", cut(&e.to_string()))),
    };
    let value = match output_json(output) {
        Ok(v) => v,
        Err(e) => return not_json("json matching the schema", &e, output),
    };
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() {
                "the root".to_string()
            } else {
                format!("`{at}`")
            };
            format!("at {at}: {}", cut(&e.to_string()))
        })
        .collect();
    if errors.is_empty() {
        return Verdict::pass("output matches the schema");
    }
    let shown = errors
        .iter()
        .take(MAX_SCHEMA_ERRORS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    let more = match errors.len().saturating_sub(MAX_SCHEMA_ERRORS) {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    Verdict::fail(format!("output does not match the schema: {shown}{more}"))
}

/// `json_path`: what a JSONPath query selects from the output.
pub(super) fn path(t: &Templates<'_>, path: &str, op: &JsonPathOp, output: &Value) -> Verdict {
    let query = match JsonPath::parse(path) {
        Ok(q) => q,
        Err(e) => return Verdict::error(format!("invalid jsonpath `{path}`: {e}")),
    };
    let value = match output_json(output) {
        Ok(v) => v,
        Err(e) => return not_json(&format!("json for `{path}`"), &e, output),
    };
    let nodes = query.query(&value).all();
    let render = |v: &Value| t.render_value(v);
    match op {
        JsonPathOp::Equals(wanted) => {
            let wanted = match render(wanted) {
                Ok(v) => v,
                Err(reason) => return Verdict::error(reason),
            };
            match nodes.first() {
                None => Verdict::fail(format!(
                    "`{path}` selected nothing; expected {}",
                    show(&wanted)
                )),
                Some(node) if loose_eq(node, &wanted) => {
                    Verdict::pass(format!("`{path}` is {}", show(&wanted)))
                }
                Some(node) => Verdict::fail(format!(
                    "expected `{path}` to equal {}; found {}",
                    show(&wanted),
                    show(node)
                )),
            }
        }
        JsonPathOp::Contains(wanted) => {
            let wanted = match render(wanted) {
                Ok(v) => v,
                Err(reason) => return Verdict::error(reason),
            };
            if nodes.is_empty() {
                Verdict::fail(format!(
                    "`{path}` selected nothing; expected it to contain {}",
                    show(&wanted)
                ))
            } else if nodes.iter().any(|n| node_contains(n, &wanted)) {
                Verdict::pass(format!("`{path}` contains {}", show(&wanted)))
            } else {
                Verdict::fail(format!(
                    "expected `{path}` to contain {}; found {}",
                    show(&wanted),
                    show_nodes(&nodes)
                ))
            }
        }
        JsonPathOp::Exists(want) => match (*want, nodes.first()) {
            (true, Some(first)) => Verdict::pass(format!("`{path}` selected {}", show(first))),
            (true, None) => Verdict::fail(format!(
                "expected `{path}` to select something; it selected nothing in {}",
                show(&value)
            )),
            (false, None) => Verdict::pass(format!("`{path}` selected nothing")),
            (false, Some(first)) => Verdict::fail(format!(
                "expected `{path}` to select nothing; it selected {}",
                show(first)
            )),
        },
    }
}

fn show_nodes(nodes: &[&Value]) -> String {
    let mut shown: Vec<String> = nodes
        .iter()
        .take(MAX_NODES_SHOWN)
        .map(|n| show(n))
        .collect();
    if nodes.len() > MAX_NODES_SHOWN {
        shown.push(format!("and {} more", nodes.len() - MAX_NODES_SHOWN));
    }
    shown.join(", ")
}
