//! The agent loop of an agent step: call the model with the tools on offer, run the tools it
//! asks for (in parallel, up to the limit), send back their results, and repeat until it
//! gives a final answer, or a limit (`max_turns`, `max_cost`, `timeout`) ends the loop.
//!
//! Arguments are validated against each tool's schema before it runs; invalid arguments, an
//! unknown tool and a failing tool are results the model sees (`is_error`), never a crash.
//! Each turn is emitted as a [`RunEvent::AgentTurn`] once its model call and tools are done.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::call::Caller;
use super::{Executor, RunCtx, StepFailure, fail};
use crate::agent::mcp::offered_name;
use crate::agent::{
    AgentStop, AgentTurn, CommandTool, HttpTool, McpTool, ProjectTool, Tool, ToolContext,
    ToolOutcome, ToolResult, Transcript,
};
use crate::cost::Cost;
use crate::event::{RunEvent, RunStatus, StepRecord, StepStart, now_ms};
use crate::models::resolve_chain;
use crate::project::{Flow, Prompt};
use crate::provider::{
    ChatRequest, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolDef, Usage,
};
use crate::retry::RetryPolicy;
use crate::spec::AgentSpec;
use crate::spec::agent::{DEFAULT_TOOL_TIMEOUT, inputs_schema};
use crate::yaml::Path;

/// Where an agent step is: its flow, its position, its spec and its instructions prompt.
pub(super) struct Site<'a> {
    pub flow: &'a Flow,
    /// The step's path in the flow file (`steps[i]`).
    pub step_path: Path,
    pub step_id: &'a str,
    pub agent: &'a AgentSpec,
    pub prompt: &'a Prompt,
}

/// A tool on offer and the validator of its arguments.
struct Offered<'a> {
    tool: Box<dyn Tool + 'a>,
    validator: Option<jsonschema::Validator>,
}

/// How long tools cancelled by the agent's timeout get to end cleanly.
const TOOL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How the loop ended: why, and the answer or the failure.
type Ending = (AgentStop, Result<Value, StepFailure>);

impl Executor {
    /// Runs an agent step; returns its output and its transcript (as templates see it).
    pub(super) async fn run_agent_step(
        &self,
        ctx: &mut RunCtx<'_>,
        site: &Site<'_>,
        vars: &Map<String, Value>,
        model_override: Option<&str>,
        stream: bool,
    ) -> Result<(Value, Option<Value>), StepFailure> {
        let step_index = ctx.next_step;
        ctx.next_step += 1;
        let prior = if ctx.reusing {
            committed_turns(ctx.completed_turns, step_index)
        } else {
            Vec::new()
        };
        if let Some(output) =
            self.reuse_step(ctx, step_index, site.step_id, &site.prompt.name, stream)
        {
            let transcript = ctx.steps.last().and_then(|r| r.agent.as_ref());
            return Ok((output, transcript.map(Transcript::to_value)));
        }
        let started = Instant::now();
        let mut record = StepRecord {
            run_id: ctx.run_id.clone(),
            step_index,
            step_id: site.step_id.to_string(),
            prompt: site.prompt.name.clone(),
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
        // Turns a previous attempt committed come first; the loop continues after them.
        let mut transcript = Transcript {
            stop: AgentStop::Failed,
            turns: prior,
        };
        let (stop, result) = self
            .agent_body(
                ctx,
                site,
                &mut record,
                &mut transcript,
                vars,
                model_override,
            )
            .await;
        transcript.stop = stop;
        record.latency_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(v) => {
                record.status = RunStatus::Succeeded;
                record.output = Some(v.clone());
                if stream
                    && let Some(on_delta) = ctx.on_delta
                    && let Some(text) = &record.output_text
                {
                    on_delta(text);
                }
            }
            Err(f) => {
                record.status = f.status;
                record.error = Some(f.message.clone());
            }
        }
        let value = transcript.to_value();
        record.agent = Some(transcript);
        self.sink.emit(&RunEvent::StepFinished(record.clone()));
        ctx.steps.push(record);
        let step_id = site.step_id;
        result.map(|v| (v, Some(value))).map_err(|f| StepFailure {
            status: f.status,
            message: format!("step `{step_id}` failed: {}", f.message),
        })
    }

