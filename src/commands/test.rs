//! `flowrun test`: run the selected cases concurrently, score them, report, store the result.
//! `flowrun test show ID` and `flowrun tests` read stored test runs back.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowrun_core::Project;
use flowrun_core::assert::Hooks;
use flowrun_core::cache::{Recording, ResponseCache};
use flowrun_core::cassette::Cassette;
use flowrun_core::event::now_ms;
use flowrun_core::testing::judge::{ExecutorJudge, judge_source};
use flowrun_core::testing::{CaseResult, SuiteReport, TestOptions, run_tests};
use flowrun_core::{EventSink, Executor};
use flowrun_local::executors::{self, CacheSetup, SharedHttp, support_project};
use flowrun_local::testing::{ProcessRunner, Selection, load_cases};
use flowrun_local::{LocalProject, Store, report};
use flowrun_otel::SinkOptions;
use tokio_util::sync::CancellationToken;

use crate::cli::{Format, TestArgs, TestCmd, TestSub, TestsArgs};
use crate::diag_render;
use crate::exit::Exit;
use crate::style;

pub fn test(start: &Path, cmd: TestCmd) -> Exit {
    let result = match cmd.sub {
        Some(TestSub::Show(args)) => show(start, &args.id, args.format),
        None => run_suite(start, &cmd.args),
    };
    match result {
        Ok(exit) | Err(exit) => exit,
    }
}

pub(super) fn cache_setup(args: &TestArgs, store: &Arc<Store>) -> Result<CacheSetup, Exit> {
    // `--repeat` measures how often a case passes, so every repeat calls the model: the cache
    // is then written but not read (a hit would only repeat the first answer).
    let sqlite: Option<Arc<dyn ResponseCache>> = (!args.no_cache).then(|| {
        if args.repeat > 1 {
            Arc::new(Recording::new(store.clone())) as Arc<dyn ResponseCache>
        } else {
            store.clone() as Arc<dyn ResponseCache>
        }
    });
    if let Some(path) = &args.replay {
        let text = std::fs::read_to_string(path).map_err(|e| {
            super::error(
                &format!("cannot read cassette {}: {e}", path.display()),
                Some("record one with `flowrun test --record FILE`"),
            );
            Exit::Usage
        })?;
        let cassette = Cassette::from_text(&text).map_err(|e| {
            super::error(&format!("{}: {e}", path.display()), None);
            Exit::Usage
        })?;
        return Ok(CacheSetup {
            cache: Some(Arc::new(cassette)),
            replay_only: true,
            recording: None,
        });
    }
    if args.record.is_some() {
        let cassette = Arc::new(Cassette::new());
        let recording = match sqlite {
            Some(inner) => Recording::over(inner, cassette.clone()),
            None => Recording::new(cassette.clone()),
        };
        return Ok(CacheSetup {
            cache: Some(Arc::new(recording)),
            replay_only: false,
            recording: Some(cassette),
        });
    }
    Ok(CacheSetup {
        cache: sqlite,
        replay_only: false,
        recording: None,
    })
}

/// [`executors::build_executor_sharing`] with its error printed.
pub(super) fn build_executor_sharing(
    local: &LocalProject,
    project: Project,
    setup: &CacheSetup,
    sink: Option<Arc<Store>>,
    http: &SharedHttp,
    observer: Option<Arc<dyn EventSink>>,
) -> Result<Executor, Exit> {
    executors::build_executor_sharing(local, project, setup, sink, http, observer).map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Usage
    })
}

/// The OpenTelemetry sink of a test or eval session's judges (`flowrun.role: judge`).
pub(super) fn judge_sink(
    session: Option<&flowrun_otel::Session>,
    options: &SinkOptions,
) -> Option<Arc<dyn EventSink>> {
    session.map(|s| {
        let options = options.clone().label("flowrun.role", "judge");
        Arc::new(s.sink(options)) as Arc<dyn EventSink>
    })
}

