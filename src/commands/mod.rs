//! One module per subcommand, plus what they share: finding and loading the project with its
//! diagnostics printed, and opening the history.

mod check;
mod cost;
mod deploy;
mod dev;
mod eval;
mod init;
mod progress;
mod remote;
mod run;
mod runs;
mod schema;
mod serve;
mod show;
mod sync;
mod test;

use std::path::PathBuf;

use flowrun_local::{LoadError, LocalProject, Store};

use crate::cli::{Cli, Command};
use crate::diag_render;
use crate::exit::Exit;
use crate::style;

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> Exit {
    // `-C DIR` works as if started in DIR (like `git -C`): paths given on the command line
    // (`--replay`, `--record`, `--output`, `--baseline dir:…`) are relative to it too.
    if let Some(dir) = &cli.project
        && let Err(e) = std::env::set_current_dir(dir)
    {
        error(
            &format!("cannot use `-C {}`: {e}", dir.display()),
            Some("give the project's directory"),
        );
        return Exit::Usage;
    }
    let start = PathBuf::from(".");
    match cli.command {
        Command::Init(args) => init::init(&start, &args),
        Command::Run(args) => run::run(&start, args),
        Command::Check => check::check(&start),
        Command::Runs(args) => runs::runs(&start, &args),
        Command::Show(args) => show::show(&start, &args),
        Command::Cost(args) => cost::report(&start, &args, cost::View::Cost),
        Command::Stats(args) => cost::report(&start, &args, cost::View::Stats),
        Command::Schema(args) => schema::schema(&start, &args),
        Command::Test(cmd) => test::test(&start, cmd),
        Command::Tests(args) => test::list(&start, &args),
        Command::Eval(cmd) => eval::eval(&start, cmd),
        Command::Evals(args) => eval::list(&start, &args),
        Command::Dev(args) => dev::dev(&start, &args),
        Command::Serve(cmd) => serve::serve(cmd),
        Command::Deploy(args) => deploy::deploy(&start, &args),
        Command::Promote(args) => deploy::promote(&start, &args),
        Command::Rollback(args) => deploy::rollback(&start, &args),
        Command::Versions(args) => deploy::versions(&start, &args),
        Command::Remote(cmd) => remote::remote(&start, &cmd),
        Command::Sync(args) => sync::sync(&start, &args),
    }
}

/// Prints `error: <message>` (and a hint) on stderr.
pub fn error(message: &str, hint: Option<&str>) {
    let color = style::color_stderr();
    eprintln!("{}: {message}", style::paint(color, style::RED, "error"));
    if let Some(h) = hint {
        eprintln!("{}: {h}", style::paint(color, style::YELLOW, "hint"));
    }
}

/// Finds and loads the project, printing every problem; `Err` carries the exit status.
pub fn load_project(start: &std::path::Path) -> Result<LocalProject, Exit> {
    match LocalProject::discover(start) {
        Ok(p) => Ok(p),
        Err(LoadError::Invalid(diags)) => {
            eprint!(
                "{}",
                diag_render::render_all(&diags.0, style::color_stderr())
            );
            Err(Exit::Usage)
        }
        Err(e) => {
            error(&e.to_string(), None);
            Err(Exit::Usage)
        }
    }
}

/// Opens the project's history database.
pub fn open_store(local: &LocalProject) -> Result<Store, Exit> {
    Store::open(&local.db_path()).map_err(|e| {
        error(&e.to_string(), Some("check that `.flowrun/` is writable"));
        Exit::Failure
    })
}

/// An async runtime for one command: on this thread (`workers` 0) or with worker threads.
pub fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, Exit> {
    let mut builder = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build().map_err(|e| {
        error(&format!("cannot start the async runtime: {e}"), None);
        Exit::Failure
    })
}

/// The OpenTelemetry exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; a bad `OTEL_*` value
/// is a usage error. Flush it with [`flowrun_otel::Exporter::shutdown`] before exiting.
pub fn otel(service: &str) -> Result<Option<std::sync::Arc<flowrun_otel::Exporter>>, Exit> {
    match flowrun_otel::Exporter::from_env(service) {
        Ok(e) => Ok(e.map(std::sync::Arc::new)),
        Err(e) => {
            error(
                &e.to_string(),
                Some("unset the `OTEL_EXPORTER_OTLP_*` variables to turn export off"),
            );
            Err(Exit::Usage)
        }
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => error(&format!("cannot encode JSON: {e}"), None),
    }
}

/// `1234` → `1.2 s`, `87` → `87 ms`.
pub fn format_ms(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// A cost column: dollars, or `unknown` when a model had no price.
pub fn format_cost(usd: Option<f64>, unknown: &[String]) -> String {
    match usd {
        Some(v) if unknown.is_empty() => format!("${}", flowrun_core::cost::format_usd(v)),
        _ if !unknown.is_empty() => format!("unknown (no price for {})", unknown.join(", ")),
        _ => "-".into(),
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time.
pub fn format_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
