//! Whole-project checks, like a type checker: every name resolves, every template variable is
//! declared, every step reads only what earlier steps produce, no flow calls itself.
//! Nothing here calls a model. All problems are reported, not only the first.

mod agent;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use crate::diag::{Diagnostic, did_you_mean};
use crate::models::{resolve_chain, resolve_one};
use crate::project::{Flow, Project, Prompt};
use crate::render::{Renderer, template_variables};
use crate::spec::{InputSpec, OutputFormat};
use crate::yaml::{Document, Path};

/// Checks everything; returns every problem found.
pub fn check(project: &Project) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    if let Some(doc) = &project.config_doc {
        check_config(project, doc, &mut diags);
    }
    let (_, template_diags) = Renderer::new(project);
    let broken: HashSet<String> = template_diags.iter().map(|d| d.file.clone()).collect();
    diags.extend(template_diags);
    for prompt in project.prompts.values() {
        check_prompt(
            project,
            prompt,
            !broken.contains(&prompt.doc.file),
            &mut diags,
        );
    }
    for flow in project.flows.values() {
        check_flow(project, flow, &mut diags);
    }
    check_flow_cycles(project, &mut diags);
    for file in project.tests.values() {
        diags.extend(crate::testing::cases::check_file(project, file));
    }
    diags
}

/// Everything in the project that would start a local program: stdio MCP servers and
/// command tools, located. A server hosting projects for others refuses them (the first line
/// of defence; its executors cannot start programs anyway).
pub fn local_programs(project: &Project) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let help = "the server runs no local programs: use an MCP server over `url`, or an HTTP tool";
    if let Some(doc) = &project.config_doc {
        for (name, server) in &project.config.mcp_servers {
            if server.command.is_some() {
                let path = Path::root().key("mcp_servers").key(name).key("command");
                diags.push(
                    doc.error_at(&path, format!("MCP server `{name}` runs a local program"))
                        .with_help(help),
                );
            }
        }
    }
    for flow in project.flows.values() {
        for (i, step) in flow.spec.steps.iter().enumerate() {
            let Some(agent) = &step.agent else { continue };
            for (j, tool) in agent.tools.iter().enumerate() {
                if tool.command.is_some() {
                    let path = Path::root()
                        .key("steps")
                        .index(i)
                        .key("agent")
                        .key("tools")
                        .index(j)
                        .key("command");
                    diags.push(
                        flow.doc
                            .error_at(&path, format!("`{}` is a command tool", tool.name))
                            .with_help(help),
                    );
                }
            }
        }
    }
    diags
}

fn check_config(project: &Project, doc: &Document, diags: &mut Vec<Diagnostic>) {
    let config = &project.config;
    let models = Path::root().key("models");
    for (alias, spec) in &config.models {
        if let Err(e) = resolve_one(config, &format!("{}/{}", spec.provider, spec.model)) {
            diags.push(doc.error_at(&models.key(alias).key("provider"), e));
        }
        for (i, fb) in spec.fallback.iter().enumerate() {
            if let Err(e) = resolve_one(config, fb) {
                diags.push(doc.error_at(&models.key(alias).key("fallback").index(i), e));
            }
        }
    }
    if let Some(m) = &config.defaults.model
        && let Err(e) = resolve_chain(config, m)
    {
        diags.push(doc.error_at(&Path::root().key("defaults").key("model"), e));
    }
    for (name, server) in &config.mcp_servers {
        agent::check_mcp_server(
            doc,
            &Path::root().key("mcp_servers").key(name),
            name,
            server,
            diags,
        );
    }
    if let Some(budget) = &config.budget {
        check_budget(doc, budget, diags);
    }
}

/// Cost limits are positive amounts of USD (zero would refuse every priced call).
fn check_budget(doc: &Document, budget: &crate::spec::BudgetSpec, diags: &mut Vec<Diagnostic>) {
    let path = Path::root().key("budget");
    for (name, value) in [
        ("max_cost_per_run", budget.max_cost_per_run),
        ("max_cost_per_day", budget.max_cost_per_day),
    ] {
        if let Some(v) = value
            && !(v.is_finite() && v > 0.0)
        {
            diags.push(
                doc.error_at(
                    &path.key(name),
                    format!("`budget.{name}` must be a positive amount of USD, not {v}"),
                )
                .with_help("give a limit such as `5.00`, or remove it for no limit"),
            );
        }
    }
}

