//! Command tools: a local program run with the call's arguments as JSON on its standard
//! input (and in its argument templates, `args`), its standard output as the result.
//!
//! Off unless `flowrun.yaml` says `allow_command_tools: true`, and only where the executor
//! has a [`ProcessHost`] (never on the server). No shell is involved: each templated argument
//! is one argument of the program, whatever it contains.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::process::{ProcessHost, ProcessSpec};
use super::{Tool, ToolContext, ToolOutcome};
use crate::provider::ToolDef;
use crate::yaml::{Document, Path};

const MAX_RESULT_BYTES: usize = super::http::MAX_RESULT_BYTES;

/// A command tool of an agent step; its templates are located in the flow file at `path`.
pub struct CommandTool<'a> {
    pub def: ToolDef,
    pub argv: &'a [String],
    pub doc: &'a Document,
    /// The tool's `command` key in the flow file.
    pub path: Path,
    pub timeout: Duration,
}

impl CommandTool<'_> {
    fn argv(&self, cx: &ToolContext<'_>, args: &Value) -> Result<Vec<String>, String> {
        let scope = json!({ "args": args });
        self.argv
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let v = cx
                    .executor
                    .renderer()
                    .eval_value(
                        self.doc,
                        &self.path.index(i),
                        &Value::String(a.clone()),
                        &scope,
                    )
                    .map_err(|e| format!("the tool's template failed: {}", e.0.message))?;
                Ok(match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            })
            .collect()
    }
}

#[async_trait]
impl Tool for CommandTool<'_> {
    fn def(&self) -> &ToolDef {
        &self.def
    }

    async fn call(&self, args: &Value, cx: &ToolContext<'_>) -> ToolOutcome {
        let Some(host) = cx.executor.process_host() else {
            return ToolOutcome::error(
                "command tools cannot run here: this executor runs no local programs (the server never does)",
            );
        };
        if !cx.executor.project().config.allow_command_tools {
            return ToolOutcome::error(
                "command tools are off: `allow_command_tools: true` is not in flowrun.yaml",
            );
        }
        let argv = match self.argv(cx, args) {
            Ok(a) => a,
            Err(e) => return ToolOutcome::error(e),
        };
        run(host, argv, args, self.timeout, cx).await
    }
}

async fn run(
    host: &dyn ProcessHost,
    argv: Vec<String>,
    args: &Value,
    timeout: Duration,
    cx: &ToolContext<'_>,
) -> ToolOutcome {
    let program = argv.first().cloned().unwrap_or_default();
    let spec = ProcessSpec {
        argv,
        env: Vec::new(),
    };
    let stdin = args.to_string().into_bytes();
    let out = tokio::select! {
        () = cx.cancel.cancelled() => return ToolOutcome::error("cancelled"),
        out = host.run(&spec, stdin, timeout, MAX_RESULT_BYTES) => out,
    };
    match out {
        Err(e) => ToolOutcome::error(e),
        Ok(out) => {
            let mut stdout = out.stdout;
            if out.truncated {
                stdout.push_str(&format!("… (cut at {MAX_RESULT_BYTES} bytes)"));
            }
            if out.exit_code == Some(0) {
                ToolOutcome::ok(stdout)
            } else {
                let status = match out.exit_code {
                    Some(c) => format!("exit code {c}"),
                    None => "killed by a signal".into(),
                };
                let detail = if out.stderr.trim().is_empty() {
                    stdout
                } else {
                    out.stderr
                };
                ToolOutcome::error(format!("`{program}` failed ({status}): {}", detail.trim()))
            }
        }
    }
}