    async fn agent_body(
        &self,
        ctx: &mut RunCtx<'_>,
        site: &Site<'_>,
        record: &mut StepRecord,
        transcript: &mut Transcript,
        vars: &Map<String, Value>,
        model_override: Option<&str>,
    ) -> Ending {
        let agent = site.agent;
        let prompt = site.prompt;
        let messages = match self.renderer.render_prompt(prompt, vars) {
            Ok(m) => m,
            Err(e) => return (AgentStop::Failed, Err(fail(e.0.to_string()))),
        };
        let config = &self.project.config;
        let reference = model_override
            .or(agent.model.as_deref())
            .or(prompt.spec.model.as_deref())
            .or(config.defaults.model.as_deref())
            .unwrap_or_default();
        let chain = match resolve_chain(config, reference) {
            Ok(c) => c,
            Err(e) => return (AgentStop::Failed, Err(fail(e))),
        };
        let offered = match self.offered_tools(site).await {
            Ok(o) => o,
            Err(e) => return (AgentStop::Failed, Err(fail(e))),
        };
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
        let policy = RetryPolicy {
            retries: prompt.spec.retries.unwrap_or(config.defaults.retries),
            timeout: prompt.spec.timeout.unwrap_or(config.defaults.timeout).0,
            base: config.defaults.backoff.0,
            max: config.defaults.max_backoff.0,
        };
        let cancel = ctx.cancel.clone();
        let depth = ctx.depth;
        let mut messages = messages;
        let mut tools_cost = Cost::default();
        for turn in &transcript.turns {
            // A committed turn: its calls are not made again, what they cost still counts.
            record.usage.add(&turn.usage);
            record.cost.add(&turn.cost);
            record.model = Some(turn.model.clone());
            for c in turn.tool_results.iter().filter_map(|r| r.cost.as_ref()) {
                tools_cost.add(c);
            }
            messages.extend(turn.messages());
        }
        let caller = Caller {
            exec: self,
            ctx,
            record,
            chain: &chain,
            policy,
            on_delta: None,
            successes: 0,
            hits: 0,
        };
        let mut state = Loop {
            caller,
            agent,
            offered: &offered,
            messages,
            transcript,
            tools_cost,
            tools_running: Arc::new(AtomicBool::new(false)),
            tool_cx: ToolContext {
                executor: self,
                cancel: cancel.child_token(),
                depth,
            },
            params: prompt.spec.params.clone(),
        };
        let stop_tools = state.tool_cx.cancel.clone();
        let tools_running = state.tools_running.clone();
        let timed_out = {
            let run = state.run();
            tokio::pin!(run);
            tokio::select! {
                ending = &mut run => Err(ending),
                () = tokio::time::sleep(agent.timeout.0) => {
                    // Tools still running (a flow's run, an HTTP request) are cancelled and
                    // get a moment to record how they ended; the unfinished turn is not
                    // recorded, so a resumed agent makes it again.
                    stop_tools.cancel();
                    if tools_running.load(Ordering::SeqCst) {
                        let _ = tokio::time::timeout(TOOL_GRACE, &mut run).await;
                    }
                    Ok(())
                }
            }
        };
        stop_tools.cancel();
        match timed_out {
            Err(ending) => ending,
            Ok(()) => (
                AgentStop::Timeout,
                Err(fail(format!(
                    "timeout: the agent did not answer within {} ({} turns done)",
                    agent.timeout,
                    state.transcript.turns.len()
                ))),
            ),
        }
    }