fn check_prompt(
    project: &Project,
    prompt: &Prompt,
    templates_ok: bool,
    diags: &mut Vec<Diagnostic>,
) {
    let doc = &prompt.doc;
    match &prompt.spec.model {
        Some(m) => {
            if let Err(e) = resolve_chain(&project.config, m) {
                diags.push(doc.error_at(&Path::root().key("model"), e));
            }
        }
        None if project.config.defaults.model.is_none() => diags.push(
            doc.error_at(&Path::root(), "this prompt names no model and `flowrun.yaml` sets no `defaults.model`")
                .with_help("add `model: <alias>` to the prompt or `defaults: { model: <alias> }` to flowrun.yaml"),
        ),
        None => {}
    }
    check_input_defaults(doc, &prompt.spec.input, diags);
    let output = &prompt.spec.output;
    if let Some(schema) = &output.schema {
        let path = Path::root().key("output").key("schema");
        if output.format != OutputFormat::Json {
            diags.push(
                doc.error_at(&path, "`schema` needs `format: json`")
                    .with_help("add `format: json` to `output`"),
            );
        } else if let Err(e) = jsonschema::validator_for(schema) {
            diags.push(doc.error_at(&path, format!("invalid JSON Schema: {e}")));
        }
    }
    if !templates_ok {
        return;
    }
    let declared: Vec<&str> = prompt.spec.input.keys().map(String::as_str).collect();
    for (i, m) in prompt.spec.messages.iter().enumerate() {
        let path = Path::root().key("messages").index(i).key(m.role().as_str());
        let Ok(vars) = template_variables(m.template(), false) else {
            continue;
        };
        let mut vars: Vec<String> = vars.into_iter().collect();
        vars.sort();
        for var in vars.iter().filter(|v| !declared.contains(&v.as_str())) {
            let help = match crate::diag::suggest(var, declared.iter().copied()) {
                Some(best) => {
                    format!("did you mean `{best}`? If not, declare `{var}` under `input:`")
                }
                None => format!("declare `{var}` under `input:`"),
            };
            let message = format!("undefined variable `{var}` in template");
            diags.push(
                doc.error_in_value(&path, m.template(), var, message)
                    .with_help(help),
            );
        }
    }
}

fn check_input_defaults(
    doc: &Document,
    inputs: &indexmap::IndexMap<String, InputSpec>,
    diags: &mut Vec<Diagnostic>,
) {
    for (name, spec) in inputs {
        if let Some(default) = spec.default_value()
            && let Some(problem) = spec.check(default)
        {
            diags.push(doc.error_at(
                &Path::root().key("input").key(name).key("default"),
                format!("default of `{name}`: {problem}"),
            ));
        }
    }
}

/// What a step produces, for checking reads of `steps.<id>.output.<field>`.
enum StepOutput {
    Text,
    Json(Option<Value>),
    Unknown,
}

fn step_output(project: &Project, step: &crate::spec::StepSpec) -> StepOutput {
    if let Some(agent) = &step.agent {
        return match &agent.output {
            Some(o) => StepOutput::Json(Some(o.schema.clone())),
            None => StepOutput::Text,
        };
    }
    if let Some(p) = step.prompt.as_ref().and_then(|p| project.prompts.get(p)) {
        return match p.spec.output.format {
            OutputFormat::Text => StepOutput::Text,
            OutputFormat::Json => StepOutput::Json(p.spec.output.schema.clone()),
        };
    }
    StepOutput::Unknown
}

fn callee_inputs<'a>(
    project: &'a Project,
    step: &crate::spec::StepSpec,
) -> Option<&'a indexmap::IndexMap<String, InputSpec>> {
    match (&step.prompt, &step.flow, &step.agent) {
        (Some(p), None, None) => project.prompts.get(p).map(|p| &p.spec.input),
        (None, Some(f), None) => project.flows.get(f).map(|f| &f.spec.input),
        (None, None, Some(a)) => project.prompts.get(&a.instructions).map(|p| &p.spec.input),
        _ => None,
    }
}

