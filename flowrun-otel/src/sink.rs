//! `OtelSink`: the executor's events as a span tree, run → step → model call attempt, with
//! the GenAI semantic convention attributes and flowrun's own (`flowrun.*`).
//!
//! Spans take their times from the events (a call attempt is reported when it is over, with
//! its start and latency), so the tree shows what happened even though it is built after the
//! fact: an event is only copied into the sink's log when it is emitted (`log.rs`), and its
//! spans are built from the log by the exporter's builder thread a round later (`span.rs`).
//! Prompt and completion text are added only with `capture_content`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowrun_core::provider::Usage;
use flowrun_core::spec::ProjectConfig;
use flowrun_core::testing::CaseResult;
use flowrun_core::{EventSink, RunEvent, RunStatus};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Status};

use crate::attributes::Attributes;
use crate::log;
use crate::span::{Ids, OpenSpan, Pipeline};
use crate::{Shared, lock};

/// What a sink adds beyond names, models, tokens and costs.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Rendered messages and completions on step spans (`telemetry.capture_content`).
    pub capture_content: bool,
    /// Provider name in the project → its kind (`openai`, `anthropic`, `mock`), the value of
    /// `gen_ai.system`.
    pub systems: HashMap<String, String>,
    /// `flowrun.env` of every run (the server labels each run instead).
    pub env: Option<String>,
    /// More attributes of every run span, e.g. `flowrun.eval.side` or `flowrun.role`.
    pub labels: Vec<(&'static str, String)>,
}

impl SinkOptions {
    /// The options a project's `flowrun.yaml` asks for.
    pub fn from_config(config: &ProjectConfig) -> SinkOptions {
        SinkOptions {
            capture_content: config.telemetry.capture_content,
            systems: config
                .providers
                .iter()
                .map(|(name, p)| (name.clone(), p.kind.as_str().to_string()))
                .collect(),
            env: None,
            labels: Vec::new(),
        }
    }

    /// These options with `key: value` on every run span.
    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> SinkOptions {
        self.labels.push((key, value.into()));
        self
    }
}

/// The parent of a sink's run spans.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Parent {
    /// None: every run is the root of a trace of its own, sampled or not.
    Root,
    /// A session's span.
    Span(Ids),
    /// A session the sampler dropped: nothing of its runs is recorded.
    Dropped,
}

/// Builds spans from run events; one per executor, many per [`crate::Exporter`]. Emitting
/// an event copies what its spans need into the sink's log (`log.rs`); the spans are built
/// from the log by the exporter's builder thread (see [`Pipeline::builds_later`]).
pub struct OtelSink {
    core: Arc<SinkCore>,
}

/// What the builder thread needs of a sink: its log and everything that builds spans from it.
pub(crate) struct SinkCore {
    pipeline: Arc<Pipeline>,
    /// Events emitted and not yet built (`log.rs`).
    log: Mutex<Vec<u8>>,
    /// The events being built: whoever holds it builds (one at a time, so in order), and
    /// its room is the log's next.
    building: Mutex<Vec<u8>>,
    capture_content: bool,
    /// Provider name → `gen_ai.system`: a project has a few providers, and a scan of a few
    /// short names costs less than hashing one with SipHash at every step and call.
    systems: Vec<(String, String)>,
    /// `flowrun.env` and the options' labels, on every run span.
    run_attributes: Vec<KeyValue>,
    shared: Arc<Shared>,
    /// The parent of every run span: a [`crate::Session`]'s span, or none (a root per run).
    parent: Parent,
    /// The session's run spans waiting for their case's result, when this sink runs cases.
    held: Option<Arc<Held>>,
    /// The recorded runs in progress (an unsampled run is not here, so its events cost a
    /// copy into the log and a lookup, nothing more).
    runs: OpenRuns,
}

/// The open runs by run id, hashed with foldhash (a run id is looked up at every event, and
/// SipHash showed in profiles). One lock: spans are built on the span builder's thread, and
/// another thread builds only now and then (a test case's result, a sink dropped).
type OpenRuns = Mutex<HashMap<String, OpenRun, foldhash::fast::RandomState>>;

struct OpenRun {
    span: OpenSpan,
    /// The open steps by index: one at a time, or a few in parallel.
    steps: Vec<(u32, OpenSpan)>,
}

impl OpenRun {
    fn step(&self, index: u32) -> Option<Ids> {
        self.steps
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, span)| span.ids())
    }
}

/// Run spans that ended but stay open until their test case is scored
/// ([`OtelSink::case_finished`]), each with its end time; the rest end with the session.
#[derive(Default)]
pub(crate) struct Held(Mutex<HashMap<String, (OpenSpan, SystemTime)>>);

