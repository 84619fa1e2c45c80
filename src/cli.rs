//! The command line, as clap types. Only parsing lives here; `commands` does the work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Prompts and LLM workflows as infrastructure: write them as files, run, test, deploy.
#[derive(Debug, Parser)]
#[command(name = "flowrun", version, about, propagate_version = true)]
pub struct Cli {
    /// Run as if started in this directory.
    #[arg(short = 'C', long = "project", global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,

    /// How log events are written to stderr (levels from `RUST_LOG`; default: `info` for flowrun's
    /// own, `warn` for the rest).
    #[arg(long, global = true, env = "FLOWRUN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event (fields as keys), for log collectors.
    Json,
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
    /// What runs cost: tokens and cost grouped (`--by model,day`), with cost per day as a
    /// bar chart; from the local history or a server.
    Cost(UsageArgs),
    /// How calls went: calls, error rate and latency p50/p95/p99, grouped (`--by model`); from
    /// the local history or a server.
    Stats(UsageArgs),
    /// Write the JSON Schemas of flowrun's files, for editor validation.
    Schema(SchemaArgs),
    /// Run test cases (`tests/*.test.yaml`) and score their outputs; `test show ID` shows a
    /// stored test run.
    Test(TestCmd),
    /// List recent test runs.
    Tests(TestsArgs),
    /// Compare the draft (working tree) with a baseline on the same test cases; `eval show ID`
    /// shows a stored evaluation.
    Eval(EvalCmd),
    /// List recent evaluations.
    Evals(TestsArgs),
    /// A live terminal UI: every case's draft output next to the baseline's, re-run as you
    /// edit the project's files.
    Dev(DevArgs),
    /// Serve deployed flows over HTTP with a durable run queue; `serve keys create` makes an
    /// API key.
    Serve(ServeCmd),
    /// Check the project, upload it to a server and deploy it to an environment.
    Deploy(DeployArgs),
    /// Deploy to environment TO what environment FROM runs.
    Promote(PromoteArgs),
    /// Point an environment back at its previous deployment.
    Rollback(RollbackArgs),
    /// List the versions stored on a server and what each environment runs.
    Versions(RemoteArgs),
    /// Name servers to deploy to (`remote add NAME URL --token-env VAR`); lists them.
    Remote(RemoteCmd),
    /// Push local runs, test runs and evaluations to a server and pull its deployment
    /// history; only what is new or changed since the last sync is sent.
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Records per request (1 to 1000); each batch is committed on both sides before the next.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// Print what was pushed and pulled as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RemoteCmd {
    #[command(subcommand)]
    pub sub: Option<RemoteSub>,
}

#[derive(Debug, Subcommand)]
pub enum RemoteSub {
    /// Remember a server under a name (in `.flowrun/remotes.json`; the key stays in the
    /// environment).
    Add(RemoteAddArgs),
    /// Forget a server.
    Remove(RemoteNameArgs),
    /// List the servers (the default).
    List,
}

#[derive(Debug, Args)]
pub struct RemoteAddArgs {
    /// A short name: `prod`, `origin`.
    pub name: String,
    /// The server's URL: `https://flows.example.com`.
    pub url: String,
    /// The environment variable that holds the API key for this server.
    #[arg(long, value_name = "VAR", default_value = "FLOWRUN_TOKEN")]
    pub token_env: String,
}