fn check_flow(project: &Project, flow: &Flow, diags: &mut Vec<Diagnostic>) {
    let doc = &flow.doc;
    check_input_defaults(doc, &flow.spec.input, diags);
    if let Some(budget) = &flow.spec.budget {
        check_budget(doc, budget, diags);
    }
    let ids: Vec<&str> = flow.spec.steps.iter().map(|s| s.id.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, step) in flow.spec.steps.iter().enumerate() {
        let path = Path::root().key("steps").index(i);
        if !seen.insert(step.id.as_str()) {
            diags.push(
                doc.error_at(&path.key("id"), format!("duplicate step id `{}`", step.id))
                    .with_help("give each step its own id"),
            );
        }
        check_step_target(project, doc, &path, step, diags);
        if let Some(a) = &step.agent {
            agent::check_agent(project, doc, &path.key("agent"), a, diags);
        }
        if let Some(m) = &step.model
            && let Err(e) = resolve_chain(&project.config, m)
        {
            diags.push(doc.error_at(&path.key("model"), e));
        }
        if let Some(inputs) = callee_inputs(project, step) {
            check_with_keys(doc, &path, step, inputs, diags);
        }
        for (key, value) in &step.with {
            let vpath = path.key("with").key(key);
            check_value_refs(project, flow, &ids[..i], &ids, value, &vpath, diags);
        }
    }
    if let Some(output) = &flow.spec.output {
        check_value_refs(
            project,
            flow,
            &ids,
            &ids,
            output,
            &Path::root().key("output"),
            diags,
        );
    }
}

fn check_step_target(
    project: &Project,
    doc: &Document,
    path: &Path,
    step: &crate::spec::StepSpec,
    diags: &mut Vec<Diagnostic>,
) {
    let targets = [
        step.prompt.is_some(),
        step.flow.is_some(),
        step.agent.is_some(),
    ];
    if targets.iter().filter(|t| **t).count() != 1 {
        diags.push(
            doc.error_at(
                path,
                format!(
                    "step `{}` must name exactly one of `prompt`, `flow` and `agent`",
                    step.id
                ),
            )
            .with_help("add `prompt: <name>`, `flow: <name>` or `agent: { instructions: <prompt>, tools: [...] }`"),
        );
        return;
    }
    match (&step.prompt, &step.flow) {
        (Some(p), None) if !project.prompts.contains_key(p) => {
            let hint = did_you_mean(p, project.prompts.keys().map(String::as_str))
                .unwrap_or_else(|| format!("create `prompts/{p}.yaml`"));
            diags.push(
                doc.error_at(&path.key("prompt"), format!("unknown prompt `{p}`"))
                    .with_help(hint),
            );
        }
        (None, Some(f)) if !project.flows.contains_key(f) => {
            let hint = did_you_mean(f, project.flows.keys().map(String::as_str))
                .unwrap_or_else(|| format!("create `flows/{f}.yaml`"));
            diags.push(
                doc.error_at(&path.key("flow"), format!("unknown flow `{f}`"))
                    .with_help(hint),
            );
        }
        _ => {}
    }
}

fn check_with_keys(
    doc: &Document,
    path: &Path,
    step: &crate::spec::StepSpec,
    inputs: &indexmap::IndexMap<String, InputSpec>,
    diags: &mut Vec<Diagnostic>,
) {
    for key in step.with.keys().filter(|k| !inputs.contains_key(*k)) {
        let hint = did_you_mean(key, inputs.keys().map(String::as_str))
            .unwrap_or_else(|| "it takes no such input".into());
        diags.push(
            doc.error_at_key(
                &path.key("with").key(key),
                format!("`{key}` is not an input of this step's target"),
            )
            .with_help(hint),
        );
    }
    for (name, spec) in inputs {
        if spec.default_value().is_none() && !step.with.contains_key(name) {
            diags.push(
                doc.error_at(
                    path.key("with").parent().as_ref().unwrap_or(path),
                    format!("step `{}` does not give required input `{name}`", step.id),
                )
                .with_help(format!("add `{name}: ...` under `with:`")),
            );
        }
    }
}

