//! Template rendering with minijinja: strict undefined, project partials, deterministic.
//!
//! Every template of the project is compiled once into one [`Renderer`]. A template's name
//! records where its text came from (file and YAML path), so template errors point into the
//! user's file at the right line.

use std::collections::HashMap;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Location};
use crate::project::{Project, Prompt};
use crate::provider::Message;
use crate::yaml::{Document, Path};

/// Where a template's text stands in a user's file.
#[derive(Debug, Clone)]
struct Origin {
    file: String,
    /// The whole file.
    text: Arc<str>,
    /// The template's own text.
    source: Arc<str>,
    start: Option<crate::yaml::NodeSpan>,
}

/// A rendering failure, already located in the user's file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub Box<Diagnostic>);

/// All compiled templates of a project.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    origins: HashMap<String, Origin>,
}

/// The template name of message `i` of prompt `name`.
pub fn message_template_name(prompt: &str, i: usize) -> String {
    format!("prompts/{prompt}.yaml#messages[{i}]")
}

fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

impl Renderer {
    /// Compiles every partial and prompt message; syntax errors come back located.
    pub fn new(project: &Project) -> (Renderer, Vec<Diagnostic>) {
        let mut r = Renderer {
            env: new_env(),
            origins: HashMap::new(),
        };
        let mut diags = Vec::new();
        for (name, text) in &project.partials {
            let origin = Origin {
                file: format!("partials/{name}"),
                text: text.clone(),
                source: text.clone(),
                start: None,
            };
            r.origins.insert(name.clone(), origin);
            if let Err(e) = r.env.add_template_owned(name.clone(), text.to_string()) {
                diags.push(r.locate(&e));
            }
        }
        for prompt in project.prompts.values() {
            for (i, m) in prompt.spec.messages.iter().enumerate() {
                let name = message_template_name(&prompt.name, i);
                let path = Path::root().key("messages").index(i).key(m.role().as_str());
                r.origins
                    .insert(name.clone(), origin_of(&prompt.doc, &path, m.template()));
                if let Err(e) = r.env.add_template_owned(name, m.template().to_string()) {
                    diags.push(r.locate(&e));
                }
            }
        }
        (r, diags)
    }

    /// Renders a prompt's messages with `vars` (its resolved inputs).
    pub fn render_prompt(
        &self,
        prompt: &Prompt,
        vars: &Map<String, Value>,
    ) -> Result<Vec<Message>, RenderError> {
        let ctx = minijinja::Value::from(minijinja::value::Serde(vars));
        let mut out = Vec::with_capacity(prompt.spec.messages.len());
        for (i, m) in prompt.spec.messages.iter().enumerate() {
            let name = message_template_name(&prompt.name, i);
            let tmpl = self.env.get_template(&name).map_err(|e| self.error(&e))?;
            let text = tmpl.render(&ctx).map_err(|e| self.error(&e))?;
            out.push(Message::new(m.role(), text));
        }
        Ok(out)
    }

    /// Evaluates a flow value (a step's `with` entry or the flow output) found at `path` of
    /// `doc`: strings are templates, a lone `{{ expr }}` keeps its type, mappings and lists
    /// are evaluated item by item, other values pass through.
    pub fn eval_value(
        &self,
        doc: &Document,
        path: &Path,
        value: &Value,
        ctx: &Value,
    ) -> Result<Value, RenderError> {
        match value {
            Value::String(s) => self.eval_str(doc, path, s, ctx),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.eval_value(doc, &path.index(i), v, ctx))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.eval_value(doc, &path.key(k), v, ctx)?)))
                .collect::<Result<Map<_, _>, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn eval_str(
        &self,
        doc: &Document,
        path: &Path,
        s: &str,
        ctx: &Value,
    ) -> Result<Value, RenderError> {
        let name = format!("{}#{path}", doc.file);
        let origin = origin_of(doc, path, s);
        let fail = |e: &minijinja::Error| RenderError(Box::new(locate_in(&origin, e)));
        let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
        if let Some(expr) = single_expression(s) {
            let compiled = self.env.compile_expression(expr).map_err(|e| fail(&e))?;
            let v = compiled.eval(&ctx).map_err(|e| fail(&e))?;
            if v.is_undefined() {
                return Err(RenderError(Box::new(
                    doc.error_at(path, format!("`{expr}` is undefined"))
                        .with_help("check the name against the flow's inputs and earlier steps"),
                )));
            }
            return serde_json::to_value(&v)
                .map_err(|e| RenderError(Box::new(doc.error_at(path, e.to_string()))));
        }
        let tmpl = self
            .env
            .template_from_named_str(&name, s)
            .map_err(|e| fail(&e))?;
        tmpl.render(&ctx).map(Value::String).map_err(|e| fail(&e))
    }

    fn error(&self, e: &minijinja::Error) -> RenderError {
        RenderError(Box::new(self.locate(e)))
    }

    fn locate(&self, e: &minijinja::Error) -> Diagnostic {
        match e.name().and_then(|n| self.origins.get(n)) {
            Some(origin) => locate_in(origin, e),
            None => Diagnostic::error(e.name().unwrap_or("template"), describe(e)),
        }
    }
}