#[derive(Debug, Args)]
pub struct RemoteNameArgs {
    pub name: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeCmd {
    #[command(subcommand)]
    pub sub: Option<ServeSub>,
    #[command(flatten)]
    pub args: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum ServeSub {
    /// Manage the server's API keys.
    Keys(KeysCmd),
    /// Print the server's OpenAPI 3 document (what it serves at `/v1/openapi.json`).
    Openapi,
}

#[derive(Debug, Args)]
pub struct KeysCmd {
    #[command(subcommand)]
    pub sub: KeysSub,
}

#[derive(Debug, Subcommand)]
pub enum KeysSub {
    /// Create an API key and print it (once: only its hash is stored).
    Create(KeyCreateArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, env = "FLOWRUN_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Runs executed at once (each mostly waits on its model calls).
    #[arg(long, env = "FLOWRUN_WORKERS", default_value_t = flowrun_server::DEFAULT_WORKERS as u32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,
    /// The environment variable holding the secret that signs webhook deliveries
    /// [default: FLOWRUN_WEBHOOK_SECRET; without it, runs naming a webhook are refused].
    #[arg(long, value_name = "VAR")]
    pub webhook_secret_env: Option<String>,
    /// How long a claimed run stays held without a heartbeat; after that any replica may
    /// take it over.
    #[arg(long, env = "FLOWRUN_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub lease: Duration,
    /// How long runs in flight may take to finish on shutdown before they go back to the queue.
    #[arg(long, env = "FLOWRUN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Claims of a run whose worker keeps dying before it is failed.
    #[arg(long, env = "FLOWRUN_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,
    /// PostgreSQL connections each process may open [default: half the workers, at most 32,
    /// plus 8].
    #[arg(long, env = "FLOWRUN_DB_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: Option<u32>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. `30s`, `2m`)"))
}

fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("a lease must be at least `1s`".into());
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyRole {
    /// Submit and read runs of its environment.
    Run,
    /// Upload bundles; deploy, promote and roll back its environment.
    Deploy,
    /// Everything.
    Admin,
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// The environment the key is for (`*`: every environment).
    #[arg(long)]
    pub env: String,
    #[arg(long, value_enum)]
    pub role: KeyRole,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Where the server keeps its state.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// The server's SQLite database (one process; ignored with `--database-url`).
    #[arg(long, env = "FLOWRUN_DB", default_value = "flowrun-server.db")]
    pub db: PathBuf,
    /// A PostgreSQL database (`postgres://user@host/db`) instead of SQLite; several `flowrun
    /// serve` processes on one database share the work.
    #[arg(
        long,
        env = "FLOWRUN_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// When SQLite acknowledges a write: `full` once it is on disk (an accepted run survives a
    /// power loss), `normal` once it is in the write-ahead log (it survives the process being
    /// killed, not the machine; commits are faster).
    #[arg(
        long,
        env = "FLOWRUN_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "full",
        value_name = "MODE"
    )]
    pub sqlite_synchronous: SqliteSynchronous,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// A remote's name (`flowrun remote add`) or a server URL (its API key then comes from
    /// `FLOWRUN_TOKEN`); default: the only remote.
    #[arg(long, env = "FLOWRUN_REMOTE", value_name = "NAME|URL")]
    pub remote: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The environment to deploy to.
    #[arg(long)]
    pub env: String,
    /// Run the project's tests first and refuse to deploy when one fails.
    #[arg(long)]
    pub require_tests: bool,
    /// With `--require-tests`: answer the tests' model calls from this cassette.
    #[arg(long, value_name = "FILE", requires = "require_tests")]
    pub replay: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub from: String,
    pub to: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The environment to roll back.
    #[arg(long)]
    pub env: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Test files or tested targets to show (default: all).
    pub names: Vec<String>,
    /// A version to compare with: `git:<ref>` (`git:` is the main branch) or a directory.
    /// Repeat it to have several; `b` switches between them.
    #[arg(long = "baseline", value_name = "REF", default_value = "git:")]
    pub baselines: Vec<String>,
    /// Cases run at once, per side.
    #[arg(short = 'j', long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub jobs: u32,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalCmd {
    #[command(subcommand)]
    pub sub: Option<EvalSub>,
    #[command(flatten)]
    pub args: EvalArgs,
}

#[derive(Debug, Subcommand)]
pub enum EvalSub {
    /// Show a stored evaluation.
    Show(ShowTestArgs),
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Test files or tested targets to evaluate (default: all).
    pub names: Vec<String>,
    /// The version to compare with: `git:<ref>` (read from git objects; `git:` is the main
    /// branch), a directory, or `env:<name>` (what an environment of `--remote` runs).
    #[arg(long, default_value = "git:", value_name = "REF")]
    pub baseline: String,
    /// For `--baseline env:<name>`: the server (a remote's name or a URL).
    #[arg(long, env = "FLOWRUN_REMOTE", value_name = "NAME|URL")]
    pub remote: Option<String>,
    /// Also ask a judge model which output is better, in both orders (criteria optional).
    #[arg(long, value_name = "CRITERIA", num_args = 0..=1, default_missing_value = "Which output better does what the input asks: correct, complete, clear?")]
    pub pairwise: Option<String>,
    /// Exit 1 when the verdict is `worse` (for CI gating).
    #[arg(long)]
    pub fail_if_worse: bool,
    /// Only cases whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Only cases with this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Cases run at once, per side.
    #[arg(short = 'j', long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub jobs: u32,
    /// Run each case N times on each side.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Call the providers for the draft even when the cache has an answer (the baseline is
    /// always cached).
    #[arg(long)]
    pub no_cache: bool,
    /// Answer every model call from this cassette (both sides and the judges).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Terminal)]
    pub format: Format,
    /// Write the report here instead of stdout (a terminal summary still goes to stderr).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TestCmd {
    #[command(subcommand)]
    pub sub: Option<TestSub>,
    #[command(flatten)]
    pub args: TestArgs,
}

#[derive(Debug, Subcommand)]
pub enum TestSub {
    /// Show a stored test run.
    Show(ShowTestArgs),
}

#[derive(Debug, Args)]
pub struct ShowTestArgs {
    /// The test run id, or a unique prefix of it.
    pub id: String,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Terminal)]
    pub format: Format,
}