/// Checks every variable a flow value reads: `input.<declared>` or `steps.<earlier>.output…`.
fn check_value_refs(
    project: &Project,
    flow: &Flow,
    earlier: &[&str],
    all: &[&str],
    value: &Value,
    path: &Path,
    diags: &mut Vec<Diagnostic>,
) {
    let doc = &flow.doc;
    match value {
        Value::String(s) => {
            let vars = match template_variables(s, true) {
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
                if let Some(problem) = check_ref(project, flow, earlier, all, &var) {
                    diags.push(problem.into_diag(doc, path, s));
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_value_refs(project, flow, earlier, all, v, &path.index(i), diags);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                check_value_refs(project, flow, earlier, all, v, &path.key(k), diags);
            }
        }
        _ => {}
    }
}

struct RefProblem {
    message: String,
    help: Option<String>,
    /// The text to point at inside the template.
    needle: String,
}

impl RefProblem {
    fn new(needle: String, message: String, help: Option<String>) -> Option<Self> {
        Some(RefProblem {
            message,
            help,
            needle,
        })
    }

    fn into_diag(self, doc: &Document, path: &Path, template: &str) -> Diagnostic {
        let d = doc.error_in_value(path, template, &self.needle, self.message);
        match self.help {
            Some(h) => d.with_help(h),
            None => d,
        }
    }
}

fn check_ref(
    project: &Project,
    flow: &Flow,
    earlier: &[&str],
    all: &[&str],
    var: &str,
) -> Option<RefProblem> {
    let parts: Vec<&str> = var.split('.').collect();
    match parts[0] {
        "input" => {
            let name = parts.get(1)?;
            if flow.spec.input.contains_key(*name) {
                return None;
            }
            let hint = did_you_mean(name, flow.spec.input.keys().map(String::as_str))
                .unwrap_or_else(|| format!("declare `{name}` under the flow's `input:`"));
            RefProblem::new(
                format!("input.{name}"),
                format!("`input.{name}` is not an input of this flow"),
                Some(hint),
            )
        }
        "steps" => {
            let id = parts.get(1)?;
            if !earlier.contains(id) {
                if all.contains(id) {
                    return RefProblem::new(
                        format!("steps.{id}"),
                        format!("`steps.{id}` refers to a step that has not run yet"),
                        Some(format!(
                            "move step `{id}` before this one, or read an earlier step"
                        )),
                    );
                }
                let hint = did_you_mean(id, all.iter().copied())
                    .unwrap_or_else(|| "no step has that id".into());
                return RefProblem::new(
                    format!("steps.{id}"),
                    format!("unknown step `{id}`"),
                    Some(hint),
                );
            }
            let is_agent = flow
                .spec
                .steps
                .iter()
                .any(|s| s.id == *id && s.agent.is_some());
            match parts.get(2) {
                None | Some(&"output") => {}
                Some(&"transcript") if is_agent => return None,
                Some(other) => {
                    return RefProblem::new(
                        format!("steps.{id}.{other}"),
                        format!("`steps.{id}.{other}` does not exist"),
                        Some(if is_agent {
                            format!("write `steps.{id}.output` or `steps.{id}.transcript`")
                        } else {
                            format!("write `steps.{id}.output`")
                        }),
                    );
                }
            }
            let field = parts.get(3)?;
            let step = flow.spec.steps.iter().find(|s| s.id == *id)?;
            check_field(project, step, id, field).map(|p| RefProblem {
                needle: format!("steps.{id}.output.{field}"),
                ..p
            })
        }
        other => {
            let hint = did_you_mean(other, ["input", "steps"]).unwrap_or_else(|| {
                "flow templates read `input.<name>` and `steps.<id>.output`".into()
            });
            RefProblem::new(
                other.to_string(),
                format!("undefined variable `{other}`"),
                Some(hint),
            )
        }
    }
}

fn check_field(
    project: &Project,
    step: &crate::spec::StepSpec,
    id: &str,
    field: &str,
) -> Option<RefProblem> {
    match step_output(project, step) {
        StepOutput::Text => RefProblem::new(
            String::new(),
            format!("step `{id}` returns text, so `steps.{id}.output.{field}` does not exist"),
            Some(if step.agent.is_some() {
                format!("give agent `{id}` `output: {{ schema: ... }}`")
            } else {
                format!(
                    "give prompt `{}` `output: {{ format: json, schema: ... }}`",
                    step.prompt.as_deref().unwrap_or(id)
                )
            }),
        ),
        StepOutput::Json(Some(schema)) => {
            let props = schema.get("properties")?.as_object()?;
            if props.contains_key(field) {
                return None;
            }
            let hint = did_you_mean(field, props.keys().map(String::as_str))
                .unwrap_or_else(|| "add it to the output schema's `properties`".into());
            RefProblem::new(
                String::new(),
                format!("step `{id}`'s output schema has no field `{field}`"),
                Some(hint),
            )
        }
        StepOutput::Json(None) | StepOutput::Unknown => None,
    }
}

fn check_flow_cycles(project: &Project, diags: &mut Vec<Diagnostic>) {
    let edges: BTreeMap<&str, Vec<(usize, &str)>> = project
        .flows
        .iter()
        .map(|(name, f)| {
            let calls = f
                .spec
                .steps
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    let tools = s.agent.iter().flat_map(|a| a.tools.iter());
                    s.flow
                        .as_deref()
                        .into_iter()
                        .chain(tools.filter_map(|t| t.flow.as_deref()))
                        .map(move |c| (i, c))
                })
                .collect();
            (name.as_str(), calls)
        })
        .collect();
    let mut reported = HashSet::new();
    for start in edges.keys() {
        let mut stack = vec![*start];
        if let Some(cycle) = find_cycle(&edges, start, &mut stack, &mut HashMap::new())
            && reported.insert(cycle.clone())
        {
            let (flow_name, step_index) = cycle_site(&edges, &cycle);
            if let Some(flow) = project.flows.get(flow_name) {
                let path = Path::root().key("steps").index(step_index).key("flow");
                diags.push(
                    flow.doc
                        .error_at(
                            &path,
                            format!("flows call each other in a cycle: {}", cycle.join(" → ")),
                        )
                        .with_help("a flow cannot run itself, directly or through other flows"),
                );
            }
        }
    }
}