impl Held {
    /// Ends every run span still waiting, at its own end time.
    pub(crate) fn end_all(&self, pipeline: &Pipeline) {
        let waiting: Vec<_> = lock(&self.0).drain().collect();
        for (_, (span, end)) in waiting {
            pipeline.end(span, end);
        }
    }
}

impl OtelSink {
    pub(crate) fn new(
        pipeline: Arc<Pipeline>,
        options: SinkOptions,
        shared: Arc<Shared>,
        parent: Parent,
        held: Option<Arc<Held>>,
    ) -> OtelSink {
        let mut run_attributes = Vec::new();
        if let Some(env) = options.env {
            run_attributes.push(KeyValue::new("flowrun.env", env));
        }
        for (k, v) in options.labels {
            run_attributes.push(KeyValue::new(k, v));
        }
        let core = Arc::new(SinkCore {
            pipeline,
            log: Mutex::default(),
            building: Mutex::default(),
            capture_content: options.capture_content,
            systems: options.systems.into_iter().collect(),
            run_attributes,
            shared,
            parent,
            held,
            runs: Mutex::default(),
        });
        core.pipeline.register(&core);
        OtelSink { core }
    }
}

impl SinkCore {
    /// The `gen_ai.system` of a provider of the project.
    fn system(&self, provider: &str) -> Option<&str> {
        self.systems
            .iter()
            .find(|(name, _)| name == provider)
            .map(|(_, system)| system.as_str())
    }

    /// The ids of a new run (or case) span under the sink's parent; `None` when its trace is
    /// not recorded.
    fn start_run_span(&self) -> Option<(Ids, opentelemetry::trace::SpanId)> {
        match self.parent {
            Parent::Root => self.pipeline.start(None),
            Parent::Span(ids) => self.pipeline.start(Some(ids)),
            Parent::Dropped => None,
        }
    }

    /// [`OtelSink::case_finished`], once the sink's log is built.
    fn case_finished(&self, result: &CaseResult) {
        let held = self.held.as_ref().and_then(|held| {
            let id = result.run_id.as_ref()?;
            lock(&held.0).remove(id)
        });
        let attributes = || {
            vec![
                KeyValue::new("flowrun.test.file", result.file.clone()),
                KeyValue::new("flowrun.test.case", result.case.clone()),
                KeyValue::new("flowrun.test.repeat", i64::from(result.repeat)),
                KeyValue::new("flowrun.test.pass", result.pass),
                KeyValue::new("flowrun.test.score", result.score),
            ]
        };
        if let Some((mut span, end)) = held {
            span.add(attributes());
            self.pipeline.end(span, end);
            return;
        }
        let Some(ids) = self.start_run_span() else {
            return;
        };
        let mut attributes = attributes();
        attributes.extend(self.run_attributes.iter().cloned());
        let end = SystemTime::now();
        let mut span = OpenSpan::new(
            ids,
            format!("case {}", result.case),
            SpanKind::Internal,
            before(end, result.latency_ms),
            attributes,
        );
        if let Some(error) = &result.error {
            span.set_status(Status::error(error.clone()));
        }
        self.pipeline.end(span, end);
    }

    fn run_started(&self, start: &log::RunStarted<'_>) {
        let labels = self.shared.take(start.run_id);
        let Some(ids) = self.start_run_span() else {
            return;
        };
        // Room for the attributes `run_finished` adds.
        let mut attributes = Attributes::with_capacity(RUN_BYTES);
        attributes.str("gen_ai.operation.name", "invoke_workflow");
        attributes.str("flowrun.run_id", start.run_id);
        attributes.str("flowrun.target_kind", start.target_kind);
        attributes.str("flowrun.flow", start.target);
        attributes.str("flowrun.version", start.version);
        for kv in &self.run_attributes {
            attributes.value(kv.key.as_str(), &kv.value);
        }
        for (k, v) in labels {
            attributes.str(k, &v);
        }
        if let Some(input) = start.input {
            attributes.str("flowrun.input", input);
        }
        let span = OpenSpan::encoded(
            ids,
            joined(start.target_kind, start.target),
            SpanKind::Internal,
            time(start.started_at_ms),
            attributes,
        );
        let run = OpenRun {
            span,
            steps: Vec::new(),
        };
        // A run id seen again (it should not be) replaces the older run, which ends now.
        let replaced = lock(&self.runs).insert(start.run_id.to_string(), run);
        if let Some(old) = replaced {
            self.end_run_now(old);
        }
    }