    /// The step's tools, built from their specs, with their argument validators; MCP
    /// servers are connected to (once per executor) for their tools.
    async fn offered_tools<'a>(&'a self, site: &Site<'a>) -> Result<Vec<Offered<'a>>, String> {
        let mut out: Vec<Offered<'a>> = Vec::new();
        for (i, spec) in site.agent.tools.iter().enumerate() {
            let path = site.step_path.key("agent").key("tools").index(i);
            if let Some(server) = &spec.mcp {
                out.extend(self.mcp_tools(server, spec).await?);
                continue;
            }
            let (declared, inputs) = if let Some(p) = &spec.prompt {
                let prompt = self.project.prompts.get(p);
                let prompt =
                    prompt.ok_or_else(|| format!("tool `{}`: unknown prompt `{p}`", spec.name))?;
                (prompt.spec.description.clone(), Some(&prompt.spec.input))
            } else if let Some(f) = &spec.flow {
                let flow = self.project.flows.get(f);
                let flow =
                    flow.ok_or_else(|| format!("tool `{}`: unknown flow `{f}`", spec.name))?;
                (flow.spec.description.clone(), Some(&flow.spec.input))
            } else {
                (None, None)
            };
            let parameters = spec
                .parameters
                .clone()
                .or_else(|| inputs.map(inputs_schema))
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
            let validator = jsonschema::validator_for(&parameters)
                .map_err(|e| format!("tool `{}`: invalid parameters schema: {e}", spec.name))?;
            let def = ToolDef {
                name: spec.name.clone(),
                description: spec.description.clone().or(declared).unwrap_or_default(),
                parameters,
            };
            let tool: Box<dyn Tool + 'a> = match (
                &spec.prompt,
                &spec.flow,
                &spec.http,
                &spec.command,
            ) {
                (Some(p), None, None, None) => Box::new(ProjectTool {
                    def,
                    target: format!("prompt/{p}"),
                }),
                (None, Some(f), None, None) => Box::new(ProjectTool {
                    def,
                    target: format!("flow/{f}"),
                }),
                (None, None, Some(http), None) => Box::new(HttpTool {
                    def,
                    spec: http,
                    doc: &site.flow.doc,
                    path: path.key("http"),
                }),
                (None, None, None, Some(argv)) => {
                    if self.process_host().is_none() {
                        return Err(format!(
                            "command tool `{}` cannot run here: this executor runs no local programs (the server never runs command tools)",
                            spec.name
                        ));
                    }
                    if !self.project.config.allow_command_tools {
                        return Err(format!(
                            "command tool `{}`: command tools are off; add `allow_command_tools: true` to flowrun.yaml",
                            spec.name
                        ));
                    }
                    Box::new(CommandTool {
                        def,
                        argv,
                        doc: &site.flow.doc,
                        path: path.key("command"),
                        timeout: spec.timeout.unwrap_or(DEFAULT_TOOL_TIMEOUT).0,
                    })
                }
                _ => {
                    return Err(format!(
                        "tool `{}` must have exactly one of `prompt`, `flow`, `http`, `command` and `mcp`",
                        spec.name
                    ));
                }
            };
            out.push(Offered {
                tool,
                validator: Some(validator),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for o in &out {
            let name = &o.tool.def().name;
            if !seen.insert(name.clone()) {
                return Err(format!(
                    "two tools of this agent are named `{name}` (an MCP server's tool and another); offer only some of the server's tools with `tools: [...]`"
                ));
            }
        }
        Ok(out)
    }

    /// The tools of MCP server `server` the entry `spec` offers.
    async fn mcp_tools(
        &self,
        server: &str,
        spec: &crate::spec::ToolSpec,
    ) -> Result<Vec<Offered<'static>>, String> {
        let Some(server_spec) = self.project.config.mcp_servers.get(server) else {
            return Err(format!(
                "unknown MCP server `{server}`; declare it under `mcp_servers` in flowrun.yaml"
            ));
        };
        let connector = crate::agent::mcp::Connector {
            env: &*self.env,
            processes: self.process_host(),
            http: self.tool_http_client(),
        };
        let conn = self.mcp.connect(server, server_spec, &connector).await?;
        let timeout = spec.timeout.unwrap_or(DEFAULT_TOOL_TIMEOUT).0;
        let listed = conn.tools();
        let chosen: Vec<&rmcp::model::Tool> = match &spec.tools {
            None => listed.iter().collect(),
            Some(names) => {
                let mut chosen = Vec::new();
                for name in names {
                    let found = listed.iter().find(|t| {
                        t.name == name.as_str() || offered_name(&t.name) == name.as_str()
                    });
                    match found {
                        Some(t) => chosen.push(t),
                        None => {
                            let all: Vec<String> =
                                listed.iter().map(|t| t.name.to_string()).collect();
                            let hint =
                                crate::diag::did_you_mean(name, all.iter().map(String::as_str))
                                    .unwrap_or_else(|| {
                                        format!("its tools are: {}", all.join(", "))
                                    });
                            return Err(format!(
                                "MCP server `{server}` has no tool `{name}`; {hint}"
                            ));
                        }
                    }
                }
                chosen
            }
        };
        Ok(chosen
            .into_iter()
            .map(|t| {
                let tool = McpTool::new(conn.clone(), t, timeout);
                // A schema the validator cannot compile is still offered; the server checks.
                let validator = jsonschema::validator_for(&tool.def.parameters).ok();
                Offered {
                    tool: Box::new(tool),
                    validator,
                }
            })
            .collect())
    }
}

/// The state of one agent's loop.
struct Loop<'e, 'c, 'r, 'a> {
    caller: Caller<'e, 'c, 'r>,
    agent: &'a AgentSpec,
    offered: &'a [Offered<'a>],
    /// The conversation so far.
    messages: Vec<Message>,
    transcript: &'c mut Transcript,
    /// What prompt and flow tools have spent (counts toward `max_cost`).
    tools_cost: Cost,
    tool_cx: ToolContext<'e>,
    /// Set while the tools of a turn run (the timeout lets them end cleanly then).
    tools_running: Arc<AtomicBool>,
    params: crate::provider::Params,
}

