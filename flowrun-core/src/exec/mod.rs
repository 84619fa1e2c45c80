//! The executor: runs a prompt or a flow, step by step, with retries, fallbacks, structured
//! output repair and cost accounting, reporting every event to an [`EventSink`].

mod agent;
mod budget;
mod build;
mod call;
mod structured;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

pub use budget::ASSUMED_MAX_OUTPUT;
pub use build::{BuildError, EnvLookup, ExecutorBuilder, http_client};

use crate::agent::AgentTurn;
use crate::cache::ResponseCache;
use crate::cost::{Cost, PriceTable};
pub use crate::event::RunStatus;
use crate::event::{EventSink, RunEnd, RunEvent, RunStart, StepRecord, StepStart, now_ms};
use crate::models::resolve_chain;
use crate::project::{Project, Prompt, TargetKind};
use crate::provider::{ChatRequest, DeltaFn, Params, Provider, ResponseFormat, Usage};
use crate::render::Renderer;
use crate::retry::RetryPolicy;
use crate::spec::input::{InputError, resolve_inputs};
use crate::spec::{InputSpec, OutputFormat, ProviderKind};
use crate::spend::SpendLedger;
use crate::yaml::Path;

/// What to run, with what, and how.
#[derive(Clone)]
pub struct RunRequest {
    /// `name`, `prompt/name` or `flow/name`.
    pub target: String,
    /// The input values, a JSON object.
    pub input: Value,
    /// Receives the final step's text as it streams in.
    pub on_delta: Option<Arc<DeltaFn>>,
    /// Cancels the run: the current call is abandoned, the run ends `cancelled`.
    pub cancel: CancellationToken,
    /// Runs every step on this model (an alias or `provider/model`) instead of its own.
    pub model: Option<String>,
    /// The run's id; a new UUIDv7 when `None`. A caller that assigns ids itself (a server, at
    /// submission) passes it here, and passes it again when it resumes the run.
    pub run_id: Option<String>,
    /// Steps a previous attempt of this run already finished (from a durable store): see
    /// [`RunRequest::resuming`].
    pub completed: Vec<StepRecord>,
    /// Agent turns a previous attempt committed: see [`RunRequest::resuming_turns`].
    pub completed_turns: Vec<AgentTurn>,
    /// Today's spend for `max_cost_per_day`, instead of the executor's own ledger.
    pub ledger: Option<Arc<dyn SpendLedger>>,
}

impl RunRequest {
    pub fn new(target: impl Into<String>, input: Value) -> Self {
        RunRequest {
            target: target.into(),
            input,
            on_delta: None,
            cancel: CancellationToken::new(),
            model: None,
            run_id: None,
            completed: Vec::new(),
            completed_turns: Vec::new(),
            ledger: None,
        }
    }

