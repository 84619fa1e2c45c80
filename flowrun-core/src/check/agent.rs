//! Checks of agent steps: the instructions prompt, the model, every tool (name, exactly one
//! target that exists, a valid parameters schema, HTTP templates), limits and `tool_choice`.

use std::collections::HashSet;

use crate::diag::{Diagnostic, did_you_mean};
use crate::models::resolve_chain;
use crate::project::Project;
use crate::render::template_variables;
use crate::spec::agent::{AgentSpec, HeaderValue, ToolSpec};
use crate::yaml::{Document, Path};

/// Every problem of the agent at `path` (the step's `agent` key).
pub(super) fn check_agent(
    project: &Project,
    doc: &Document,
    path: &Path,
    agent: &AgentSpec,
    diags: &mut Vec<Diagnostic>,
) {
    let instructions = &agent.instructions;
    match project.prompts.get(instructions) {
        None => {
            let hint = did_you_mean(instructions, project.prompts.keys().map(String::as_str))
                .unwrap_or_else(|| format!("create `prompts/{instructions}.yaml`"));
            diags.push(
                doc.error_at(
                    &path.key("instructions"),
                    format!("unknown prompt `{instructions}`"),
                )
                .with_help(hint),
            );
        }
        Some(p) if p.spec.output.format != crate::spec::OutputFormat::Text => diags.push(
            doc.error_at(
                &path.key("instructions"),
                format!("the instructions prompt `{instructions}` asks for JSON output"),
            )
            .with_help(
                "an agent's answer format is `agent.output`; remove `output` from the prompt",
            ),
        ),
        Some(_) => {}
    }
    if let Some(m) = &agent.model
        && let Err(e) = resolve_chain(&project.config, m)
    {
        diags.push(doc.error_at(&path.key("model"), e));
    }
    if agent.max_turns == 0 {
        diags.push(
            doc.error_at(&path.key("max_turns"), "`max_turns` must be at least 1")
                .with_help(
                    "each turn is one model call; give the agent room to call tools and answer",
                ),
        );
    }
    if agent.parallel_tool_calls == 0 {
        diags.push(
            doc.error_at(
                &path.key("parallel_tool_calls"),
                "`parallel_tool_calls` must be at least 1",
            )
            .with_help("write `1` to run tool calls one at a time"),
        );
    }
    if let Some(cost) = agent.max_cost
        && !(cost.is_finite() && cost > 0.0)
    {
        diags.push(doc.error_at(
            &path.key("max_cost"),
            "`max_cost` must be a positive amount in USD, such as 0.05",
        ));
    }
    if let Some(output) = &agent.output
        && let Err(e) = jsonschema::validator_for(&output.schema)
    {
        diags.push(doc.error_at(
            &path.key("output").key("schema"),
            format!("invalid JSON Schema: {e}"),
        ));
    }
    let names: Vec<&str> = agent.tools.iter().map(|t| t.name.as_str()).collect();
    if let Some(choice) = &agent.tool_choice
        && !["auto", "required", "none"].contains(&choice.as_str())
        && !names.contains(&choice.as_str())
    {
        let options = ["auto", "required", "none"]
            .into_iter()
            .chain(names.iter().copied());
        let hint = did_you_mean(choice, options).unwrap_or_else(|| {
            "write `auto`, `required`, `none`, or one of the tools' names".into()
        });
        diags.push(
            doc.error_at(
                &path.key("tool_choice"),
                format!(
                    "`tool_choice` is `{choice}`, which is neither a mode nor a tool of this agent"
                ),
            )
            .with_help(hint),
        );
    }
    let mut seen = HashSet::new();
    for (i, tool) in agent.tools.iter().enumerate() {
        let tpath = path.key("tools").index(i);
        if !seen.insert(tool.name.as_str()) {
            diags.push(
                doc.error_at(
                    &tpath.key("name"),
                    format!("duplicate tool name `{}`", tool.name),
                )
                .with_help("give each tool of an agent its own name"),
            );
        }
        check_tool(project, doc, &tpath, tool, diags);
    }
}

