//! `flowrun eval`: the same cases on the draft (working tree) and a baseline (a git ref or a
//! directory), paired, judged, and given a verdict. `eval show ID` and `evals` read stored
//! evaluations back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowrun_core::assert::Hooks;
use flowrun_core::cache::ResponseCache;
use flowrun_core::cassette::Cassette;
use flowrun_core::eval::{EvalReport, ExecutorPairwise, Pairwise, compare, pairwise_source};
use flowrun_core::event::now_ms;
use flowrun_core::project::SourceFile;
use flowrun_core::testing::judge::{ExecutorJudge, judge_model, judge_source};
use flowrun_core::testing::{CaseResult, TestOptions, run_tests};
use flowrun_core::{EventSink, Project};
use flowrun_local::baseline::{Baseline, BaselineError, BaselineRef, load_baseline};
use flowrun_local::executors::{CacheSetup, SharedHttp, support_project};
use flowrun_local::testing::{ProcessRunner, Selection, load_cases};
use flowrun_local::{LocalProject, Store, report};
use flowrun_otel::{OtelSink, SinkOptions};
use tokio_util::sync::CancellationToken;

use super::test::write_file;
use crate::cli::{EvalArgs, EvalCmd, EvalSub, Format, TestsArgs};
use crate::diag_render;
use crate::exit::Exit;
use crate::style;

pub fn eval(start: &Path, cmd: EvalCmd) -> Exit {
    let result = match cmd.sub {
        Some(EvalSub::Show(args)) => show(start, &args.id, args.format),
        None => run_eval(start, &cmd.args),
    };
    match result {
        Ok(exit) | Err(exit) => exit,
    }
}

fn usage(message: &str, hint: Option<&str>) -> Exit {
    super::error(message, hint);
    Exit::Usage
}

/// The cache of each side: the draft's follows `--no-cache`, the baseline's is always on;
/// `--replay` answers both from a cassette.
fn caches(args: &EvalArgs, store: &Arc<Store>) -> Result<(CacheSetup, CacheSetup), Exit> {
    if let Some(path) = &args.replay {
        let text = std::fs::read_to_string(path).map_err(|e| {
            usage(
                &format!("cannot read cassette {}: {e}", path.display()),
                Some("record one with `flowrun test --record FILE`"),
            )
        })?;
        let cassette: Arc<dyn ResponseCache> = Arc::new(
            Cassette::from_text(&text)
                .map_err(|e| usage(&format!("{}: {e}", path.display()), None))?,
        );
        let replay = || CacheSetup {
            cache: Some(cassette.clone()),
            replay_only: true,
            recording: None,
        };
        return Ok((replay(), replay()));
    }
    let sqlite: Arc<dyn ResponseCache> = store.clone();
    let draft = CacheSetup {
        cache: (!args.no_cache).then(|| sqlite.clone()),
        replay_only: false,
        recording: None,
    };
    let baseline = CacheSetup {
        cache: Some(sqlite),
        replay_only: false,
        recording: None,
    };
    Ok((draft, baseline))
}

/// The version deployed to `env` on the server, fetched through the API.
fn env_baseline(
    start: &Path,
    remote: Option<&str>,
    env: &str,
) -> Result<Result<Baseline, BaselineError>, Exit> {
    let (target, client) = super::remote::connect(start, remote)?;
    let bundle = super::remote::block_on(client.env_bundle(env))?;
    let label = format!(
        "env:{env} on {} ({})",
        target.label,
        &bundle.id[..bundle.id.len().min(8)]
    );
    let sources = bundle
        .files
        .into_iter()
        .map(|f| SourceFile::new(f.path, f.text))
        .collect();
    Ok(Baseline::from_files(label, sources))
}