impl Loop<'_, '_, '_, '_> {
    async fn run(&mut self) -> Ending {
        let agent = self.agent;
        let defs: Vec<ToolDef> = self.offered.iter().map(|o| o.tool.def().clone()).collect();
        let first_choice = agent.tool_choice.as_deref().map(|c| match c {
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            "none" => ToolChoice::None,
            name => ToolChoice::Tool(name.to_owned()),
        });
        let response_format = match &agent.output {
            Some(o) => ResponseFormat::Json {
                schema: Some(o.schema.clone()),
            },
            None => ResponseFormat::Text,
        };
        let first = self.transcript.turns.len() as u32 + 1;
        for turn in first..=agent.max_turns {
            if let Some(ending) = self.over_budget() {
                return ending;
            }
            let mut request = ChatRequest::new(
                String::new(),
                self.messages.clone(),
                self.params.clone(),
                response_format.clone(),
            );
            if !defs.is_empty() {
                request.tools = defs.clone();
                request.tool_choice = if turn == 1 {
                    first_choice.clone()
                } else {
                    None
                };
                request.parallel_tool_calls = (agent.parallel_tool_calls == 1).then_some(false);
            }
            let usage_before = self.caller.record.usage;
            let cost_before = self.caller.record.cost.clone();
            let started_at_ms = now_ms();
            let started = Instant::now();
            let response = match self.caller.call(&request, false).await {
                Ok(r) => r,
                Err(f) if f.status == RunStatus::Cancelled => {
                    return (AgentStop::Cancelled, Err(f));
                }
                Err(f) => return (AgentStop::Failed, Err(f)),
            };
            let record = &*self.caller.record;
            let mut done = AgentTurn {
                run_id: record.run_id.clone(),
                step_index: record.step_index,
                turn,
                model: record.model.clone().unwrap_or_default(),
                assistant: Message::assistant_calls(
                    response.text.clone(),
                    response.tool_calls.clone(),
                ),
                tool_results: Vec::new(),
                feedback: Vec::new(),
                usage: usage_since(&record.usage, &usage_before),
                cost: cost_since(&record.cost, &cost_before),
                started_at_ms,
                latency_ms: 0,
            };
            let answer = if response.tool_calls.is_empty() {
                self.caller.record.output_text = Some(response.text.clone());
                match parse_answer(&response.text, agent) {
                    Ok(v) => Some(v),
                    Err(problem) => {
                        done.feedback.push(Message::new(
                            Role::User,
                            format!("Your answer is not valid: {problem}. Answer again with only the corrected JSON value, nothing else."),
                        ));
                        None
                    }
                }
            } else {
                self.tools_running.store(true, Ordering::SeqCst);
                done.tool_results = self.run_tools(&response.tool_calls).await;
                self.tools_running.store(false, Ordering::SeqCst);
                if self.tool_cx.cancel.is_cancelled() {
                    // Cut short: the turn is incomplete and not recorded.
                    return (
                        AgentStop::Cancelled,
                        Err(StepFailure {
                            status: RunStatus::Cancelled,
                            message: "cancelled".into(),
                        }),
                    );
                }
                for r in &done.tool_results {
                    if let Some(c) = &r.cost {
                        self.tools_cost.add(c);
                    }
                }
                None
            };
            done.latency_ms = started.elapsed().as_millis() as u64;
            self.caller
                .exec
                .sink
                .emit(&RunEvent::AgentTurn(done.clone()));
            self.messages.extend(done.messages());
            self.transcript.turns.push(done);
            if let Some(answer) = answer {
                return (AgentStop::Answered, Ok(answer));
            }
        }
        (
            AgentStop::MaxTurnsReached,
            Err(fail(format!(
                "max_turns_reached: the agent used its {} turns without a final answer",
                agent.max_turns
            ))),
        )
    }

    /// The ending when `max_cost` is reached (or cannot be enforced) before another call.
    fn over_budget(&self) -> Option<Ending> {
        let max = self.agent.max_cost?;
        let mut spent = self.caller.record.cost.clone();
        spent.add(&self.tools_cost);
        match spent.usd_if_known() {
            Some(usd) if usd >= max => Some((
                AgentStop::BudgetExceeded,
                Err(fail(format!(
                    "budget_exceeded: the agent spent ${} of its max_cost ${} in {} turns",
                    crate::cost::format_usd(usd),
                    crate::cost::format_usd(max),
                    self.transcript.turns.len()
                ))),
            )),
            Some(_) => None,
            None => {
                let models: Vec<&str> = spent.unknown_models.iter().map(String::as_str).collect();
                Some((
                    AgentStop::BudgetExceeded,
                    Err(fail(format!(
                        "budget_exceeded: max_cost cannot be enforced, no price for {}; add it under `pricing:` in flowrun.yaml",
                        models.join(", ")
                    ))),
                ))
            }
        }
    }