/// Runs every test of the project with the defaults of `flowrun test` (answering from
/// `replay` when given), as `flowrun deploy --require-tests` does.
pub fn run_default_suite(start: &Path, replay: Option<std::path::PathBuf>) -> Exit {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        args: TestArgs,
    }
    let mut args = match <Defaults as clap::Parser>::try_parse_from(["test"]) {
        Ok(d) => d.args,
        Err(e) => {
            super::error(&format!("cannot set up the tests: {e}"), None);
            return Exit::Failure;
        }
    };
    args.replay = replay;
    match run_suite(start, &args) {
        Ok(exit) | Err(exit) => exit,
    }
}

fn run_suite(start: &Path, args: &TestArgs) -> Result<Exit, Exit> {
    if !(0.0..=1.0).contains(&args.min_pass_rate) {
        super::error(
            "`--min-pass-rate` must be between 0 and 1",
            Some("write it like `--min-pass-rate 0.9`"),
        );
        return Err(Exit::Usage);
    }
    let local = super::load_project(start)?;
    // The case runs and their judges share one HTTP client. It, the price table (850 KB of
    // JSON) and the history (created on first use) are made on other threads while the cases
    // load.
    let http = SharedHttp::default();
    let state_dir = local.db_path().parent().map(Path::to_path_buf);
    let fresh = state_dir.as_ref().is_some_and(|dir| !dir.exists());
    let loaded = std::thread::scope(|scope| {
        scope.spawn(|| http.prepare(&local.project));
        scope.spawn(|| local.prices().ok());
        let opening = scope.spawn(|| -> Result<_, Exit> {
            let store = Arc::new(super::open_store(&local)?);
            // Many cases run at once: their history and cache writes go to a writer thread,
            // in batches, rather than holding up the async workers. Should it not start, they
            // are written inline as usual.
            let _ = store.write_behind();
            let setup = cache_setup(args, &store)?;
            Ok((store, setup))
        });
        let selection = Selection {
            names: args.names.clone(),
            filter: args.filter.clone(),
            tags: args.tags.clone(),
        };
        let cases = load_cases(&local, &selection).map_err(|diags| {
            eprint!("{}", diag_render::render_all(&diags, style::color_stderr()));
            Exit::Usage
        });
        let opened = opening.join().unwrap_or(Err(Exit::Failure));
        let cases = cases?;
        if cases.is_empty() {
            super::error(
                "no test cases to run",
                Some("add cases to `tests/<name>.test.yaml`, or loosen `--filter`/`--tag`"),
            );
            return Err(Exit::Usage);
        }
        let (store, setup) = opened?;
        Ok((cases, store, setup))
    });
    let (cases, store, setup) = match loaded {
        Ok(loaded) => loaded,
        Err(exit) => {
            // Nothing ran: a history this command created is not left behind.
            if let (true, Some(dir)) = (fresh, &state_dir) {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(exit);
        }
    };
    let total = cases.len() as u64 * u64::from(args.repeat);
    // Spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: the suite's, with every case's run
    // (and every judge's) under it.
    let otel = super::otel("flowrun")?;
    let session = otel.as_ref().map(|o| o.test_session(total as usize));
    let otel_options = SinkOptions::from_config(&local.project.config);
    let case_sink = session
        .as_ref()
        .map(|s| Arc::new(s.case_sink(otel_options.clone())));
    let judge_sink = judge_sink(session.as_ref(), &otel_options);
    let executor = Arc::new(build_executor_sharing(
        &local,
        local.project.clone(),
        &setup,
        Some(store.clone()),
        &http,
        case_sink.clone().map(|s| s as Arc<dyn EventSink>),
    )?);
    let judge = ExecutorJudge::new(build_executor_sharing(
        &local,
        support_project(&local, judge_source()),
        &setup,
        None,
        &http,
        judge_sink,
    )?);
    let commands = ProcessRunner {
        dir: local.root.clone(),
        timeout: Duration::from_secs(60),
    };
    let options = TestOptions {
        concurrency: args.jobs as usize,
        repeat: args.repeat,
        fail_fast: args.fail_fast,
    };
    let progress = Progress::new(total);
    let started_ms = now_ms();
    let started = Instant::now();
    let runtime = super::runtime(2)?;
    let results = runtime.block_on(async {
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
        let on_result = |r: &CaseResult| {
            progress.tick(r);
            if let Some(sink) = &case_sink {
                sink.case_finished(r);
            }
        };
        let results = run_tests(&executor, &cases, &options, hooks, &on_result, &cancel).await;
        // MCP servers' programs get to exit cleanly.
        executor.shutdown().await;
        results
    });
    progress.finish();
    let mut suite = SuiteReport::new(
        started_ms,
        started.elapsed().as_millis() as u64,
        args.min_pass_rate,
        results,
    );
    if let (Some(session), Some(otel)) = (session, otel) {
        session.end_test(&suite);
        otel.shutdown();
    }
    if let (Some(path), Some(cassette)) = (&args.record, &setup.recording) {
        write_file(path, &cassette.to_text())?;
        eprintln!(
            "recorded {} exchanges to {}",
            cassette.len(),
            path.display()
        );
    }
    // Every run's records are in before the test run that lists them.
    store.flush();
    match store.save_test_run(&suite) {
        Ok(id) => suite.id = Some(id),
        Err(e) => super::error(&format!("the test run was not stored: {e}"), None),
    }
    if let Some(e) = store.take_sink_error() {
        super::error(&format!("some runs were not fully recorded: {e}"), None);
    }
    emit_report(&suite, args.format, args.output.as_deref())?;
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        print!("{}", report::github_annotations(&suite));
    }
    Ok(if suite.passed() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// Prints the report in `format` (to `output` if given, with the terminal summary on stderr).
fn emit_report(suite: &SuiteReport, format: Format, output: Option<&Path>) -> Result<(), Exit> {
    let text = match format {
        Format::Terminal => report::terminal(
            suite,
            output.is_none() && std::io::stdout().is_terminal() && style::color_stderr(),
        ),
        Format::Json => report::json(suite),
        Format::Junit => report::junit(suite),
        Format::Markdown => report::markdown(suite),
        Format::Html => report::html(suite),
    };
    match output {
        Some(path) => {
            write_file(path, &text)?;
            eprint!("{}", report::terminal(suite, style::color_stderr()));
            eprintln!("wrote the report to {}", path.display());
        }
        None => print!("{text}"),
    }
    if let Some(id) = &suite.id {
        eprintln!("test run {id}");
    }
    Ok(())
}

/// Writes `text` to `path` whole: a temp file renamed into place.
pub(super) fn write_file(path: &Path, text: &str) -> Result<(), Exit> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            super::error(&format!("cannot write {}: {e}", path.display()), None);
            Exit::Failure
        })
}