    /// Reads today's spend from `ledger` (a server passes one per environment).
    pub fn with_ledger(mut self, ledger: Arc<dyn SpendLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    pub fn streaming(mut self, on_delta: Arc<DeltaFn>) -> Self {
        self.on_delta = Some(on_delta);
        self
    }

    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Runs under this id instead of a new one.
    pub fn with_run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Resumes a run that an earlier attempt (a killed process) did not finish: `completed`
    /// are the step records that attempt committed. Give the same target, input and run id
    /// ([`RunRequest::with_run_id`]) as the first attempt.
    ///
    /// The run starts over from its first step, but each step the flow reaches that has a
    /// succeeded record in `completed` with the same `step_index`, `step_id` and `prompt` is
    /// not run: its recorded output is used, its usage and cost count toward the run's
    /// totals, and [`RunEvent::StepReused`] is emitted instead of the step's usual events.
    /// Reuse stops at the first step without such a record (missing, failed, or for another
    /// prompt): that step and every later one run normally, since their inputs may now
    /// differ from what the stored records were computed from.
    ///
    /// Records are matched by position and names, not by content: a step whose prompt was
    /// renamed or replaced at that index runs again (its record answers a different prompt,
    /// so its output may not even have the shape the flow now expects), but an edit inside a
    /// prompt of the same name is not detected. Resume against the project version the run
    /// was accepted with.
    pub fn resuming(mut self, completed: Vec<StepRecord>) -> Self {
        self.completed = completed;
        self
    }

    /// Also resumes inside an agent step: `turns` are the [`RunEvent::AgentTurn`]s the
    /// previous attempt committed. The first step that is not reused, if it is an agent step
    /// with turns here (same `step_index`, numbered 1, 2, … without a gap), rebuilds its
    /// conversation from them and goes on with the next turn: their model calls and tool
    /// calls are not made again, their usage and cost count toward the step and its
    /// `max_turns` and `max_cost`. Turns of any other step are ignored.
    pub fn resuming_turns(mut self, turns: Vec<AgentTurn>) -> Self {
        self.completed_turns = turns;
        self
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub run_id: String,
    pub target_kind: TargetKind,
    pub target: String,
    pub version: String,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub steps: Vec<StepRecord>,
    pub usage: Usage,
    pub cost: Cost,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// Whether every step was answered from the response cache (see [`StepRecord::cached`]).
    pub cached: bool,
}

impl RunOutcome {
    /// The output as text: a string as is, other JSON pretty-printed.
    pub fn output_text(&self) -> String {
        match &self.output {
            Some(Value::String(s)) => s.clone(),
            Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            None => String::new(),
        }
    }
}

/// How deep flows may call flows.
const MAX_FLOW_DEPTH: usize = 32;

/// Why a run could not start (nothing was called or recorded).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    #[error("{0}")]
    UnknownTarget(String),
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidInput(Vec<InputError>),
}

/// Runs prompts and flows of one project.
pub struct Executor {
    project: Arc<Project>,
    renderer: Renderer,
    providers: HashMap<String, (ProviderKind, Arc<dyn Provider>)>,
    /// Cache identity of each provider: its name and a hash of its configured endpoint and
    /// rules, so answers cached for one endpoint are never served for another.
    provider_ids: HashMap<String, String>,
    prices: PriceTable,
    sink: Arc<dyn EventSink>,
    /// Looked up before each model call; receives every reply from a provider.
    cache: Option<Arc<dyn ResponseCache>>,
    /// A cache miss fails the call instead of calling the provider.
    replay_only: bool,
    /// Environment lookup (secrets of HTTP tools).
    env: Arc<EnvLookup>,
    /// The HTTP client of HTTP tools (the providers' when there is one), made on first use.
    tool_http: std::sync::OnceLock<reqwest::Client>,
    /// Today's spend, for `max_cost_per_day` (see [`ExecutorBuilder::ledger`]).
    ledger: Option<Arc<dyn SpendLedger>>,
    /// Starts command tools and stdio MCP servers; `None` refuses both.
    processes: Option<Arc<dyn crate::agent::ProcessHost>>,
    /// Connections to the project's MCP servers, made on first use.
    mcp: crate::agent::McpServers,
}

/// Per-run state shared by its steps.
struct RunCtx<'a> {
    run_id: String,
    cancel: &'a CancellationToken,
    on_delta: Option<&'a DeltaFn>,
    model: Option<&'a str>,
    /// How many flows deep the run is.
    depth: usize,
    next_step: u32,
    steps: Vec<StepRecord>,
    /// Steps a previous attempt finished ([`RunRequest::resuming`]).
    completed: &'a [StepRecord],
    /// Whether steps may still be reused: cleared by the first step that runs.
    reusing: bool,
    /// Agent turns a previous attempt committed ([`RunRequest::resuming_turns`]).
    completed_turns: &'a [AgentTurn],
    /// The `budget:` limits of the run.
    budget: budget::Budget,
}

/// Why a step (and so the run) stopped.
struct StepFailure {
    status: RunStatus,
    message: String,
}

impl Executor {
    pub fn builder(project: Arc<Project>) -> ExecutorBuilder {
        ExecutorBuilder::new(project)
    }

    pub fn project(&self) -> &Arc<Project> {
        &self.project
    }

    pub(crate) fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// An environment variable through the injected lookup.
    pub(crate) fn env_var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// What starts local programs, if this executor may.
    pub(crate) fn process_host(&self) -> Option<&dyn crate::agent::ProcessHost> {
        self.processes.as_deref()
    }