/// How `flowrun test` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Terminal,
    Json,
    Junit,
    Markdown,
    Html,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (`tests/x.test.yaml` or `x`) or tested targets (`flow/triage`); default all.
    pub names: Vec<String>,
    /// Only cases whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Only cases with this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Cases run at once.
    #[arg(short = 'j', long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub jobs: u32,
    /// Run each case N times and report pass rates (flaky cases); every run calls the model.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Stop after the first failing case.
    #[arg(long)]
    pub fail_fast: bool,
    /// Pass rate the suite needs, 0..1 (for prompts allowed to miss now and then).
    #[arg(long, default_value_t = 1.0, value_name = "RATE")]
    pub min_pass_rate: f64,
    /// Call the providers even when the response cache has an answer.
    #[arg(long)]
    pub no_cache: bool,
    /// Write every model exchange to this cassette file (commit it for CI).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer every model call from this cassette; a call it lacks fails its case.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Terminal)]
    pub format: Format,
    /// Write the report here instead of stdout (a terminal summary still goes to stderr).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestsArgs {
    /// How many test runs to list.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
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
pub struct UsageArgs {
    /// Group by any of flow, prompt, version, model, provider, environment, day
    /// (comma-separated; default: model).
    #[arg(long, value_name = "DIMS", default_value = "model")]
    pub by: String,
    /// Only calls since: a duration back from now (`7d`, `12h`) or a UTC date (`2026-11-01`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Report on a server's deployed runs (a remote's name or a URL) instead of the local
    /// history.
    #[arg(long, value_name = "NAME|URL")]
    pub remote: Option<String>,
    /// With `--remote`: only this environment.
    #[arg(long, requires = "remote")]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// How many runs to list.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
    /// List the runs of a server (a remote's name or a URL) instead of the local history.
    #[arg(long, value_name = "NAME|URL")]
    pub remote: Option<String>,
    /// With `--remote`: only runs in this environment.
    #[arg(long, requires = "remote")]
    pub env: Option<String>,
    /// With `--remote`: only runs of this flow.
    #[arg(long, requires = "remote")]
    pub flow: Option<String>,
    /// With `--remote`: only runs with this status.
    #[arg(long, requires = "remote", value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
    pub status: Option<String>,
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