    /// Runs the calls of one turn, up to `parallel_tool_calls` at once; results keep the
    /// calls' order.
    async fn run_tools(&self, calls: &[ToolCall]) -> Vec<ToolResult> {
        let limit = self.agent.parallel_tool_calls.max(1) as usize;
        let mut pending: Vec<BoxFuture<'_, ToolResult>> = Vec::with_capacity(calls.len());
        for call in calls {
            pending.push(Box::pin(self.run_tool(call)));
        }
        futures::stream::iter(pending)
            .buffered(limit)
            .collect()
            .await
    }

    async fn run_tool(&self, call: &ToolCall) -> ToolResult {
        let started = Instant::now();
        let found = self.offered.iter().find(|o| o.tool.def().name == call.name);
        let outcome = match found {
            None => {
                let names: Vec<&str> = self
                    .offered
                    .iter()
                    .map(|o| o.tool.def().name.as_str())
                    .collect();
                ToolOutcome::error(format!(
                    "unknown tool `{}`; the tools are: {}",
                    call.name,
                    names.join(", ")
                ))
            }
            Some(o) => match check_arguments(o.validator.as_ref(), &call.arguments) {
                Err(problem) => ToolOutcome::error(format!(
                    "invalid arguments for `{}`: {problem}. Call it again with arguments matching its parameters schema.",
                    call.name
                )),
                Ok(()) => o.tool.call(&call.arguments, &self.tool_cx).await,
            },
        };
        ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            output: outcome.output,
            is_error: outcome.is_error,
            latency_ms: started.elapsed().as_millis() as u64,
            run_id: outcome.run_id,
            cost: outcome.cost,
        }
    }
}

/// The turns of step `step_index` a previous attempt committed: 1, 2, … up to the first gap
/// (a turn after a gap cannot be trusted to follow from the ones before it).
fn committed_turns(turns: &[AgentTurn], step_index: u32) -> Vec<AgentTurn> {
    let mut mine: Vec<&AgentTurn> = turns
        .iter()
        .filter(|t| t.step_index == step_index)
        .collect();
    mine.sort_by_key(|t| t.turn);
    mine.into_iter()
        .enumerate()
        .take_while(|(i, t)| t.turn == *i as u32 + 1)
        .map(|(_, t)| t.clone())
        .collect()
}

fn check_arguments(validator: Option<&jsonschema::Validator>, args: &Value) -> Result<(), String> {
    if let Value::String(raw) = args {
        return Err(format!(
            "they are not a JSON object: {}",
            super::structured::cut_text(raw)
        ));
    }
    let Some(validator) = validator else {
        return Ok(());
    };
    let errors: Vec<String> = validator
        .iter_errors(args)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at `{at}`: {e}")
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The final answer: the text, or JSON valid against `output.schema`.
fn parse_answer(text: &str, agent: &AgentSpec) -> Result<Value, String> {
    match &agent.output {
        None => Ok(Value::String(text.to_owned())),
        Some(o) => super::structured::validate(text, Some(&o.schema)),
    }
}

fn usage_since(after: &Usage, before: &Usage) -> Usage {
    Usage {
        input_tokens: after.input_tokens.saturating_sub(before.input_tokens),
        output_tokens: after.output_tokens.saturating_sub(before.output_tokens),
        cached_tokens: after.cached_tokens.saturating_sub(before.cached_tokens),
        reasoning_tokens: after
            .reasoning_tokens
            .saturating_sub(before.reasoning_tokens),
    }
}

fn cost_since(after: &Cost, before: &Cost) -> Cost {
    let unknown: BTreeSet<String> = after
        .unknown_models
        .difference(&before.unknown_models)
        .cloned()
        .collect();
    Cost {
        usd: (after.usd - before.usd).max(0.0),
        unknown_models: unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let v = jsonschema::validator_for(&schema).unwrap();
        assert_eq!(check_arguments(Some(&v), &json!({"city": "Paris"})), Ok(()));
        let e = check_arguments(Some(&v), &json!({"city": 3})).unwrap_err();
        assert!(e.starts_with("at `/city`"), "{e}");
        let e = check_arguments(Some(&v), &json!({})).unwrap_err();
        assert!(e.contains("\"city\" is a required property"), "{e}");
        let e = check_arguments(Some(&v), &json!("{city: Paris")).unwrap_err();
        assert!(e.starts_with("they are not a JSON object"), "{e}");
    }
}