    /// Closes the connections to MCP servers and ends their programs (waiting briefly for
    /// them to exit). Call it when done with the executor; dropping it instead kills the
    /// programs without waiting. The executor stays usable: servers reconnect on next use.
    pub async fn shutdown(&self) {
        self.mcp.shutdown().await;
    }

    pub(crate) fn tool_http_client(&self) -> &reqwest::Client {
        self.tool_http
            .get_or_init(|| http_client().unwrap_or_default())
    }

    /// Checks the target and input, then runs it to the end. Failures of the run itself
    /// (a provider that keeps failing, an invalid reply) are in the outcome's status.
    pub async fn run(&self, req: RunRequest) -> Result<RunOutcome, ExecError> {
        self.run_nested(req, 0).await
    }

    /// [`Executor::run`] for a run started by another one (a prompt or flow tool of an
    /// agent), `depth` runs deep: past [`MAX_FLOW_DEPTH`] it fails instead of recursing.
    pub async fn run_nested(&self, req: RunRequest, depth: usize) -> Result<RunOutcome, ExecError> {
        if depth > MAX_FLOW_DEPTH {
            return Err(ExecError::UnknownTarget(format!(
                "runs nest deeper than {MAX_FLOW_DEPTH}: do agents call their own flow as a tool? `flowrun check` finds it"
            )));
        }
        let (kind, name) = self
            .project
            .resolve_target(&req.target)
            .map_err(ExecError::UnknownTarget)?;
        let decl = match kind {
            TargetKind::Prompt => &self.project.prompts[&name].spec.input,
            TargetKind::Flow => &self.project.flows[&name].spec.input,
        };
        let given = match &req.input {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => {
                let message = format!(
                    "the input must be an object of named values, not {}",
                    crate::spec::input::json_type(other)
                );
                return Err(ExecError::InvalidInput(vec![InputError {
                    field: "input".into(),
                    message,
                }]));
            }
        };
        let input = resolve_inputs(decl, &given).map_err(ExecError::InvalidInput)?;
        let version = self.version_of(kind, &name);
        let run_id = req
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let started = Instant::now();
        self.sink.emit(&RunEvent::RunStarted(RunStart {
            run_id: run_id.clone(),
            target_kind: kind.as_str().into(),
            target: name.clone(),
            version: version.clone(),
            input: Value::Object(input.clone()),
            started_at_ms: now_ms(),
        }));
        let mut ctx = RunCtx {
            run_id: run_id.clone(),
            cancel: &req.cancel,
            on_delta: req.on_delta.as_deref(),
            model: req.model.as_deref(),
            depth,
            next_step: 0,
            steps: Vec::new(),
            completed: &req.completed,
            reusing: !req.completed.is_empty() || !req.completed_turns.is_empty(),
            completed_turns: &req.completed_turns,
            budget: budget::Budget::new(
                self.project.config.budget.as_ref(),
                (kind == TargetKind::Flow).then(|| {
                    let spec = self.project.flows[&name].spec.budget.as_ref();
                    (name.as_str(), spec)
                }),
                req.ledger.clone().or_else(|| self.ledger.clone()),
            ),
        };
        let result = match kind {
            TargetKind::Prompt => {
                let prompt = &self.project.prompts[&name];
                self.run_prompt_step(&mut ctx, prompt, &name, &input, None, true)
                    .await
            }
            TargetKind::Flow => Box::pin(self.run_flow(&mut ctx, &name, input, true)).await,
        };
        let mut usage = Usage::default();
        let mut cost = Cost::default();
        for s in &ctx.steps {
            usage.add(&s.usage);
            cost.add(&s.cost);
        }
        let (status, output, error) = match result {
            Ok(v) => (RunStatus::Succeeded, Some(v), None),
            Err(f) => (f.status, None, Some(f.message)),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let cached = !ctx.steps.is_empty() && ctx.steps.iter().all(|s| s.cached);
        self.sink.emit(&RunEvent::RunFinished(RunEnd {
            run_id: run_id.clone(),
            status,
            output: output.clone(),
            usage,
            cost: cost.clone(),
            latency_ms,
            error: error.clone(),
            finished_at_ms: now_ms(),
        }));
        Ok(RunOutcome {
            run_id,
            target_kind: kind,
            target: name,
            version,
            status,
            output,
            steps: ctx.steps,
            usage,
            cost,
            latency_ms,
            error,
            cached,
        })
    }

    /// Content hash of the target and everything it uses.
    pub fn version_of(&self, kind: TargetKind, name: &str) -> String {
        let mut parts = Vec::new();
        self.collect_hashes(kind, name, &mut parts, 0);
        if let Some(doc) = &self.project.config_doc {
            parts.push(crate::project::short_hash(&doc.text));
        }
        if parts.len() == 1 {
            return parts.remove(0);
        }
        crate::project::short_hash(&parts.join("\n"))
    }

    fn collect_hashes(&self, kind: TargetKind, name: &str, out: &mut Vec<String>, depth: usize) {
        match kind {
            TargetKind::Prompt => {
                out.extend(self.project.prompts.get(name).map(|p| p.hash.clone()))
            }
            TargetKind::Flow => {
                let Some(flow) = self.project.flows.get(name) else {
                    return;
                };
                out.push(flow.hash.clone());
                if depth > 16 {
                    return;
                }
                for step in &flow.spec.steps {
                    if let Some(p) = &step.prompt {
                        self.collect_hashes(TargetKind::Prompt, p, out, depth + 1);
                    }
                    if let Some(f) = &step.flow {
                        self.collect_hashes(TargetKind::Flow, f, out, depth + 1);
                    }
                    if let Some(agent) = &step.agent {
                        let instructions = &agent.instructions;
                        self.collect_hashes(TargetKind::Prompt, instructions, out, depth + 1);
                        for tool in &agent.tools {
                            if let Some(p) = &tool.prompt {
                                self.collect_hashes(TargetKind::Prompt, p, out, depth + 1);
                            }
                            if let Some(f) = &tool.flow {
                                self.collect_hashes(TargetKind::Flow, f, out, depth + 1);
                            }
                        }
                    }
                }
            }
        }
    }

    async fn run_flow(
        &self,
        ctx: &mut RunCtx<'_>,
        name: &str,
        input: Map<String, Value>,
        is_last: bool,
    ) -> Result<Value, StepFailure> {
        // A checked project has no cycles; an unchecked one must not overflow the stack.
        ctx.depth += 1;
        if ctx.depth > MAX_FLOW_DEPTH {
            return Err(fail(format!(
                "flows nest deeper than {MAX_FLOW_DEPTH}: do flows call each other in a cycle? `flowrun check` finds it"
            )));
        }
        let flow = self
            .project
            .flows
            .get(name)
            .ok_or_else(|| fail(format!("unknown flow `{name}`")))?;
        let mut scope = json!({ "input": input, "steps": {} });
        let mut last = Value::Null;
        let count = flow.spec.steps.len();
        for (i, step) in flow.spec.steps.iter().enumerate() {
            if ctx.cancel.is_cancelled() {
                return Err(StepFailure {
                    status: RunStatus::Cancelled,
                    message: "cancelled".into(),
                });
            }
            let path = Path::root().key("steps").index(i).key("with");
            let with = self
                .renderer
                .eval_value(
                    &flow.doc,
                    &path,
                    &Value::Object(step.with.clone().into_iter().collect()),
                    &scope,
                )
                .map_err(|e| fail(format!("step `{}`: {}", step.id, e.0)))?;
            let with = with.as_object().cloned().unwrap_or_default();
            let last_step = is_last && i + 1 == count;
            let mut transcript = None;
            let output = if let Some(agent) = &step.agent {
                let prompt = self
                    .project
                    .prompts
                    .get(&agent.instructions)
                    .ok_or_else(|| {
                        fail(format!(
                            "step `{}`: unknown prompt `{}`",
                            step.id, agent.instructions
                        ))
                    })?;
                let vars = resolve_step_inputs(&prompt.spec.input, &with, &step.id)?;
                let site = agent::Site {
                    flow,
                    step_path: Path::root().key("steps").index(i),
                    step_id: &step.id,
                    agent,
                    prompt,
                };
                let model = ctx.model.or(step.model.as_deref());
                let (output, t) = self
                    .run_agent_step(ctx, &site, &vars, model, last_step)
                    .await?;
                transcript = t;
                output
            } else if let Some(prompt_name) = &step.prompt {
                let prompt = self.project.prompts.get(prompt_name).ok_or_else(|| {
                    fail(format!(
                        "step `{}`: unknown prompt `{prompt_name}`",
                        step.id
                    ))
                })?;
                let vars = resolve_step_inputs(&prompt.spec.input, &with, &step.id)?;
                self.run_prompt_step(
                    ctx,
                    prompt,
                    &step.id,
                    &vars,
                    ctx.model.or(step.model.as_deref()),
                    last_step,
                )
                .await?
            } else if let Some(sub) = &step.flow {
                let decl = &self
                    .project
                    .flows
                    .get(sub)
                    .ok_or_else(|| fail(format!("step `{}`: unknown flow `{sub}`", step.id)))?
                    .spec
                    .input;
                let vars = resolve_step_inputs(decl, &with, &step.id)?;
                let output = Box::pin(self.run_flow(ctx, sub, vars, last_step)).await;
                ctx.depth -= 1;
                output?
            } else {
                return Err(fail(format!(
                    "step `{}` names no prompt, flow or agent",
                    step.id
                )));
            };
            scope["steps"][&step.id] = match transcript {
                Some(t) => json!({ "output": output, "transcript": t }),
                None => json!({ "output": output }),
            };
            last = output;
        }
        match &flow.spec.output {
            Some(template) => self
                .renderer
                .eval_value(&flow.doc, &Path::root().key("output"), template, &scope)
                .map_err(|e| fail(format!("flow output: {}", e.0))),
            None => Ok(last),
        }
    }

    async fn run_prompt_step(
        &self,
        ctx: &mut RunCtx<'_>,
        prompt: &Prompt,
        step_id: &str,
        vars: &Map<String, Value>,
        model_override: Option<&str>,
        stream: bool,
    ) -> Result<Value, StepFailure> {
        let step_index = ctx.next_step;
        ctx.next_step += 1;
        if let Some(output) = self.reuse_step(ctx, step_index, step_id, &prompt.name, stream) {
            return Ok(output);
        }
        let started = Instant::now();
        let mut record = StepRecord {
            run_id: ctx.run_id.clone(),
            step_index,
            step_id: step_id.to_string(),
            prompt: prompt.name.clone(),
            status: RunStatus::Failed,
            output_text: None,
            output: None,
            model: None,
            usage: Usage::default(),
            cost: Cost::default(),
            latency_ms: 0,
            attempts: 0,
            error: None,
            cached: false,
            agent: None,
        };
        let result = self
            .prompt_step_body(ctx, prompt, &mut record, vars, model_override, stream)
            .await;
        record.latency_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(v) => {
                record.status = RunStatus::Succeeded;
                record.output = Some(v.clone());
            }
            Err(f) => {
                record.status = f.status;
                record.error = Some(f.message.clone());
            }
        }
        self.sink.emit(&RunEvent::StepFinished(record.clone()));
        ctx.steps.push(record);
        result.map_err(|f| StepFailure {
            status: f.status,
            message: format!("step `{step_id}` failed: {}", f.message),
        })
    }

