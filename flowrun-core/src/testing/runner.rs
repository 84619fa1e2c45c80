//! Running test cases: a bounded pool of concurrent runs, repeats for flakiness, fail-fast,
//! each output scored by its assertions.

use std::time::Instant;

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::cases::TestCase;
use super::result::CaseResult;
use crate::assert::{Hooks, Observed, case_score, evaluate};
use crate::cost::Cost;
use crate::event::RunStatus;
use crate::exec::{Executor, RunRequest};
use crate::provider::Usage;

/// How to run a set of cases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestOptions {
    /// Cases in flight at once.
    pub concurrency: usize,
    /// Runs of each case (flakiness shows as a pass rate between 0 and 1).
    pub repeat: u32,
    /// Stop starting cases after the first failure.
    pub fail_fast: bool,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            concurrency: 8,
            repeat: 1,
            fail_fast: false,
        }
    }
}

/// Runs every case `repeat` times; `on_result` sees each result as it lands. Results come
/// back in completion order; cancelled or skipped cases are left out.
pub async fn run_tests(
    executor: &Executor,
    cases: &[TestCase],
    options: &TestOptions,
    hooks: Hooks<'_>,
    on_result: &(dyn Fn(&CaseResult) + Send + Sync),
    cancel: &CancellationToken,
) -> Vec<CaseResult> {
    let stop = cancel.child_token();
    let jobs = cases
        .iter()
        .flat_map(|case| (1..=options.repeat.max(1)).map(move |repeat| (case, repeat)));
    futures::stream::iter(jobs)
        .map(|(case, repeat)| {
            let stop = stop.clone();
            async move {
                if stop.is_cancelled() {
                    return None;
                }
                let result = run_case(executor, case, repeat, hooks, &stop).await;
                if result.status == RunStatus::Cancelled {
                    return None;
                }
                on_result(&result);
                if options.fail_fast && !result.pass {
                    stop.cancel();
                }
                Some(result)
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .filter_map(futures::future::ready)
        .collect()
        .await
}

/// Runs one case once and scores it.
pub async fn run_case(
    executor: &Executor,
    case: &TestCase,
    repeat: u32,
    hooks: Hooks<'_>,
    cancel: &CancellationToken,
) -> CaseResult {
    let started = Instant::now();
    let input = Value::Object(case.input.clone());
    let request = RunRequest::new(case.target.clone(), input.clone()).with_cancel(cancel.clone());
    let mut result = CaseResult {
        file: case.file.clone(),
        case: case.name.clone(),
        index: case.index,
        repeat,
        target: case.target.clone(),
        tags: case.tags.clone(),
        input: input.clone(),
        run_id: None,
        status: RunStatus::Failed,
        output: None,
        output_text: String::new(),
        error: None,
        assertions: Vec::new(),
        score: 0.0,
        pass: false,
        latency_ms: 0,
        usage: Usage::default(),
        cost: Cost::default(),
        cached: false,
    };
    match executor.run(request).await {
        Ok(outcome) => {
            result.run_id = Some(outcome.run_id.clone());
            result.status = outcome.status;
            result.output_text = match &outcome.output {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            result.output = outcome.output;
            result.error = outcome
                .error
                .map(|e| format!("{e} (case `{}` of {})", case.name, case.file));
            result.latency_ms = outcome.latency_ms;
            result.usage = outcome.usage;
            result.cost = outcome.cost;
            result.cached = outcome.cached;
        }
        Err(e) => {
            result.error = Some(format!("{e} (case `{}` of {})", case.name, case.file));
            result.latency_ms = started.elapsed().as_millis() as u64;
        }
    }
    let observed = Observed {
        output: result
            .output
            .as_ref()
            .filter(|_| result.status == RunStatus::Succeeded),
        text: &result.output_text,
        latency_ms: result.latency_ms,
        cost: &result.cost,
        input: &input,
        vars: &case.vars,
        error: result.error.as_deref(),
    };
    let assertions = evaluate(&case.assertions, &observed, hooks).await;
    let (score, pass) = case_score(&assertions, case.threshold);
    result.pass = pass && result.status == RunStatus::Succeeded;
    result.score = if result.status == RunStatus::Succeeded {
        score
    } else {
        0.0
    };
    result.assertions = assertions;
    result
}