fn run_eval(start: &Path, args: &EvalArgs) -> Result<Exit, Exit> {
    if args.format == Format::Junit {
        return Err(usage(
            "`--format junit` is for `flowrun test`",
            Some("use terminal, json, markdown or html"),
        ));
    }
    let local = super::load_project(start)?;
    let reference = BaselineRef::parse(&args.baseline).map_err(|e| usage(&e.to_string(), None))?;
    let loaded = match &reference {
        BaselineRef::Env(env) => env_baseline(start, args.remote.as_deref(), env)?,
        other => load_baseline(&local, other),
    };
    let baseline = loaded.map_err(|e| match e {
        BaselineError::Invalid { label, diagnostics } => {
            eprint!("{}", diag_render::render_all(&diagnostics.0, style::color_stderr()));
            usage(&format!("the baseline {label} is not a valid project (the problem is in the baseline, not in your working tree)"), None)
        }
        other => usage(&other.to_string(), Some("compare with another version: `--baseline git:<ref>` or `--baseline <dir>`")),
    })?;
    let selection = Selection {
        names: args.names.clone(),
        filter: args.filter.clone(),
        tags: args.tags.clone(),
    };
    let cases = load_cases(&local, &selection).map_err(|diags| {
        eprint!("{}", diag_render::render_all(&diags, style::color_stderr()));
        Exit::Usage
    })?;
    if cases.is_empty() {
        return Err(usage(
            "no test cases to evaluate",
            Some("add cases to `tests/<name>.test.yaml`"),
        ));
    }
    let mut missing: Vec<&str> = cases
        .iter()
        .map(|c| c.target.as_str())
        .filter(|t| baseline.project.resolve_target(t).is_err())
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        return Err(usage(
            &format!(
                "the baseline ({}) has no {}",
                baseline.label,
                missing.join(", ")
            ),
            Some(
                "evaluate only targets that exist in both versions (name them, or use `--filter`)",
            ),
        ));
    }
    let store = Arc::new(super::open_store(&local)?);
    let (draft_cache, baseline_cache) = caches(args, &store)?;
    let runs = cases.len() * args.repeat as usize;
    // Spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: the evaluation's, with both sides'
    // case runs (`flowrun.eval.side`) and the judges' under it.
    let otel = super::otel("flowrun")?;
    let session = otel.as_ref().map(|o| o.eval_session(&baseline.label, runs));
    let side = |config: &flowrun_core::spec::ProjectConfig, name: &str| {
        SinkOptions::from_config(config).label("flowrun.eval.side", name)
    };
    let judge_sink = super::test::judge_sink(
        session.as_ref(),
        &SinkOptions::from_config(&local.project.config),
    );
    let draft_sink = session
        .as_ref()
        .map(|s| Arc::new(s.case_sink(side(&local.project.config, "draft"))));
    let baseline_sink = session
        .as_ref()
        .map(|s| Arc::new(s.case_sink(side(&baseline.project.config, "baseline"))));
    let observer = |sink: &Option<Arc<OtelSink>>| sink.clone().map(|s| s as Arc<dyn EventSink>);
    let http = SharedHttp::default();
    let build = |project: Project,
                 setup: &CacheSetup,
                 sink: Option<Arc<Store>>,
                 observer: Option<Arc<dyn EventSink>>| {
        super::test::build_executor_sharing(&local, project, setup, sink, &http, observer)
    };
    let draft_exec = Arc::new(build(
        local.project.clone(),
        &draft_cache,
        Some(store.clone()),
        observer(&draft_sink),
    )?);
    let baseline_exec = Arc::new(build(
        baseline.project.clone(),
        &baseline_cache,
        None,
        observer(&baseline_sink),
    )?);
    let judge = ExecutorJudge::new(build(
        support_project(&local, judge_source()),
        &baseline_cache,
        None,
        judge_sink.clone(),
    )?);
    let pairwise_model = judge_model(&local.project.config, None);
    let pairwise = ExecutorPairwise::new(
        build(
            support_project(&local, pairwise_source()),
            &baseline_cache,
            None,
            judge_sink,
        )?,
        pairwise_model,
    );
    let commands = ProcessRunner {
        dir: local.root.clone(),
        timeout: Duration::from_secs(60),
    };
    let options = TestOptions {
        concurrency: args.jobs as usize,
        repeat: args.repeat,
        fail_fast: false,
    };
    let started_ms = now_ms();
    let started = Instant::now();
    let runtime = super::runtime(2)?;
    let (draft, base, judged) = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let guard = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                guard.cancel();
            }
        });
        let hooks = Hooks {
            judge: Some(&judge),
            command: Some(&commands),
        };
        let on_draft = |r: &CaseResult| {
            if let Some(sink) = &draft_sink {
                sink.case_finished(r);
            }
        };
        let on_baseline = |r: &CaseResult| {
            if let Some(sink) = &baseline_sink {
                sink.case_finished(r);
            }
        };
        let (draft, base) = tokio::join!(
            run_tests(&draft_exec, &cases, &options, hooks, &on_draft, &cancel),
            run_tests(
                &baseline_exec,
                &cases,
                &options,
                hooks,
                &on_baseline,
                &cancel
            )
        );
        let judged = match &args.pairwise {
            Some(criteria) => judge_pairs(&pairwise, criteria, &draft, &base).await,
            None => HashMap::new(),
        };
        (draft, base, judged)
    });
    let lookup =
        |d: &CaseResult, _: &CaseResult| judged.get(&(d.file.clone(), d.index, d.repeat)).cloned();
    let mut report = EvalReport::new(
        started_ms,
        started.elapsed().as_millis() as u64,
        baseline.label.clone(),
        draft,
        base,
        &lookup,
    );
    if let (Some(session), Some(otel)) = (session, otel) {
        session.end_eval(&report);
        otel.shutdown();
    }
    match store.save_eval(&report) {
        Ok(id) => report.id = Some(id),
        Err(e) => super::error(&format!("the evaluation was not stored: {e}"), None),
    }
    emit(&report, args.format, args.output.as_deref())?;
    let worse = report.verdict == flowrun_core::eval::Verdict::Worse;
    Ok(if args.fail_if_worse && worse {
        Exit::Failure
    } else {
        Exit::Success
    })
}