fn origin_of(doc: &Document, path: &Path, source: &str) -> Origin {
    Origin {
        file: doc.file.clone(),
        text: doc.text.clone(),
        source: source.into(),
        start: doc.spans.get(path).copied(),
    }
}

/// The template's error as a diagnostic at the right place of the user's file.
fn locate_in(origin: &Origin, e: &minijinja::Error) -> Diagnostic {
    let d = Diagnostic::error(&origin.file, describe(e));
    let source = origin.source.as_ref();
    let range = e.range().or_else(|| {
        let line = e.line()?;
        let start: usize = source
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum();
        let len = source[start.min(source.len())..]
            .find('\n')
            .unwrap_or(source.len() - start.min(source.len()));
        Some(start..start + len)
    });
    let loc = match (origin.start, range) {
        (Some(span), Some(r)) => {
            crate::yaml::scalar_location(&origin.text, &span, source, r.start, r.len())
        }
        (Some(span), None) => span.value,
        (None, Some(r)) => Location::at_offset(&origin.text, r.start, r.len().max(1)),
        (None, None) => Location::at_offset(&origin.text, 0, 1),
    };
    let d = d.with_location(origin.text.clone(), loc);
    match e.kind() {
        minijinja::ErrorKind::UndefinedError => {
            d.with_help("declare the variable under `input:` or fix its name")
        }
        _ => d,
    }
}

fn describe(e: &minijinja::Error) -> String {
    let kind = match e.kind() {
        minijinja::ErrorKind::UndefinedError => "undefined variable in template",
        minijinja::ErrorKind::SyntaxError => "template syntax error",
        minijinja::ErrorKind::TemplateNotFound => "included template not found",
        _ => "template error",
    };
    match e.detail() {
        Some(detail) => format!("{kind}: {detail}"),
        None => kind.to_string(),
    }
}

/// The expression of a string that is exactly one `{{ expr }}`, if it is.
pub fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then(|| inner.trim())
}

/// Compiles a standalone template to list its variables (dotted when `nested`).
pub fn template_variables(
    source: &str,
    nested: bool,
) -> Result<std::collections::HashSet<String>, minijinja::Error> {
    let env = new_env();
    if let Some(expr) = single_expression(source) {
        return Ok(env.compile_expression(expr)?.undeclared_variables(nested));
    }
    Ok(env.template_from_str(source)?.undeclared_variables(nested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_expression_detection() {
        assert_eq!(
            single_expression("{{ steps.a.output }}"),
            Some("steps.a.output")
        );
        assert_eq!(single_expression(" {{- x -}} "), Some("x"));
        assert_eq!(single_expression("{{ a }} and {{ b }}"), None);
        assert_eq!(single_expression("hello {{ a }}"), None);
    }

    fn project(files: &[(&str, &str)]) -> Project {
        let mut sources = vec![crate::project::SourceFile::new(
            "flowrun.yaml",
            "providers: {m: {kind: mock}}\ndefaults: {model: m/x}\n",
        )];
        sources.extend(
            files
                .iter()
                .map(|(p, t)| crate::project::SourceFile::new(*p, *t)),
        );
        Project::load(sources).unwrap()
    }

    #[test]
    fn renders_partials_filters_and_json() {
        let p = project(&[
            ("partials/sig.j2", "-- {{ team | upper }}"),
            (
                "prompts/p.yaml",
                "input: {team: string, items: array}\nmessages:\n  - user: \"{{ items | tojson }} {% include 'sig.j2' %}\"\n",
            ),
        ]);
        let (r, diags) = Renderer::new(&p);
        assert!(diags.is_empty(), "{diags:?}");
        let vars = serde_json::json!({"team": "ops", "items": [1, "b"]});
        let msgs = r
            .render_prompt(&p.prompts["p"], vars.as_object().unwrap())
            .unwrap();
        assert_eq!(msgs[0].content, "[1, \"b\"] -- OPS");
    }

    #[test]
    fn undefined_at_runtime_is_an_error_not_empty() {
        let p = project(&[(
            "prompts/p.yaml",
            "input: {user: object}\nmessages:\n  - user: \"Hi {{ user.name }}\"\n",
        )]);
        let (r, _) = Renderer::new(&p);
        let vars = serde_json::json!({"user": {"id": 1}});
        let err = r
            .render_prompt(&p.prompts["p"], vars.as_object().unwrap())
            .unwrap_err();
        assert!(
            err.0.message.starts_with("undefined variable in template"),
            "{}",
            err.0.message
        );
        assert_eq!(err.0.location.map(|l| (l.line, l.col)), Some((3, 18)));
    }

    #[test]
    fn lists_nested_variables() {
        let vars =
            template_variables("{{ input.ticket }} {{ steps.c.output.category }}", true).unwrap();
        assert!(vars.contains("input.ticket"));
        assert!(vars.contains("steps.c.output.category"));
    }
}
