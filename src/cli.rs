//! The command line, as clap types. Only parsing lives here; `commands` does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Prompts and LLM workflows as infrastructure: write them as files, run, test, deploy.
#[derive(Debug, Parser)]
#[command(name = "flowrun", version, about, propagate_version = true)]
pub struct Cli {
    /// Run as if started in this directory.
    #[arg(short = 'C', long = "project", global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a working project that runs offline on the mock provider.
    Init(InitArgs),
    /// Run a prompt or a flow and print its output.
    Run(RunArgs),
    /// Check the whole project without calling any model.
    Check,
    /// List recent runs.
    Runs(RunsArgs),
    /// Show one run: each step's prompt, output, tokens, cost, latency and attempts.
    Show(ShowArgs),
    /// Write the JSON Schemas of flowrun's files, for editor validation.
    Schema(SchemaArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to create the project.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The prompt or flow: `name`, `prompt/name` or `flow/name`.
    pub target: String,
    /// An input value, `name=value` (repeatable). Values are read by the input's declared type.
    #[arg(short, long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// A JSON file with an object of input values (`--input` wins on conflicts).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Print the whole run record as JSON instead of the output.
    #[arg(long)]
    pub json: bool,
    /// Do not print step progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// How many runs to list.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run id, or a unique prefix of it.
    pub run_id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Directory to write into (default: `schemas/` in the project, or here outside one).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}