    fn step_started(&self, start: &log::StepStarted<'_>) {
        let mut runs = lock(&self.runs);
        let Some(run) = runs.get_mut(start.run_id) else {
            return;
        };
        let Some(ids) = self.pipeline.start(Some(run.span.ids())) else {
            return;
        };
        let (system, model) = split_model(start.model);
        // Room for the attributes `step_finished` adds to a step that succeeds. Kept under
        // 1 KiB: glibc serves a larger request from its large bins after consolidating the
        // fast bins, which cost more than the whole sink (BENCHMARKS.md).
        let mut attributes = Attributes::with_capacity(STEP_BYTES);
        attributes.str("gen_ai.operation.name", "chat");
        attributes.str("gen_ai.request.model", model);
        attributes.str("flowrun.step.id", start.step_id);
        attributes.int("flowrun.step.index", i64::from(start.step_index));
        attributes.str("flowrun.prompt", start.prompt);
        attributes.str("flowrun.version", start.version);
        if let Some(system) = self.system(system) {
            attributes.str("gen_ai.system", system);
            attributes.str("gen_ai.provider.name", system);
        }
        if let Some(messages) = start.messages {
            attributes.str("gen_ai.input.messages", messages);
        }
        let span = OpenSpan::encoded(
            ids,
            joined("step", start.step_id),
            SpanKind::Internal,
            time(start.started_at_ms),
            attributes,
        );
        run.steps.push((start.step_index, span));
    }

    fn call_attempt(&self, call: &log::CallAttempt<'_>) {
        let parent = lock(&self.runs)
            .get(call.run_id)
            .and_then(|run| run.step(call.step_index));
        let Some(ids) = parent.and_then(|parent| self.pipeline.start(Some(parent))) else {
            return;
        };
        let mut attributes = Attributes::with_capacity(CALL_BYTES);
        attributes.str("gen_ai.operation.name", "chat");
        attributes.str("gen_ai.request.model", call.model);
        attributes.str("flowrun.provider", call.provider);
        attributes.int("flowrun.attempt", i64::from(call.attempt));
        attributes.bool("flowrun.cached", call.cached);
        attributes.bool("flowrun.repair", call.repair);
        if let Some(system) = self.system(call.provider) {
            attributes.str("gen_ai.system", system);
            attributes.str("gen_ai.provider.name", system);
        }
        if let Some(model) = call.response_model {
            attributes.str("gen_ai.response.model", model);
        }
        if let Some(id) = call.response_id {
            attributes.str("gen_ai.response.id", id);
        }
        if call.error_kind.is_none() {
            token_attributes(&mut attributes, call.tokens);
        }
        spend_attribute(&mut attributes, call.spend);
        if let Some(kind) = call.error_kind {
            attributes.str("error.type", kind);
        }
        let start = time(call.started_at_ms);
        let mut span = OpenSpan::encoded(
            ids,
            joined("chat", call.model),
            SpanKind::Client,
            start,
            attributes,
        );
        if call.error_kind.is_some() {
            // The message was redacted of keys by the provider layer; it names the failure.
            let message = call.error_message.unwrap_or_default();
            span.set_status(Status::error(message.to_string()));
        }
        self.pipeline.end(span, after(start, call.latency_ms));
    }

    fn step_finished(&self, record: &log::StepEnded<'_>) {
        let (run_ids, step) = {
            let mut runs = lock(&self.runs);
            let Some(run) = runs.get_mut(record.run_id) else {
                return;
            };
            let step = run
                .steps
                .iter()
                .position(|(index, _)| *index == record.step_index)
                .map(|at| run.steps.swap_remove(at).1);
            (run.span.ids(), step)
        };
        let end = record.ended_at;
        let mut span = match step {
            Some(span) => span,
            None => {
                // A resumed run's reused step: no `StepStarted` came.
                let Some(ids) = self.pipeline.start(Some(run_ids)) else {
                    return;
                };
                let mut attributes = Attributes::with_capacity(STEP_BYTES);
                attributes.str("flowrun.step.id", record.step_id);
                attributes.int("flowrun.step.index", i64::from(record.step_index));
                attributes.str("flowrun.prompt", record.prompt);
                OpenSpan::encoded(
                    ids,
                    joined("step", record.step_id),
                    SpanKind::Internal,
                    before(end, record.latency_ms),
                    attributes,
                )
            }
        };
        span.add_with(|attributes| {
            attributes.str("flowrun.status", record.status.as_str());
            attributes.int("flowrun.attempts", i64::from(record.attempts));
            attributes.bool("flowrun.cached", record.cached);
            attributes.bool("flowrun.reused", record.reused);
            if let Some(model) = record.model {
                let (_, model) = split_model(model);
                attributes.str("gen_ai.response.model", model);
            }
            token_attributes(attributes, record.tokens);
            spend_attribute(attributes, record.spend);
            if let Some(text) = record.output_text {
                let output = serde_json::json!([{"role": "assistant", "content": text}]);
                attributes.str("gen_ai.output.messages", &output.to_string());
            }
        });
        if record.status == RunStatus::Failed {
            let error = record.error.unwrap_or_default();
            span.set_status(Status::error(error.to_string()));
        }
        self.pipeline.end(span, end);
    }

