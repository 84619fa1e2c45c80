//! A `flowrun test` or `flowrun eval` as one trace: a session span (`flowrun test`,
//! `flowrun eval`) whose children are the span trees of every run it made, each case's run
//! span carrying the case's result (`flowrun.test.case`, `flowrun.test.pass`, …).
//!
//! A run ends before its case is scored (assertions, judges), so a case sink keeps each run
//! span open until [`OtelSink::case_finished`] adds the result; spans still waiting when the
//! session ends (a cancelled case, an agent's tool run) end then, at their own end times.

use std::sync::Arc;
use std::time::SystemTime;

use flowrun_core::eval::EvalReport;
use flowrun_core::testing::{SuiteReport, Summary};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Status};

use crate::sink::{Held, Parent, cost_attribute, usage_attributes};
use crate::span::{OpenSpan, Pipeline};
use crate::{OtelSink, Shared, SinkOptions};

/// One test or eval session's span and the sinks of its executors. Ending it (or dropping
/// it) ends the session span; flush with [`crate::Exporter::shutdown`] afterwards.
pub struct Session {
    pipeline: Arc<Pipeline>,
    shared: Arc<Shared>,
    /// `None` when the sampler dropped the session's trace.
    span: Option<OpenSpan>,
    held: Arc<Held>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn start(
        pipeline: Arc<Pipeline>,
        shared: Arc<Shared>,
        name: &'static str,
        attributes: Vec<KeyValue>,
    ) -> Session {
        let span = pipeline
            .start(None)
            .map(|ids| OpenSpan::new(ids, name, SpanKind::Internal, SystemTime::now(), attributes));
        Session {
            pipeline,
            shared,
            span,
            held: Arc::default(),
        }
    }

    fn parent(&self) -> Parent {
        match &self.span {
            Some(span) => Parent::Span(span.ids()),
            None => Parent::Dropped,
        }
    }

    /// A sink for the executor that runs the cases: its run spans are children of the
    /// session's and wait for [`OtelSink::case_finished`].
    pub fn case_sink(&self, options: SinkOptions) -> OtelSink {
        OtelSink::new(
            self.pipeline.clone(),
            options,
            self.shared.clone(),
            self.parent(),
            Some(self.held.clone()),
        )
    }

    /// A sink for another executor of the session (a judge): run spans under the session's.
    pub fn sink(&self, options: SinkOptions) -> OtelSink {
        OtelSink::new(
            self.pipeline.clone(),
            options,
            self.shared.clone(),
            self.parent(),
            None,
        )
    }

    /// Ends a `flowrun test` session with the suite's counts and verdict.
    pub fn end_test(mut self, report: &SuiteReport) {
        let Some(span) = &mut self.span else {
            return;
        };
        let mut attributes = summary_attributes("flowrun.test", &report.summary);
        attributes.push(KeyValue::new(
            "flowrun.test.min_pass_rate",
            report.min_pass_rate,
        ));
        attributes.push(KeyValue::new("flowrun.test.passed", report.passed()));
        usage_attributes(&mut attributes, &report.summary.usage);
        cost_attribute(&mut attributes, &report.summary.cost);
        span.add(attributes);
        if report.passed() {
            span.set_status(Status::Ok);
        } else {
            span.set_status(Status::error(format!(
                "{} of {} cases failed",
                report.summary.failed, report.summary.runs
            )));
        }
    }

    /// Ends a `flowrun eval` session with both sides' results and the verdict.
    pub fn end_eval(mut self, report: &EvalReport) {
        let Some(span) = &mut self.span else {
            return;
        };
        let mut attributes = summary_attributes("flowrun.eval.draft", &report.draft);
        attributes.extend(summary_attributes(
            "flowrun.eval.baseline",
            &report.baseline_summary,
        ));
        attributes.extend([
            KeyValue::new("flowrun.eval.verdict", report.verdict.as_str()),
            KeyValue::new("flowrun.eval.draft_wins", report.draft_wins as i64),
            KeyValue::new("flowrun.eval.baseline_wins", report.baseline_wins as i64),
            KeyValue::new("flowrun.eval.ties", report.ties as i64),
            KeyValue::new("flowrun.eval.p_value", report.p_value),
        ]);
        // Both sides' calls were paid for (judges' are on their own run spans).
        let mut cost = report.draft.cost.clone();
        cost.add(&report.baseline_summary.cost);
        cost_attribute(&mut attributes, &cost);
        span.add(attributes);
        span.set_status(Status::Ok);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The runs' spans first, so that those that wait for a case are held.
        self.pipeline.build_all();
        self.held.end_all(&self.pipeline);
        if let Some(span) = self.span.take() {
            self.pipeline.end(span, SystemTime::now());
        }
    }
}

