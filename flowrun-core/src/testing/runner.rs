//! Running test cases: a bounded pool of concurrent runs, repeats for flakiness, fail-fast,
//! each output scored by its assertions.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::cases::TestCase;
use super::result::CaseResult;
use crate::assert::{Hooks, Observed, case_score, evaluate};
use crate::cost::Cost;
use crate::event::RunStatus;
use crate::exec::{ExecError, Executor, RunOutcome, RunRequest};
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
///
/// Each case's run is a task of its own on the runtime, so with a multi-thread runtime the
/// runs (rendering, HTTP, parsing, recording) spread over its workers; the assertions are
/// scored here, on the caller's task.
pub async fn run_tests(
    executor: &Arc<Executor>,
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
                let run = |request: RunRequest| {
                    let executor = Arc::clone(executor);
                    Spawned(tokio::spawn(async move { executor.run(request).await }))
                };
                let result = score_case(case, repeat, hooks, &stop, run).await;
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

/// A run on a task of its own, aborted if dropped before it finishes (as the run would be if
/// it were awaited in place); a panic in it resumes in the awaiting task.
struct Spawned(tokio::task::JoinHandle<Result<RunOutcome, ExecError>>);

impl Future for Spawned {
    type Output = Result<RunOutcome, ExecError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| match joined {
                Ok(outcome) => outcome,
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Only an abort cancels the task, and only dropping this aborts it.
                    Err(e) => unreachable!("a case's run task was cancelled: {e}"),
                },
            })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one case once and scores it.
pub async fn run_case(
    executor: &Executor,
    case: &TestCase,
    repeat: u32,
    hooks: Hooks<'_>,
    cancel: &CancellationToken,
) -> CaseResult {
    score_case(case, repeat, hooks, cancel, |request| executor.run(request)).await
}

/// Runs one case once with `run` and scores it.
async fn score_case<F>(
    case: &TestCase,
    repeat: u32,
    hooks: Hooks<'_>,
    cancel: &CancellationToken,
    run: impl FnOnce(RunRequest) -> F,
) -> CaseResult
where
    F: Future<Output = Result<RunOutcome, ExecError>>,
{
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
    let mut agent_turns = Vec::new();
    match run(request).await {
        Ok(outcome) => {
            agent_turns = outcome
                .steps
                .iter()
                .filter_map(|s| s.agent.as_ref())
                .flat_map(|t| t.turns.iter().cloned())
                .collect();
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
        agent_turns: &agent_turns,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::project::{Project, SourceFile};
    use crate::testing::cases_of;

    /// `n` cases of an echoing prompt on the mock provider; the odd ones fail their assertion.
    fn setup(n: usize) -> (Arc<Executor>, Vec<TestCase>) {
        let cases: String = (0..n)
            .map(|i| {
                let expect = if i % 2 == 0 { "q" } else { "nowhere" };
                format!(
                    "  - {{name: c{i}, input: {{q: q{i}}}, assert: [{{contains: {expect}}}]}}\n"
                )
            })
            .collect();
        let files = vec![
            SourceFile::new(
                "flowrun.yaml",
                "providers: {offline: {kind: mock}}\ndefaults: {model: offline/echo}\n",
            ),
            SourceFile::new(
                "prompts/p.yaml",
                "input: {q: string}\nmessages: [{user: \"{{ q }}\"}]\n",
            ),
            SourceFile::new("tests/p.test.yaml", format!("target: p\ncases:\n{cases}")),
        ];
        let project = Arc::new(Project::load(files).unwrap());
        let cases = cases_of(&project, &project.tests["tests/p.test.yaml"], None).unwrap();
        let exec = Executor::builder(project).build().unwrap();
        (Arc::new(exec), cases)
    }

    async fn run_all(n: usize, concurrency: usize) {
        let (exec, cases) = setup(n);
        let seen = AtomicUsize::new(0);
        let options = TestOptions {
            concurrency,
            ..TestOptions::default()
        };
        let hooks = Hooks {
            judge: None,
            command: None,
        };
        let on_result = |_: &CaseResult| {
            seen.fetch_add(1, Ordering::Relaxed);
        };
        let cancel = CancellationToken::new();
        let results = run_tests(&exec, &cases, &options, hooks, &on_result, &cancel).await;
        assert_eq!(results.len(), n);
        assert_eq!(seen.load(Ordering::Relaxed), n);
        let mut verdicts: Vec<(usize, bool)> = results.iter().map(|r| (r.index, r.pass)).collect();
        verdicts.sort_unstable();
        let expected: Vec<(usize, bool)> = (0..n).map(|i| (i, i % 2 == 0)).collect();
        assert_eq!(verdicts, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_the_workers_and_scores_every_case() {
        run_all(40, 8).await;
    }

    #[tokio::test]
    async fn runs_on_a_current_thread_runtime_too() {
        run_all(12, 4).await;
    }
}