/// A cycle through `node` as the list of flow names (first repeated at the end), sorted so
/// the same cycle found from different starts is reported once.
fn find_cycle<'a>(
    edges: &BTreeMap<&'a str, Vec<(usize, &'a str)>>,
    node: &'a str,
    stack: &mut Vec<&'a str>,
    done: &mut HashMap<&'a str, bool>,
) -> Option<Vec<String>> {
    for (_, next) in edges.get(node).into_iter().flatten() {
        if let Some(pos) = stack.iter().position(|n| n == next) {
            let mut cycle: Vec<&str> = stack[pos..].to_vec();
            let min = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| **n)
                .map_or(0, |(i, _)| i);
            cycle.rotate_left(min);
            cycle.push(cycle[0]);
            return Some(cycle.into_iter().map(String::from).collect());
        }
        if done.get(next).copied().unwrap_or(false) {
            continue;
        }
        stack.push(next);
        let found = find_cycle(edges, next, stack, done);
        stack.pop();
        if found.is_some() {
            return found;
        }
        done.insert(next, true);
    }
    None
}

/// The flow and step that close the cycle (the last edge), for pointing at it.
fn cycle_site<'a>(
    edges: &BTreeMap<&'a str, Vec<(usize, &'a str)>>,
    cycle: &'a [String],
) -> (&'a str, usize) {
    let from = cycle[cycle.len() - 2].as_str();
    let to = cycle[cycle.len() - 1].as_str();
    let step = edges
        .get(from)
        .and_then(|calls| calls.iter().find(|(_, c)| *c == to))
        .map_or(0, |(i, _)| *i);
    (from, step)
}