    /// Reuses the step's record from a previous attempt, if it has a matching one and no
    /// step of this attempt has run yet (see [`RunRequest::resuming`]): emits
    /// [`RunEvent::StepReused`], adds the record to the run and returns its output.
    fn reuse_step(
        &self,
        ctx: &mut RunCtx<'_>,
        step_index: u32,
        step_id: &str,
        prompt: &str,
        stream: bool,
    ) -> Option<Value> {
        if !ctx.reusing {
            return None;
        }
        let found = find_reusable(ctx.completed, step_index, step_id, prompt)
            .and_then(|r| Some((r.clone(), r.output.clone()?)));
        let Some((mut record, output)) = found else {
            ctx.reusing = false;
            return None;
        };
        record.run_id.clone_from(&ctx.run_id);
        if stream && let Some(on_delta) = ctx.on_delta {
            let text = match (&record.output_text, &output) {
                (Some(t), _) => t.as_str(),
                (None, Value::String(s)) => s.as_str(),
                (None, _) => "",
            };
            if !text.is_empty() {
                on_delta(text);
            }
        }
        self.sink.emit(&RunEvent::StepReused(record.clone()));
        ctx.steps.push(record);
        Some(output)
    }

    async fn prompt_step_body(
        &self,
        ctx: &mut RunCtx<'_>,
        prompt: &Prompt,
        record: &mut StepRecord,
        vars: &Map<String, Value>,
        model_override: Option<&str>,
        stream: bool,
    ) -> Result<Value, StepFailure> {
        let messages = self
            .renderer
            .render_prompt(prompt, vars)
            .map_err(|e| fail(e.0.to_string()))?;
        let config = &self.project.config;
        let reference = model_override
            .or(ctx.model)
            .or(prompt.spec.model.as_deref())
            .or(config.defaults.model.as_deref())
            .unwrap_or_default();
        let chain = resolve_chain(config, reference).map_err(fail)?;
        self.sink.emit(&RunEvent::StepStarted(StepStart {
            run_id: ctx.run_id.clone(),
            step_index: record.step_index,
            step_id: record.step_id.clone(),
            prompt: prompt.name.clone(),
            version: prompt.hash.clone(),
            model: chain.first().map(|m| m.label()).unwrap_or_default(),
            messages: messages.clone(),
            started_at_ms: now_ms(),
        }));
        let response_format = match prompt.spec.output.format {
            OutputFormat::Text => ResponseFormat::Text,
            OutputFormat::Json => ResponseFormat::Json {
                schema: prompt.spec.output.schema.clone(),
            },
        };
        let request = ChatRequest::new(
            String::new(),
            messages,
            prompt.spec.params.clone(),
            response_format,
        );
        let policy = RetryPolicy {
            retries: prompt.spec.retries.unwrap_or(config.defaults.retries),
            timeout: prompt.spec.timeout.unwrap_or(config.defaults.timeout).0,
            base: config.defaults.backoff.0,
            max: config.defaults.max_backoff.0,
        };
        let on_delta = if stream { ctx.on_delta } else { None };
        let mut caller = call::Caller {
            exec: self,
            ctx,
            record,
            chain: &chain,
            policy,
            on_delta,
            successes: 0,
            hits: 0,
        };
        let response = caller.call(&request, false).await?;
        match prompt.spec.output.format {
            OutputFormat::Text => {
                caller.record.output_text = Some(response.text.clone());
                Ok(Value::String(response.text))
            }
            OutputFormat::Json => {
                structured::parse_with_repair(
                    &mut caller,
                    &request,
                    response,
                    prompt.spec.output.schema.as_ref(),
                )
                .await
            }
        }
    }