    fn run_finished(&self, end: &log::RunFinished<'_>) {
        let Some(run) = lock(&self.runs).remove(end.run_id) else {
            return;
        };
        let OpenRun { mut span, steps } = run;
        span.add_with(|attributes| {
            attributes.str("flowrun.status", end.status.as_str());
            token_attributes(attributes, end.tokens);
            spend_attribute(attributes, end.spend);
            if let Some(output) = end.output {
                attributes.str("flowrun.output", output);
            }
        });
        match end.status {
            RunStatus::Failed | RunStatus::Cancelled => span.set_status(Status::error(
                end.error.unwrap_or(end.status.as_str()).to_string(),
            )),
            _ => span.set_status(Status::Ok),
        }
        // Steps left open (a cancelled run) end with it.
        let finished = time(end.finished_at_ms);
        for (_, step) in steps {
            self.pipeline.end(step, finished);
        }
        match &self.held {
            // A test case's run: its span waits for the case's result.
            Some(held) => {
                let replaced = lock(&held.0).insert(end.run_id.to_string(), (span, finished));
                if let Some((old, at)) = replaced {
                    self.pipeline.end(old, at);
                }
            }
            None => self.pipeline.end(span, finished),
        }
    }

    /// Ends a run that never finished, and its open steps, now (as the SDK ended a span that
    /// was dropped).
    fn end_run_now(&self, run: OpenRun) {
        let now = SystemTime::now();
        for (_, step) in run.steps {
            self.pipeline.end(step, now);
        }
        self.pipeline.end(run.span, now);
    }

    /// Builds the spans of every event logged so far, in order; one caller at a time.
    pub(crate) fn build(&self) {
        let mut records = lock(&self.building);
        std::mem::swap(&mut *records, &mut *lock(&self.log));
        for record in log::Reader::new(&records) {
            match record {
                log::Record::RunStarted(start) => self.run_started(&start),
                log::Record::StepStarted(start) => self.step_started(&start),
                log::Record::CallAttempt(call) => self.call_attempt(&call),
                log::Record::StepEnded(record) => self.step_finished(&record),
                log::Record::RunFinished(end) => self.run_finished(&end),
            }
        }
        records.clear();
        // A burst with captured content can grow it large; do not keep that room for ever.
        if records.capacity() > LOG_KEPT {
            *records = Vec::new();
        }
    }

    /// Ends every open run, and its open steps, now.
    fn end_open_runs(&self) {
        let open: Vec<_> = lock(&self.runs).drain().collect();
        for (_, run) in open {
            self.end_run_now(run);
        }
    }
}

impl OtelSink {
    /// Adds a test case's result to the span of its run (`flowrun.test.*`), which a session's
    /// case sink kept open for it; a case whose run never started gets a span of its own.
    pub fn case_finished(&self, result: &CaseResult) {
        // The run's events first, so that its span is the one held.
        self.core.build();
        self.core.case_finished(result);
    }
}

impl Drop for OtelSink {
    fn drop(&mut self) {
        self.core.build();
        self.core.end_open_runs();
    }
}

impl EventSink for OtelSink {
    /// Copies what the spans need of the event into the sink's log (an agent turn adds
    /// nothing: its model calls arrive as `CallAttempt`s, its tools' runs as runs of their
    /// own); the spans are built from it on the exporter's builder thread (or at once, in the
    /// handlers' tests).
    fn emit(&self, event: &RunEvent) {
        let core = &self.core;
        let logged = {
            let mut log = lock(&core.log);
            let before = log.len();
            log::write(&mut log, event, core.capture_content).then_some((before, log.len()))
        };
        match logged {
            Some(_) if !core.pipeline.builds_later() => core.build(),
            // Once, as the log grows past the mark, not at every event after it.
            Some((before, after)) if before < LOG_WAKE && after >= LOG_WAKE => {
                core.pipeline.wake_builder();
            }
            _ => {}
        }
    }
}

/// A span name: `first second` (built without the formatting machinery, which cost more
/// than the rest of the span's name on every run).
fn joined(first: &str, second: &str) -> String {
    let mut name = String::with_capacity(first.len() + 1 + second.len());
    name.push_str(first);
    name.push(' ');
    name.push_str(second);
    name
}