fn show(start: &Path, id: &str, format: Format) -> Result<Exit, Exit> {
    let local = super::load_project(start)?;
    let store = super::open_store(&local)?;
    let suite = store.test_run(id).map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Usage
    })?;
    emit_report(&suite, format, None)?;
    Ok(if suite.passed() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

pub fn list(start: &Path, args: &TestsArgs) -> Exit {
    let store = match super::load_project(start).and_then(|l| super::open_store(&l)) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let rows = match store.test_runs(args.limit) {
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
        eprintln!("no test runs yet: `flowrun test` starts one");
        return Exit::Success;
    }
    println!(
        "{:<36}  {:>6}  {:>6}  {:>7}  {:>10}  {:>8}  STARTED",
        "ID", "PASSED", "FAILED", "RATE", "COST", "WALL"
    );
    for r in rows {
        println!(
            "{:<36}  {:>6}  {:>6}  {:>6.1}%  {:>10}  {:>8}  {}",
            r.id,
            r.passed,
            r.failed,
            r.pass_rate * 100.0,
            super::format_cost(r.cost_usd, &r.cost_unknown),
            super::format_ms(r.wall_ms),
            super::format_time(r.started_at)
        );
    }
    Exit::Success
}

/// A progress bar on a terminal; nothing otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(total: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} cases · {msg} · {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        Progress { bar: Some(bar) }
    }

    fn tick(&self, result: &CaseResult) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if !result.pass {
                bar.println(format!("✗ {} › {}", result.file, result.case));
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
