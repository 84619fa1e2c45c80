//! `flowrun run`: run a prompt or flow, stream the final step, record everything.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flowrun_core::event::FanOut;
use flowrun_core::exec::ExecError;
use flowrun_core::project::TargetKind;
use flowrun_core::spec::InputSpec;
use flowrun_core::{Executor, RunOutcome, RunRequest, RunStatus};
use indexmap::IndexMap;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::style;

pub fn run(start: &Path, args: RunArgs) -> Exit {
    match try_run(start, args) {
        Ok(exit) | Err(exit) => exit,
    }
}

fn try_run(start: &Path, args: RunArgs) -> Result<Exit, Exit> {
    let local = super::load_project(start)?;
    let (kind, name) = local.project.resolve_target(&args.target).map_err(|e| {
        super::error(
            &e,
            Some("`flowrun check` lists problems; prompts live in `prompts/`, flows in `flows/`"),
        );
        Exit::Usage
    })?;
    let decl = match kind {
        TargetKind::Prompt => &local.project.prompts[&name].spec.input,
        TargetKind::Flow => &local.project.flows[&name].spec.input,
    };
    let input = build_input(decl, &args)?;
    let store = Arc::new(super::open_store(&local)?);
    let prices = local.prices().map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Usage
    })?;
    let mid_line = Arc::new(AtomicBool::new(false));
    let mut sinks: Vec<Arc<dyn flowrun_core::EventSink>> = vec![store.clone()];
    if !args.quiet {
        let progress = Progress {
            color: style::color_stderr(),
            mid_line: mid_line.clone(),
        };
        sinks.push(Arc::new(progress));
    }
    let otel = super::otel("flowrun")?;
    if let Some(otel) = &otel {
        let options = flowrun_otel::SinkOptions::from_config(&local.project.config);
        sinks.push(Arc::new(otel.sink(options)));
    }
    let executor = Executor::builder(Arc::new(local.project.clone()))
        .sink(Arc::new(FanOut(sinks)))
        .ledger(store.clone())
        .env(local.env_lookup())
        .prices(prices)
        .processes(flowrun_local::LocalProcesses::new(&local.root))
        .build()
        .map_err(|e| {
            super::error(&e.to_string(), None);
            Exit::Usage
        })?;
    let stream = std::io::stdout().is_terminal() && !args.json;
    let target = format!("{}/{name}", kind.as_str());
    let request = RunRequest::new(target, Value::Object(input));
    let outcome = execute(&executor, request, stream.then(|| mid_line.clone()));
    if let Some(otel) = otel {
        otel.shutdown();
    }
    let outcome = outcome?;
    if let Some(e) = store.take_sink_error() {
        super::error(&format!("the run was not fully recorded: {e}"), None);
    }
    if mid_line.swap(false, Ordering::SeqCst) {
        println!();
    }
    Ok(report(&outcome, &args, stream))
}

/// Runs on a small runtime, cancelling on ctrl-c. With `stream`, the final step's text goes to
/// stdout as it arrives and the flag records that its line is still open.
fn execute(
    executor: &Executor,
    request: RunRequest,
    stream: Option<Arc<AtomicBool>>,
) -> Result<RunOutcome, Exit> {
    let runtime = super::runtime(0)?;
    let cancel = CancellationToken::new();
    let mut request = request.with_cancel(cancel.clone());
    if let Some(mid_line) = stream {
        request = request.streaming(Arc::new(move |piece: &str| {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            mid_line.store(!piece.ends_with('\n'), Ordering::SeqCst);
        }));
    }
    let result = runtime.block_on(async {
        let guard = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                guard.cancel();
            }
        });
        let result = executor.run(request).await;
        // MCP servers' programs get to exit cleanly.
        executor.shutdown().await;
        result
    });
    result.map_err(|e| {
        match e {
            ExecError::InvalidInput(errors) => {
                for err in errors {
                    let hint = format!("pass it with `--input {}=...`", err.field);
                    let missing = err.message.starts_with("missing required");
                    super::error(&err.to_string(), missing.then_some(hint.as_str()));
                }
            }
            other => super::error(&other.to_string(), None),
        }
        Exit::Usage
    })
}

fn report(outcome: &RunOutcome, args: &RunArgs, streamed: bool) -> Exit {
    if args.json {
        super::print_json(&outcome_json(outcome));
    } else if outcome.status == RunStatus::Succeeded {
        let last_text = outcome.steps.last().and_then(|s| s.output_text.as_deref());
        if !streamed || last_text != Some(outcome.output_text().as_str()) {
            println!("{}", outcome.output_text());
        }
    } else if let Some(err) = &outcome.error {
        let hint = if outcome.status == RunStatus::BudgetExceeded {
            "no call was made; `flowrun cost --by day` shows the spending, `budget:` in flowrun.yaml or the flow sets the limits".to_string()
        } else {
            format!("`flowrun show {}` has every attempt", outcome.run_id)
        };
        super::error(err, Some(&hint));
    }
    if outcome.status == RunStatus::Succeeded {
        Exit::Success
    } else {
        Exit::Failure
    }
}

fn outcome_json(o: &RunOutcome) -> Value {
    json!({
        "run_id": o.run_id,
        "target": format!("{}/{}", o.target_kind.as_str(), o.target),
        "version": o.version,
        "status": o.status,
        "output": o.output,
        "error": o.error,
        "usage": o.usage,
        "cost_usd": o.cost.usd_if_known(),
        "cost_unknown_models": o.cost.unknown_models,
        "latency_ms": o.latency_ms,
        "steps": o.steps,
    })
}

/// Input values from `--input-file` and `--input name=value`, typed by the declarations.
fn build_input(
    decl: &IndexMap<String, InputSpec>,
    args: &RunArgs,
) -> Result<Map<String, Value>, Exit> {
    let mut input = match &args.input_file {
        Some(path) => read_input_file(path)?,
        None => Map::new(),
    };
    for pair in &args.inputs {
        let Some((key, text)) = pair.split_once('=') else {
            super::error(
                &format!("`--input {pair}` is not `name=value`"),
                Some("write `--input text=hello`"),
            );
            return Err(Exit::Usage);
        };
        let value = match decl.get(key) {
            Some(spec) => spec.ty().parse_text(text).map_err(|e| {
                super::error(&format!("input `{key}`: {e}"), None);
                Exit::Usage
            })?,
            None => Value::String(text.to_string()),
        };
        input.insert(key.to_string(), value);
    }
    Ok(input)
}

fn read_input_file(path: &Path) -> Result<Map<String, Value>, Exit> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        super::error(&format!("cannot read {}: {e}", path.display()), None);
        Exit::Usage
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => {
            super::error(
                &format!("{}: expected a JSON object of input values", path.display()),
                None,
            );
            Err(Exit::Usage)
        }
        Err(e) => {
            super::error(
                &format!(
                    "{}:{}:{}: invalid JSON: {e}",
                    path.display(),
                    e.line(),
                    e.column()
                ),
                None,
            );
            Err(Exit::Usage)
        }
    }
}