/// `PREFIX.cases`, `.pass_count`, `.fail_count`, `.pass_rate`, `.mean_score`.
fn summary_attributes(prefix: &str, summary: &Summary) -> Vec<KeyValue> {
    vec![
        KeyValue::new(format!("{prefix}.cases"), summary.runs as i64),
        KeyValue::new(format!("{prefix}.pass_count"), summary.passed as i64),
        KeyValue::new(format!("{prefix}.fail_count"), summary.failed as i64),
        KeyValue::new(format!("{prefix}.pass_rate"), summary.pass_rate),
        KeyValue::new(format!("{prefix}.mean_score"), summary.mean_score),
    ]
}

#[cfg(test)]
mod tests {
    use flowrun_core::cost::Cost;
    use flowrun_core::event::{RunEnd, RunStart};
    use flowrun_core::provider::Usage;
    use flowrun_core::testing::CaseResult;
    use flowrun_core::{EventSink as _, RunEvent, RunStatus};
    use opentelemetry_sdk::trace::SpanData;
    use serde_json::json;

    use super::*;
    use crate::span::testing::pipeline;

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    fn run(sink: &OtelSink, id: &str, start_ms: i64, end_ms: i64) {
        sink.emit(&RunEvent::RunStarted(RunStart {
            run_id: id.into(),
            target_kind: "prompt".into(),
            target: "p".into(),
            version: "v1".into(),
            input: json!({}),
            started_at_ms: start_ms,
        }));
        sink.emit(&RunEvent::RunFinished(RunEnd {
            run_id: id.into(),
            status: RunStatus::Succeeded,
            output: None,
            usage: Usage::default(),
            cost: Cost::known(0.5),
            latency_ms: 0,
            error: None,
            finished_at_ms: end_ms,
        }));
    }

    fn result(case: &str, run_id: Option<&str>, pass: bool) -> CaseResult {
        CaseResult {
            file: "tests/p.test.yaml".into(),
            case: case.into(),
            index: 0,
            repeat: 1,
            target: "prompt/p".into(),
            tags: vec![],
            input: json!({}),
            run_id: run_id.map(str::to_string),
            status: if run_id.is_some() {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            output: None,
            output_text: String::new(),
            error: run_id.is_none().then(|| "invalid input".to_string()),
            assertions: vec![],
            score: if pass { 1.0 } else { 0.0 },
            pass,
            latency_ms: 3,
            usage: Usage::default(),
            cost: Cost::known(0.5),
            cached: false,
        }
    }

    /// A scored case's run carries its result; a run no case claims (an agent's tool run)
    /// ends with the session at its own end time; a case without a run gets a span.
    #[test]
    fn cases_land_on_their_runs_under_the_session() {
        let (pipeline, collect) = pipeline();
        let session = Session::start(pipeline.clone(), Arc::default(), "flowrun test", vec![]);
        let sink = session.case_sink(SinkOptions::default().label("flowrun.eval.side", "draft"));
        run(&sink, "r1", 1_000, 1_500);
        run(&sink, "tool", 1_100, 1_200);
        assert!(collect.spans().is_empty(), "run spans wait for their case");
        let first = result("first", Some("r1"), true);
        sink.case_finished(&first);
        sink.case_finished(&result("broken", None, false));
        let report = SuiteReport::new(0, 10, 1.0, vec![first, result("broken", None, false)]);
        session.end_test(&report);
        pipeline.force_flush().unwrap();
        let spans = collect.spans();
        assert_eq!(spans.len(), 4, "{spans:#?}");
        let by_name = |n: &str| spans.iter().filter(|s| s.name == n).collect::<Vec<_>>();
        let root = by_name("flowrun test")[0];
        assert_eq!(attr(root, "flowrun.test.pass_count").as_deref(), Some("1"));
        assert_eq!(attr(root, "flowrun.test.passed").as_deref(), Some("false"));
        assert_eq!(root.status, Status::error("1 of 2 cases failed"));
        assert_eq!(attr(root, "flowrun.cost_usd").as_deref(), Some("1"));
        for s in spans.iter().filter(|s| s.name != "flowrun test") {
            assert_eq!(s.parent_span_id, root.span_context.span_id(), "{s:#?}");
            assert_eq!(attr(s, "flowrun.eval.side").as_deref(), Some("draft"));
        }
        let runs = by_name("prompt p");
        let scored = runs
            .iter()
            .find(|s| attr(s, "flowrun.run_id").as_deref() == Some("r1"))
            .unwrap();
        assert_eq!(attr(scored, "flowrun.test.case").as_deref(), Some("first"));
        assert_eq!(attr(scored, "flowrun.test.pass").as_deref(), Some("true"));
        assert_eq!(scored.end_time, crate::sink::time(1_500));
        let tool = runs
            .iter()
            .find(|s| attr(s, "flowrun.run_id").as_deref() == Some("tool"))
            .unwrap();
        assert_eq!(attr(tool, "flowrun.test.case"), None);
        assert_eq!(tool.end_time, crate::sink::time(1_200));
        let broken = by_name("case broken")[0];
        assert_eq!(attr(broken, "flowrun.test.pass").as_deref(), Some("false"));
        assert_eq!(broken.status, Status::error("invalid input"));
    }
}