type PairKey = (String, usize, u32);

/// Asks the pairwise judge about every pair where both sides produced an output.
async fn judge_pairs(
    judge: &ExecutorPairwise,
    criteria: &str,
    draft: &[CaseResult],
    base: &[CaseResult],
) -> HashMap<PairKey, Pairwise> {
    let pairs: Vec<(&CaseResult, &CaseResult)> = draft
        .iter()
        .filter_map(|d| {
            base.iter()
                .find(|b| b.file == d.file && b.index == d.index && b.repeat == d.repeat)
                .map(|b| (d, b))
        })
        .filter(|(d, b)| d.output.is_some() && b.output.is_some())
        .collect();
    let verdicts = futures_join_all(
        pairs
            .iter()
            .map(|(d, b)| compare(judge, criteria, &d.input, &d.output_text, &b.output_text)),
    )
    .await;
    pairs
        .iter()
        .zip(verdicts)
        .map(|((d, _), v)| {
            let pairwise = v.unwrap_or_else(|e| Pairwise {
                preference: flowrun_core::eval::Preference::Tie,
                consistent: false,
                reason: format!("pairwise judge failed: {e}"),
            });
            ((d.file.clone(), d.index, d.repeat), pairwise)
        })
        .collect()
}

/// Runs futures eight at a time, keeping their order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    use futures::StreamExt;
    futures::stream::iter(futures).buffered(8).collect().await
}

fn emit(report: &EvalReport, format: Format, output: Option<&Path>) -> Result<(), Exit> {
    let color = style::color_stderr();
    let text = match format {
        Format::Terminal | Format::Junit => {
            report::eval_terminal(report, output.is_none() && color)
        }
        Format::Json => report::eval_json(report),
        Format::Markdown => report::eval_markdown(report),
        Format::Html => report::eval_html(report),
    };
    match output {
        Some(path) => {
            write_file(path, &text)?;
            eprint!("{}", report::eval_terminal(report, color));
            eprintln!("wrote the report to {}", path.display());
        }
        None => print!("{text}"),
    }
    if let Some(id) = &report.id {
        eprintln!("evaluation {id}");
    }
    Ok(())
}

fn show(start: &Path, id: &str, format: Format) -> Result<Exit, Exit> {
    let local: LocalProject = super::load_project(start)?;
    let store = super::open_store(&local)?;
    let report = store.eval(id).map_err(|e| usage(&e.to_string(), None))?;
    emit(&report, format, None)?;
    Ok(Exit::Success)
}

pub fn list(start: &Path, args: &TestsArgs) -> Exit {
    let store = match super::load_project(start).and_then(|l| super::open_store(&l)) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let rows = match store.evals(args.limit) {
        Ok(r) => r,
        Err(e) => {
            super::error(&e.to_string(), None);
            return Exit::Failure;
        }
    };
    if args.json {
        super::print_json(&rows);
        return Exit::Success;
    }
    if rows.is_empty() {
        eprintln!("no evaluations yet: `flowrun eval --baseline git:main` starts one");
        return Exit::Success;
    }
    println!(
        "{:<36}  {:<22}  {:>5}  {:>9}  {:>9}  {:<21}  STARTED",
        "ID", "BASELINE", "CASES", "BASE PASS", "DRAFT PASS", "VERDICT"
    );
    for r in rows {
        println!(
            "{:<36}  {:<22}  {:>5}  {:>8.1}%  {:>9.1}%  {:<21}  {}",
            r.id,
            r.baseline,
            r.cases,
            r.baseline_pass_rate * 100.0,
            r.draft_pass_rate * 100.0,
            r.verdict,
            super::format_time(r.started_at)
        );
    }
    Exit::Success
}
