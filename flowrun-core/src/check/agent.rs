//! Checks of agent steps: the instructions prompt, the model, every tool (name, exactly one
//! target that exists, a valid parameters schema, HTTP and command templates, MCP servers that
//! are declared, command tools only when allowed), limits and `tool_choice`; and the
//! `mcp_servers` of `flowrun.yaml`.

use std::collections::HashSet;

use crate::diag::{Diagnostic, did_you_mean};
use crate::models::resolve_chain;
use crate::project::Project;
use crate::render::template_variables;
use crate::spec::agent::{AgentSpec, HeaderValue, ToolSpec};
use crate::spec::config::{McpServerSpec, SettingValue};
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
    let names: Vec<&str> = agent
        .tools
        .iter()
        .filter(|t| t.mcp.is_none())
        .map(|t| t.name.as_str())
        .chain(
            agent
                .tools
                .iter()
                .flat_map(|t| t.tools.iter().flatten().map(String::as_str)),
        )
        .collect();
    // A whole MCP server's tools are known only once it runs.
    let open_ended = agent
        .tools
        .iter()
        .any(|t| t.mcp.is_some() && t.tools.is_none());
    if let Some(choice) = &agent.tool_choice
        && !["auto", "required", "none"].contains(&choice.as_str())
        && !names.contains(&choice.as_str())
        && !open_ended
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
        if tool.mcp.is_none() && !seen.insert(tool.name.as_str()) {
            diags.push(
                doc.error_at(
                    &tpath.key("name"),
                    format!("duplicate tool name `{}`", tool.name),
                )
                .with_help("give each tool of an agent its own name"),
            );
        }
        for (j, name) in tool.tools.iter().flatten().enumerate() {
            if !seen.insert(name.as_str()) {
                diags.push(
                    doc.error_at(
                        &tpath.key("tools").index(j),
                        format!("duplicate tool name `{name}`"),
                    )
                    .with_help("an agent offers each tool once; remove one of them"),
                );
            }
        }
        if tool.mcp.is_some() {
            check_mcp_tool(project, doc, &tpath, tool, diags);
            continue;
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
    if tool.name.is_empty() {
        diags.push(
            doc.error_at(path, "this tool needs a `name`")
                .with_help("the model calls it by its name: letters, digits, `_` or `-`"),
        );
    } else if !valid_tool_name(&tool.name) {
        diags.push(
            doc.error_at(
                &path.key("name"),
                format!("invalid tool name `{}`", tool.name),
            )
            .with_help("use 1 to 64 letters, digits, `_` or `-` (what providers accept)"),
        );
    }
    if tool.targets().len() != 1 {
        diags.push(
            doc.error_at(
                path,
                format!(
                    "tool `{}` must have exactly one of `prompt`, `flow`, `http`, `command` and `mcp`",
                    tool.name
                ),
            )
            .with_help("add `flow: <name>`, `prompt: <name>`, `http: { url: ... }`, `command: [program, ...]` or `mcp: <server>`"),
        );
    }
    if tool.tools.is_some() {
        diags.push(
            doc.error_at(&path.key("tools"), "`tools` selects tools of an MCP server")
                .with_help("use it with `mcp: <server>`, or remove it"),
        );
    }
    if tool.timeout.is_some() && tool.command.is_none() {
        let help = if tool.http.is_some() {
            "an HTTP tool's timeout is `http.timeout`"
        } else {
            "`timeout` applies to `command` and `mcp` tools; a prompt's or flow's own settings limit it"
        };
        diags.push(
            doc.error_at(&path.key("timeout"), "`timeout` is not used by this tool")
                .with_help(help),
        );
    }
    if let Some(argv) = &tool.command {
        check_command_tool(project, doc, &path.key("command"), argv, diags);
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
        None if tool.http.is_some() || tool.command.is_some() => diags.push(
            doc.error_at(
                path,
                format!(
                    "{} tool `{}` needs `parameters`",
                    if tool.http.is_some() {
                        "HTTP"
                    } else {
                        "command"
                    },
                    tool.name
                ),
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

/// A command tool: allowed by `flowrun.yaml`, a program, templates over `args`.
fn check_command_tool(
    project: &Project,
    doc: &Document,
    path: &Path,
    argv: &[String],
    diags: &mut Vec<Diagnostic>,
) {
    if !project.config.allow_command_tools {
        diags.push(
            doc.error_at(path, "command tools are off in this project")
                .with_help("they run local programs: to allow them, add `allow_command_tools: true` to `flowrun.yaml` (the server never runs them)"),
        );
    }
    if argv.first().is_none_or(|p| p.trim().is_empty()) {
        diags.push(
            doc.error_at(path, "`command` needs a program")
                .with_help("write `command: [program, arg, ...]`"),
        );
    }
    for (i, arg) in argv.iter().enumerate() {
        check_args_template(doc, &path.index(i), arg, diags);
    }
}

/// An `mcp` entry: a declared server, and nothing that only other tools have.
fn check_mcp_tool(
    project: &Project,
    doc: &Document,
    path: &Path,
    tool: &ToolSpec,
    diags: &mut Vec<Diagnostic>,
) {
    let server = tool.mcp.as_deref().unwrap_or_default();
    let servers = &project.config.mcp_servers;
    if !servers.contains_key(server) {
        let hint = did_you_mean(server, servers.keys().map(String::as_str)).unwrap_or_else(|| {
            format!("declare it in `flowrun.yaml`: `mcp_servers: {{ {server}: {{ command: [...] }} }}` or `{{ url: https://... }}`")
        });
        diags.push(
            doc.error_at(&path.key("mcp"), format!("unknown MCP server `{server}`"))
                .with_help(hint),
        );
    }
    let others: Vec<&str> = tool.targets().into_iter().filter(|t| *t != "mcp").collect();
    if !others.is_empty() {
        diags.push(
            doc.error_at(
                path,
                format!("`mcp` cannot be combined with `{}`", others.join("`, `")),
            )
            .with_help("list the MCP server and the other tool as two entries of `tools`"),
        );
    }
    for (key, set) in [
        ("name", !tool.name.is_empty()),
        ("description", tool.description.is_some()),
        ("parameters", tool.parameters.is_some()),
    ] {
        if set {
            diags.push(
                doc.error_at(&path.key(key), format!("an `mcp` entry has no `{key}`"))
                    .with_help("its tools keep the name, description and parameters schema the server gives them; choose some with `tools: [a, b]`"),
            );
        }
    }
    if let Some(names) = &tool.tools {
        if names.is_empty() {
            diags.push(
                doc.error_at(&path.key("tools"), "`tools` is empty")
                    .with_help(
                        "list the server's tools to offer, or remove `tools` to offer them all",
                    ),
            );
        }
        for (i, name) in names.iter().enumerate() {
            if !valid_tool_name(name) {
                diags.push(
                    doc.error_at(
                        &path.key("tools").index(i),
                        format!("invalid tool name `{name}`"),
                    )
                    .with_help("use 1 to 64 letters, digits, `_` or `-` (what providers accept)"),
                );
            }
        }
    }
}

/// The `mcp_servers` entry `name` of `flowrun.yaml`.
pub(super) fn check_mcp_server(
    doc: &Document,
    path: &Path,
    name: &str,
    server: &McpServerSpec,
    diags: &mut Vec<Diagnostic>,
) {
    match (&server.command, &server.url) {
        (Some(_), Some(_)) | (None, None) => diags.push(
            doc.error_at(
                path,
                format!("MCP server `{name}` needs exactly one of `command` and `url`"),
            )
            .with_help("`command: [program, args...]` for a local server over stdio, `url: https://.../mcp` for streamable HTTP"),
        ),
        (Some(argv), None) => {
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                diags.push(
                    doc.error_at(&path.key("command"), "`command` needs a program")
                        .with_help("write `command: [program, arg, ...]`"),
                );
            }
            if !server.headers.is_empty() {
                diags.push(
                    doc.error_at(&path.key("headers"), "`headers` are sent to a `url`")
                        .with_help("a `command` server gets settings through `env`"),
                );
            }
        }
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                diags.push(
                    doc.error_at(&path.key("url"), format!("`{url}` is not an HTTP URL"))
                        .with_help("write the endpoint like `https://example.com/mcp`"),
                );
            }
            if !server.env.is_empty() {
                diags.push(
                    doc.error_at(&path.key("env"), "`env` is for a `command` server")
                        .with_help("a `url` server gets settings through `headers`"),
                );
            }
        }
    }
    for (key, values) in [("env", &server.env), ("headers", &server.headers)] {
        for (k, v) in values {
            if let SettingValue::Env(e) = v
                && e.env.trim().is_empty()
            {
                diags.push(doc.error_at(
                    &path.key(key).key(k),
                    "`env` names the environment variable holding the value",
                ));
            }
        }
    }
}

/// 1 to 64 letters, digits, `_` or `-`: what providers accept as a tool's name.
pub(crate) fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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

/// HTTP and command tool templates read only `args`.
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
                "tool templates read the call's arguments as `args.<name>`".into()
            });
            diags.push(
                doc.error_in_value(path, template, root, format!("undefined variable `{root}`"))
                    .with_help(hint),
            );
        }
    }
}
