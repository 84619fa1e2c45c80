//! `flowrun dev`: the live terminal UI (crate `flowrun-tui`). Here only what comes before it:
//! the project and its cases loaded with problems printed as usual, the baselines checked,
//! the history opened, and a terminal required.
//!
//! Testing hook: with `FLOWRUN_DEV_EXIT_AFTER_FIRST_FRAME=1` in the environment, `flowrun dev`
//! exits 0 right after drawing its first frame, to time start-up (see BENCHMARKS.md).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flowrun_local::baseline::BaselineRef;
use flowrun_local::testing::{Selection, load_cases};
use flowrun_tui::runtime::{DevOptions, run};

use crate::cli::DevArgs;
use crate::diag_render;
use crate::exit::Exit;
use crate::style;

/// The testing hook's variable.
const EXIT_AFTER_FIRST_FRAME: &str = "FLOWRUN_DEV_EXIT_AFTER_FIRST_FRAME";

/// How long work still running at quit (a store write, say) gets to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

pub fn dev(start: &Path, args: &DevArgs) -> Exit {
    match start_dev(start, args) {
        Ok(exit) | Err(exit) => exit,
    }
}

fn start_dev(start: &Path, args: &DevArgs) -> Result<Exit, Exit> {
    if !std::io::stdout().is_terminal() {
        super::error(
            "`flowrun dev` needs a terminal: its output is not one",
            Some("run it in a terminal; in scripts and CI use `flowrun test` or `flowrun eval`"),
        );
        return Err(Exit::Usage);
    }
    for reference in &args.baselines {
        let parsed = BaselineRef::parse(reference).map_err(|e| {
            super::error(&e.to_string(), None);
            Exit::Usage
        })?;
        if let BaselineRef::Env(env) = parsed {
            super::error(
                &format!("`flowrun dev` cannot compare with `env:{env}` yet"),
                Some(
                    "compare with `flowrun eval --baseline env:NAME --remote NAME`, or give `git:<ref>` or a directory to `flowrun dev`",
                ),
            );
            return Err(Exit::Usage);
        }
    }
    let local = super::load_project(start)?;
    let selection = Selection {
        names: args.names.clone(),
        ..Selection::default()
    };
    let cases = load_cases(&local, &selection).map_err(|diags| {
        eprint!("{}", diag_render::render_all(&diags, style::color_stderr()));
        Exit::Usage
    })?;
    let store = Arc::new(super::open_store(&local)?);
    // Spans of every run when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, flushed at exit.
    let otel = super::otel("flowrun")?;
    let observer = otel.as_ref().map(|o| {
        let options = flowrun_otel::SinkOptions::from_config(&local.project.config);
        Arc::new(o.sink(options)) as Arc<dyn flowrun_core::EventSink>
    });
    let exit_after_first_frame =
        std::env::var_os(EXIT_AFTER_FIRST_FRAME).is_some_and(|v| !v.is_empty() && v != "0");
    let options = DevOptions {
        local,
        cases,
        selection,
        store: store.clone(),
        baselines: args.baselines.clone(),
        jobs: args.jobs as usize,
        exit_after_first_frame,
        observer,
    };
    let runtime = super::runtime(2)?;
    let result = runtime.block_on(run(options));
    if exit_after_first_frame {
        // Only start-up is being timed: background work is dropped, not awaited.
        runtime.shutdown_background();
    } else {
        runtime.shutdown_timeout(SHUTDOWN_GRACE);
    }
    if let Some(otel) = otel {
        otel.shutdown();
    }
    if let Some(e) = store.take_sink_error() {
        super::error(&format!("some runs were not fully recorded: {e}"), None);
    }
    match result {
        Ok(()) => Ok(Exit::Success),
        Err(e) => {
            super::error(&e.to_string(), None);
            Err(Exit::Failure)
        }
    }
}