    fn provider(&self, name: &str) -> Option<&(ProviderKind, Arc<dyn Provider>)> {
        self.providers.get(name)
    }

    fn provider_id<'a>(&'a self, name: &'a str) -> &'a str {
        self.provider_ids.get(name).map_or(name, String::as_str)
    }
}

/// Merges an alias's parameters under a prompt's own.
fn merge_params(base: Option<&Params>, own: &Params) -> Params {
    let Some(base) = base else { return own.clone() };
    Params {
        temperature: own.temperature.or(base.temperature),
        top_p: own.top_p.or(base.top_p),
        max_tokens: own.max_tokens.or(base.max_tokens),
        stop: if own.stop.is_empty() {
            base.stop.clone()
        } else {
            own.stop.clone()
        },
        seed: own.seed.or(base.seed),
    }
}

/// The record of a previous attempt that step `step_index` may reuse: succeeded, with an
/// output, for the same step id and prompt (a record for another prompt at that index
/// answers a question the project no longer asks there).
fn find_reusable<'a>(
    completed: &'a [StepRecord],
    step_index: u32,
    step_id: &str,
    prompt: &str,
) -> Option<&'a StepRecord> {
    completed.iter().find(|r| {
        r.step_index == step_index
            && r.step_id == step_id
            && r.prompt == prompt
            && r.status == RunStatus::Succeeded
            && r.output.is_some()
    })
}