/// `provider/model` → (`provider`, `model`); a bare name has no provider.
fn split_model(model: &str) -> (&str, &str) {
    model.split_once('/').unwrap_or(("", model))
}

/// A log this long wakes the builder thread before its next round.
const LOG_WAKE: usize = 256 * 1024;
/// The most room a sink's log keeps once built.
const LOG_KEPT: usize = 4 * LOG_WAKE;

/// Room for the encoded attributes of a run span, a step span and a call span that succeed
/// (ids, names and models of usual lengths), so that adding them seldom grows the buffer.
const RUN_BYTES: usize = 384;
const STEP_BYTES: usize = 512;
const CALL_BYTES: usize = 512;

/// `gen_ai.usage.input_tokens` and `gen_ai.usage.output_tokens`.
fn token_attributes(attributes: &mut Attributes, tokens: log::Tokens) {
    attributes.int("gen_ai.usage.input_tokens", tokens.input as i64);
    attributes.int("gen_ai.usage.output_tokens", tokens.output as i64);
}

/// `flowrun.cost_usd` when every price is known; otherwise the models that lack one.
fn spend_attribute(attributes: &mut Attributes, spend: log::Spend<'_>) {
    match spend {
        log::Spend::Usd(usd) => attributes.value("flowrun.cost_usd", &usd.into()),
        log::Spend::Unknown(models) => attributes.str("flowrun.cost_unknown_models", models),
    }
}

pub(crate) fn usage_attributes(attributes: &mut impl Extend<KeyValue>, usage: &Usage) {
    attributes.extend([
        KeyValue::new("gen_ai.usage.input_tokens", usage.input_tokens as i64),
        KeyValue::new("gen_ai.usage.output_tokens", usage.output_tokens as i64),
    ]);
}

