//! Templated assertion values: strings with `{{ … }}` or `{% … %}` are rendered with
//! minijinja over `input` and `vars`, with strict undefined.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

use super::quote;

/// What templates in assertion values can refer to.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Templates<'a> {
    input: &'a Value,
    vars: &'a Value,
}

impl<'a> Templates<'a> {
    pub(super) fn new(input: &'a Value, vars: &'a Value) -> Self {
        Templates { input, vars }
    }

    /// `source` rendered if it is a template, else as is; `Err` is a reason.
    pub(super) fn render(&self, source: &str) -> Result<String, String> {
        if !is_template(source) {
            return Ok(source.to_string());
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let ctx = minijinja::Value::from(minijinja::value::Serde(self));
        env.render_str(source, ctx)
            .map_err(|e| describe(source, &e))
    }

    /// `value` with every template string inside it rendered.
    pub(super) fn render_value(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) => Value::String(self.render(s)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_value(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_value(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

fn describe(source: &str, e: &minijinja::Error) -> String {
    let what = match e.kind() {
        minijinja::ErrorKind::UndefinedError => "undefined variable",
        minijinja::ErrorKind::SyntaxError => "syntax error",
        _ => "error",
    };
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    let hint = match e.kind() {
        minijinja::ErrorKind::UndefinedError => " (templates see `input` and `vars`)",
        _ => "",
    };
    format!(
        "could not render the template {}: {what}{detail}{hint}",
        quote(source)
    )
}