fn check_tool(
    project: &Project,
    doc: &Document,
    path: &Path,
    tool: &ToolSpec,
    diags: &mut Vec<Diagnostic>,
) {
    let valid_name = !tool.name.is_empty()
        && tool.name.len() <= 64
        && tool
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        diags.push(
            doc.error_at(
                &path.key("name"),
                format!("invalid tool name `{}`", tool.name),
            )
            .with_help("use 1 to 64 letters, digits, `_` or `-` (what providers accept)"),
        );
    }
    let targets = [
        tool.prompt.is_some(),
        tool.flow.is_some(),
        tool.http.is_some(),
    ];
    if targets.iter().filter(|t| **t).count() != 1 {
        diags.push(
            doc.error_at(
                path,
                format!(
                    "tool `{}` must have exactly one of `prompt`, `flow` and `http`",
                    tool.name
                ),
            )
            .with_help("add `flow: <name>`, `prompt: <name>` or `http: { url: ... }`"),
        );
    }
    if let Some(p) = &tool.prompt
        && !project.prompts.contains_key(p)
    {
        let hint = did_you_mean(p, project.prompts.keys().map(String::as_str))
            .unwrap_or_else(|| format!("create `prompts/{p}.yaml`"));
        diags.push(
            doc.error_at(&path.key("prompt"), format!("unknown prompt `{p}`"))
                .with_help(hint),
        );
    }
    if let Some(f) = &tool.flow
        && !project.flows.contains_key(f)
    {
        let hint = did_you_mean(f, project.flows.keys().map(String::as_str))
            .unwrap_or_else(|| format!("create `flows/{f}.yaml`"));
        diags.push(
            doc.error_at(&path.key("flow"), format!("unknown flow `{f}`"))
                .with_help(hint),
        );
    }
    match &tool.parameters {
        Some(schema) => {
            if let Err(e) = jsonschema::validator_for(schema) {
                diags.push(
                    doc.error_at(&path.key("parameters"), format!("invalid JSON Schema: {e}")),
                );
            } else if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
                diags.push(
                    doc.error_at(
                        &path.key("parameters"),
                        "tool parameters must be an object schema",
                    )
                    .with_help("write `{ type: object, properties: { ... } }`: models pass arguments by name"),
                );
            }
        }
        None if tool.http.is_some() => diags.push(
            doc.error_at(
                path,
                format!("HTTP tool `{}` needs `parameters`", tool.name),
            )
            .with_help(
                "describe its arguments as a JSON Schema: `{ type: object, properties: { ... } }`",
            ),
        ),
        None => {}
    }
    if let Some(http) = &tool.http {
        let hpath = path.key("http");
        let mut templates = vec![(hpath.key("url"), http.url.clone())];
        for (name, value) in &http.headers {
            match value {
                HeaderValue::Template(t) => {
                    templates.push((hpath.key("headers").key(name), t.clone()))
                }
                HeaderValue::Env(e) if e.env.trim().is_empty() => diags.push(doc.error_at(
                    &hpath.key("headers").key(name),
                    "`env` names the environment variable holding the value",
                )),
                HeaderValue::Env(_) => {}
            }
        }
        if let Some(body) = &http.body {
            collect_strings(body, &hpath.key("body"), &mut templates);
        }
        for (tpath, template) in templates {
            check_args_template(doc, &tpath, &template, diags);
        }
        if let Some(pointer) = &http.response
            && !pointer.is_empty()
            && !pointer.starts_with('/')
        {
            diags.push(
                doc.error_at(&hpath.key("response"), "`response` must be a JSON Pointer")
                    .with_help(format!("write it like `/{}`", pointer.replace('.', "/"))),
            );
        }
    }
}

fn collect_strings(value: &serde_json::Value, path: &Path, out: &mut Vec<(Path, String)>) {
    match value {
        serde_json::Value::String(s) => out.push((path.clone(), s.clone())),
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_strings(v, &path.index(i), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                collect_strings(v, &path.key(k), out);
            }
        }
        _ => {}
    }
}

/// HTTP tool templates read only `args`.
fn check_args_template(doc: &Document, path: &Path, template: &str, diags: &mut Vec<Diagnostic>) {
    let vars = match template_variables(template, true) {
        Ok(v) => v,
        Err(e) => {
            diags.push(doc.error_at(
                path,
                format!(
                    "template syntax error: {}",
                    e.detail().unwrap_or("invalid template")
                ),
            ));
            return;
        }
    };
    let mut vars: Vec<String> = vars.into_iter().collect();
    vars.sort();
    for var in vars {
        let root = var.split('.').next().unwrap_or_default();
        if root != "args" {
            let hint = did_you_mean(root, ["args"]).unwrap_or_else(|| {
                "HTTP tool templates read the call's arguments as `args.<name>`".into()
            });
            diags.push(
                doc.error_in_value(path, template, root, format!("undefined variable `{root}`"))
                    .with_help(hint),
            );
        }
    }
}