/// `flowrun.cost_usd` when every price is known; otherwise the models that lack one.
pub(crate) fn cost_attribute(
    attributes: &mut impl Extend<KeyValue>,
    cost: &flowrun_core::cost::Cost,
) {
    let attribute = match cost.usd_if_known() {
        Some(usd) => KeyValue::new("flowrun.cost_usd", usd),
        None => KeyValue::new(
            "flowrun.cost_unknown_models",
            cost.unknown_models
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    attributes.extend([attribute]);
}

pub(crate) fn time(ms: i64) -> SystemTime {
    after(UNIX_EPOCH, ms.max(0) as u64)
}

/// `ms` after `t`, or `t` itself if that is not a time the system can hold.
fn after(t: SystemTime, ms: u64) -> SystemTime {
    t.checked_add(Duration::from_millis(ms)).unwrap_or(t)
}

/// `ms` before `t`, or the epoch if that is not a time the system can hold.
fn before(t: SystemTime, ms: u64) -> SystemTime {
    t.checked_sub(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use flowrun_core::cost::Cost;
    use flowrun_core::event::{CallFailure, CallRecord, RunEnd, RunStart, StepRecord, StepStart};
    use opentelemetry_sdk::trace::SpanData;
    use serde_json::json;

    use super::*;
    use crate::span::testing::{Collect, pipeline};

    fn sink(capture: bool) -> (OtelSink, Arc<Pipeline>, Collect) {
        let (pipeline, collect) = pipeline();
        let options = SinkOptions {
            capture_content: capture,
            systems: [("claude".to_string(), "anthropic".to_string())].into(),
            env: Some("local".into()),
            labels: Vec::new(),
        };
        let sink = OtelSink::new(
            pipeline.clone(),
            options,
            Arc::default(),
            Parent::Root,
            None,
        );
        (sink, pipeline, collect)
    }

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    fn step(index: u32, status: RunStatus, error: Option<&str>) -> StepRecord {
        StepRecord {
            run_id: "r1".into(),
            step_index: index,
            step_id: format!("s{index}"),
            prompt: "p".into(),
            status,
            output_text: Some("the answer".into()),
            output: Some(json!("the answer")),
            model: Some("claude/sonnet".into()),
            usage: Usage::default(),
            cost: Cost::unknown("sonnet"),
            latency_ms: 5,
            attempts: 2,
            error: error.map(str::to_string),
            cached: false,
            agent: None,
        }
    }

    /// A resumed run whose reused first step has no `StepStarted`, and whose second step's
    /// first attempt fails (rate limited) before the fallback fails too.
    #[test]
    fn failures_reused_steps_and_withheld_content() {
        let (sink, pipeline, collect) = sink(false);
        sink.emit(&RunEvent::RunStarted(RunStart {
            run_id: "r1".into(),
            target_kind: "flow".into(),
            target: "f".into(),
            version: "v1".into(),
            input: json!({"q": "private"}),
            started_at_ms: 1_000,
        }));
        sink.emit(&RunEvent::StepReused(step(0, RunStatus::Succeeded, None)));
        sink.emit(&RunEvent::StepStarted(StepStart {
            run_id: "r1".into(),
            step_index: 1,
            step_id: "s1".into(),
            prompt: "p".into(),
            version: "v1".into(),
            model: "claude/sonnet".into(),
            messages: vec![],
            started_at_ms: 1_010,
        }));
        sink.emit(&RunEvent::CallAttempt(CallRecord {
            run_id: "r1".into(),
            step_index: 1,
            attempt: 1,
            provider: "claude".into(),
            model: "sonnet".into(),
            started_at_ms: 1_010,
            latency_ms: 7,
            usage: Usage::default(),
            cost: Cost::known(0.0),
            error: Some(CallFailure {
                kind: "rate_limited".into(),
                message: "429 Too Many Requests".into(),
            }),
            raw_response: None,
            repair: false,
            cached: false,
        }));
        sink.emit(&RunEvent::StepFinished(step(
            1,
            RunStatus::Failed,
            Some("gave up"),
        )));
        sink.emit(&RunEvent::RunFinished(RunEnd {
            run_id: "r1".into(),
            status: RunStatus::Failed,
            output: None,
            usage: Usage::default(),
            cost: Cost::unknown("sonnet"),
            latency_ms: 30,
            error: Some("step s1 failed".into()),
            finished_at_ms: 1_030,
        }));
        pipeline.force_flush().unwrap();
        let spans = collect.spans();
        assert_eq!(spans.len(), 4, "{spans:#?}");
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        let run = by_name("flow f");
        assert_eq!(attr(run, "flowrun.env").as_deref(), Some("local"));
        assert_eq!(attr(run, "flowrun.status").as_deref(), Some("failed"));
        assert_eq!(run.status, Status::error("step s1 failed"));
        assert_eq!(
            attr(run, "flowrun.cost_unknown_models").as_deref(),
            Some("sonnet")
        );
        let reused = by_name("step s0");
        assert_eq!(reused.parent_span_id, run.span_context.span_id());
        assert_eq!(attr(reused, "flowrun.reused").as_deref(), Some("true"));
        let failed = by_name("step s1");
        assert_eq!(failed.status, Status::error("gave up"));
        let call = by_name("chat sonnet");
        assert_eq!(call.parent_span_id, failed.span_context.span_id());
        assert_eq!(call.span_kind, SpanKind::Client);
        assert_eq!(attr(call, "error.type").as_deref(), Some("rate_limited"));
        assert_eq!(attr(call, "gen_ai.system").as_deref(), Some("anthropic"));
        assert_eq!(attr(call, "gen_ai.usage.input_tokens"), None);
        assert_eq!(call.start_time, time(1_010));
        assert_eq!(call.end_time, time(1_017));
        let text = format!("{spans:?}");
        assert!(!text.contains("private") && !text.contains("the answer"));
        assert!(
            lock(&sink.core.runs).is_empty(),
            "finished runs are forgotten"
        );
    }

    fn start(run: &str) -> RunEvent {
        RunEvent::RunStarted(RunStart {
            run_id: run.into(),
            target_kind: "prompt".into(),
            target: "p".into(),
            version: "v1".into(),
            input: json!({"q": "hello"}),
            started_at_ms: 2_000,
        })
    }

    fn step_start(run: &str) -> RunEvent {
        RunEvent::StepStarted(StepStart {
            run_id: run.into(),
            step_index: 0,
            step_id: "s0".into(),
            prompt: "p".into(),
            version: "v1".into(),
            model: "claude/sonnet".into(),
            messages: vec![],
            started_at_ms: 2_001,
        })
    }

    /// On the OTLP/HTTP queue, spans are built by the builder thread, a round after their
    /// events, with no flush or shutdown asked for; a sink dropped builds the rest of its log
    /// itself.
    #[test]
    fn the_builder_thread_builds_logged_runs_in_the_background() {
        use crate::batch::{Batcher, Settings};
        use std::time::{Duration, Instant};

        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = sent.clone();
        let send: crate::batch::Send = Box::new(move |_, spans| {
            counted.fetch_add(spans, std::sync::atomic::Ordering::SeqCst);
        });
        let settings = Settings {
            max_queue: 1_000,
            max_batch: 1_000,
            delay: Duration::from_millis(10),
        };
        let queue = Batcher::start(settings, send).unwrap();
        let pipeline = Arc::new(Pipeline::new(
            crate::span::Output::Encoded(queue),
            crate::config::Sampler::AlwaysOn,
        ));
        assert!(pipeline.builds_later());
        let new_sink = || {
            OtelSink::new(
                pipeline.clone(),
                SinkOptions::default(),
                Arc::default(),
                Parent::Root,
                None,
            )
        };
        let sink = new_sink();
        let run = |sink: &OtelSink, id: &str| {
            sink.emit(&start(id));
            sink.emit(&RunEvent::RunFinished(RunEnd {
                run_id: id.into(),
                status: RunStatus::Succeeded,
                output: None,
                usage: Usage::default(),
                cost: Cost::known(0.0),
                latency_ms: 1,
                error: None,
                finished_at_ms: 2_010,
            }));
        };
        run(&sink, "r1");
        let deadline = Instant::now() + Duration::from_secs(30);
        while sent.load(std::sync::atomic::Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "the builder never built the run");
            std::thread::sleep(Duration::from_millis(5));
        }
        let other = new_sink();
        other.emit(&start("r2"));
        other.emit(&step_start("r2"));
        drop(other);
        pipeline.shutdown().unwrap();
        // r1's run span, then r2's run and step spans, ended when its sink was dropped.
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// A successful one-step run: three spans, one trace, the tree and times from the
    /// events, content only because it is captured.
    #[test]
    fn a_run_is_a_trace_of_three_spans() {
        let (sink, pipeline, collect) = sink(true);
        sink.emit(&start("r2"));
        sink.emit(&step_start("r2"));
        sink.emit(&RunEvent::CallAttempt(CallRecord {
            run_id: "r2".into(),
            step_index: 0,
            attempt: 1,
            provider: "claude".into(),
            model: "sonnet".into(),
            started_at_ms: 2_002,
            latency_ms: 40,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 3,
                ..Usage::default()
            },
            cost: Cost::known(0.25),
            error: None,
            raw_response: Some(json!({"model": "sonnet-2", "id": "msg_1"})),
            repair: false,
            cached: false,
        }));
        let mut finished = step(0, RunStatus::Succeeded, None);
        finished.run_id = "r2".into();
        sink.emit(&RunEvent::StepFinished(finished));
        sink.emit(&RunEvent::RunFinished(RunEnd {
            run_id: "r2".into(),
            status: RunStatus::Succeeded,
            output: Some(json!("done")),
            usage: Usage::default(),
            cost: Cost::known(0.25),
            latency_ms: 50,
            error: None,
            finished_at_ms: 2_050,
        }));
        pipeline.force_flush().unwrap();
        let spans = collect.spans();
        assert_eq!(spans.len(), 3, "{spans:#?}");
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        let (run, step, call) = (
            by_name("prompt p"),
            by_name("step s0"),
            by_name("chat sonnet"),
        );
        let trace = run.span_context.trace_id();
        assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
        assert!(spans.iter().all(|s| s.span_context.is_sampled()));
        assert_eq!(run.parent_span_id, opentelemetry::trace::SpanId::INVALID);
        assert_eq!(step.parent_span_id, run.span_context.span_id());
        assert_eq!(call.parent_span_id, step.span_context.span_id());
        assert_eq!((run.start_time, run.end_time), (time(2_000), time(2_050)));
        assert_eq!(step.start_time, time(2_001));
        assert_eq!((call.start_time, call.end_time), (time(2_002), time(2_042)));
        assert_eq!(run.status, Status::Ok);
        assert_eq!(step.status, Status::Unset);
        assert_eq!(call.status, Status::Unset);
        assert_eq!(run.span_kind, SpanKind::Internal);
        assert_eq!(call.span_kind, SpanKind::Client);
        assert_eq!(attr(run, "flowrun.run_id").as_deref(), Some("r2"));
        assert_eq!(
            attr(run, "flowrun.input").as_deref(),
            Some(r#"{"q":"hello"}"#)
        );
        assert_eq!(attr(run, "flowrun.output").as_deref(), Some(r#""done""#));
        assert_eq!(attr(run, "flowrun.cost_usd").as_deref(), Some("0.25"));
        assert_eq!(attr(step, "gen_ai.system").as_deref(), Some("anthropic"));
        assert_eq!(
            attr(step, "gen_ai.request.model").as_deref(),
            Some("sonnet")
        );
        assert!(attr(step, "gen_ai.output.messages").is_some());
        assert_eq!(
            attr(call, "gen_ai.response.model").as_deref(),
            Some("sonnet-2")
        );
        assert_eq!(attr(call, "gen_ai.response.id").as_deref(), Some("msg_1"));
        assert_eq!(
            attr(call, "gen_ai.usage.input_tokens").as_deref(),
            Some("12")
        );
        assert_eq!(attr(call, "flowrun.attempt").as_deref(), Some("1"));
    }

    /// An unsampled run leaves nothing behind and exports nothing; a sink dropped with runs
    /// in progress ends them (as the SDK ended dropped spans).
    #[test]
    fn unsampled_runs_cost_nothing_and_open_runs_end_on_drop() {
        let collect = Collect::default();
        let off = Arc::new(Pipeline::in_place(
            crate::span::Output::Processor(Box::new(collect.clone())),
            crate::config::Sampler::AlwaysOff,
        ));
        let sink_off = OtelSink::new(
            off,
            SinkOptions::default(),
            Arc::default(),
            Parent::Root,
            None,
        );
        sink_off.emit(&start("r3"));
        sink_off.emit(&step_start("r3"));
        assert!(lock(&sink_off.core.runs).is_empty());
        drop(sink_off);
        let (pipeline, _) = pipeline();
        let dropped = OtelSink::new(
            pipeline,
            SinkOptions::default(),
            Arc::default(),
            Parent::Dropped,
            None,
        );
        dropped.emit(&start("r4"));
        dropped.case_finished(&CaseResult {
            file: "t.yaml".into(),
            case: "c".into(),
            index: 0,
            repeat: 1,
            target: "prompt/p".into(),
            tags: vec![],
            input: json!({}),
            run_id: None,
            status: RunStatus::Failed,
            output: None,
            output_text: String::new(),
            error: None,
            assertions: vec![],
            score: 0.0,
            pass: false,
            latency_ms: 1,
            usage: Usage::default(),
            cost: Cost::known(0.0),
            cached: false,
        });
        assert!(lock(&dropped.core.runs).is_empty());
        assert!(collect.spans().is_empty());

        let (sink, _, collect) = sink(false);
        sink.emit(&start("r5"));
        sink.emit(&step_start("r5"));
        drop(sink);
        let spans = collect.spans();
        assert_eq!(spans.len(), 2, "{spans:#?}");
        assert!(spans.iter().all(|s| s.end_time > time(2_001)));
    }

    /// Times and latencies far out of range neither panic nor break the encoding.
    #[test]
    fn extreme_times_do_not_panic() {
        let (sink, pipeline, collect) = sink(false);
        sink.emit(&RunEvent::RunStarted(RunStart {
            run_id: "r1".into(),
            target_kind: "flow".into(),
            target: "f".into(),
            version: "v1".into(),
            input: json!({}),
            started_at_ms: i64::MIN,
        }));
        sink.emit(&RunEvent::StepStarted(StepStart {
            run_id: "r1".into(),
            step_index: 1,
            step_id: "s1".into(),
            prompt: "p".into(),
            version: "v1".into(),
            model: "no-provider".into(),
            messages: vec![],
            started_at_ms: i64::MAX,
        }));
        sink.emit(&RunEvent::CallAttempt(CallRecord {
            run_id: "r1".into(),
            step_index: 1,
            attempt: u32::MAX,
            provider: String::new(),
            model: String::new(),
            started_at_ms: i64::MAX,
            latency_ms: u64::MAX,
            usage: Usage::default(),
            cost: Cost::known(f64::NAN),
            error: None,
            raw_response: Some(json!({"model": 3, "id": null})),
            repair: false,
            cached: false,
        }));
        let mut reused = step(0, RunStatus::Succeeded, None);
        reused.latency_ms = u64::MAX;
        sink.emit(&RunEvent::StepReused(reused));
        sink.emit(&RunEvent::RunFinished(RunEnd {
            run_id: "r1".into(),
            status: RunStatus::Cancelled,
            output: None,
            usage: Usage::default(),
            cost: Cost::unknown(""),
            latency_ms: u64::MAX,
            error: None,
            finished_at_ms: i64::MAX,
        }));
        pipeline.force_flush().unwrap();
        let spans = collect.spans();
        assert_eq!(spans.len(), 4, "{spans:#?}");
        let call = spans.iter().find(|s| s.name == "chat ").unwrap();
        assert!(call.end_time >= call.start_time);
        let mut encoder =
            crate::encode::Encoder::new(&opentelemetry_sdk::Resource::builder_empty().build());
        assert!(!encoder.encode(&spans).is_empty());
        let run = spans.iter().find(|s| s.name == "flow f").unwrap();
        assert_eq!(run.start_time, UNIX_EPOCH);
        assert_eq!(run.status, Status::error("cancelled"));
    }
}