fn resolve_step_inputs(
    decl: &indexmap::IndexMap<String, InputSpec>,
    with: &Map<String, Value>,
    step_id: &str,
) -> Result<Map<String, Value>, StepFailure> {
    resolve_inputs(decl, with).map_err(|errs| {
        let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
        fail(format!("step `{step_id}`: {}", list.join("; ")))
    })
}

fn fail(message: impl Into<String>) -> StepFailure {
    StepFailure {
        status: RunStatus::Failed,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::SourceFile;

    fn record(step_index: u32, step_id: &str, prompt: &str, status: RunStatus) -> StepRecord {
        StepRecord {
            run_id: "r".into(),
            step_index,
            step_id: step_id.into(),
            prompt: prompt.into(),
            status,
            output_text: Some("out".into()),
            output: Some(json!("out")),
            model: None,
            usage: Usage::default(),
            cost: Cost::default(),
            latency_ms: 0,
            attempts: 1,
            error: None,
            cached: false,
            agent: None,
        }
    }

    #[test]
    fn only_a_succeeded_record_of_the_same_step_and_prompt_is_reusable() {
        let ok = record(1, "b", "p", RunStatus::Succeeded);
        let mut no_output = ok.clone();
        no_output.output = None;
        let candidates = [
            record(0, "b", "p", RunStatus::Succeeded),
            record(1, "a", "p", RunStatus::Succeeded),
            record(1, "b", "q", RunStatus::Succeeded),
            record(1, "b", "p", RunStatus::Failed),
            record(1, "b", "p", RunStatus::Cancelled),
            no_output,
        ];
        assert_eq!(find_reusable(&candidates, 1, "b", "p"), None);
        let mut with_ok = candidates.to_vec();
        with_ok.push(ok.clone());
        assert_eq!(find_reusable(&with_ok, 1, "b", "p"), Some(&ok));
    }

    /// Offline (mock provider): a step that runs ends reuse, even if later records match.
    #[tokio::test]
    async fn reuse_stops_at_the_first_step_that_runs() {
        let files = vec![
            SourceFile::new(
                "flowrun.yaml",
                "providers: {m: {kind: mock}}\ndefaults: {model: m/echo}\n",
            ),
            SourceFile::new("prompts/p.yaml", "messages: [{user: hi}]\n"),
            SourceFile::new(
                "flows/f.yaml",
                "steps: [{id: a, prompt: p}, {id: b, prompt: p}, {id: c, prompt: p}]\n",
            ),
        ];
        let project = Project::load(files).unwrap();
        let exec = Executor::builder(Arc::new(project)).build().unwrap();
        let completed = vec![
            record(0, "a", "p", RunStatus::Succeeded),
            record(2, "c", "p", RunStatus::Succeeded),
        ];
        let outcome = exec
            .run(
                RunRequest::new("flow/f", json!({}))
                    .with_run_id("run-1")
                    .resuming(completed),
            )
            .await
            .unwrap();
        assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
        assert_eq!(outcome.run_id, "run-1");
        let attempts: Vec<u32> = outcome.steps.iter().map(|s| s.attempts).collect();
        // Step 0 reused (its record says 1 attempt), steps 1 and 2 called the mock once each.
        assert_eq!(outcome.steps[0].output, Some(json!("out")));
        assert_eq!(attempts, [1, 1, 1]);
        assert_ne!(outcome.steps[2].output, Some(json!("out")));
        assert!(outcome.steps.iter().all(|s| s.run_id == "run-1"));
    }

    /// A project that skipped `check` (as an embedding app might) must fail, not overflow.
    #[tokio::test]
    async fn an_unchecked_flow_cycle_fails_cleanly() {
        let files = vec![
            SourceFile::new(
                "flowrun.yaml",
                "providers: {m: {kind: mock}}\ndefaults: {model: m/x}\n",
            ),
            SourceFile::new("flows/a.yaml", "steps: [{id: s, flow: b}]\n"),
            SourceFile::new(
                "flows/b.yaml",
                "steps: [{id: s, flow: a}, {id: t, prompt: missing}]\n",
            ),
        ];
        let (project, _) = Project::parse(files);
        let exec = Executor::builder(Arc::new(project)).build().unwrap();
        let outcome = exec
            .run(RunRequest::new("flow/a", json!({})))
            .await
            .unwrap();
        assert_eq!(outcome.status, RunStatus::Failed);
        assert!(outcome.error.unwrap().contains("flows nest deeper than 32"));
    }
}
