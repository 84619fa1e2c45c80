//! The `ProcessHost` trait: how command tools and stdio MCP servers start local programs.
//!
//! Core does no process IO: the caller injects a host ([`crate::ExecutorBuilder::processes`];
//! flowrun-local's runs programs in the project root). An executor without one, such as the
//! server's, refuses command tools and stdio MCP servers with a clear error.

use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// What a finished program did; `stdout` and `stderr` are cut at the limit asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether `stdout` was longer than the limit (the rest was read and dropped).
    pub truncated: bool,
}

/// A program to run: `argv[0]` with the rest as arguments, plus environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
}

/// A running program whose standard input and output the caller talks over.
pub struct SpawnedProcess {
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    /// Ends it: dropped, it kills the program at once.
    pub handle: Box<dyn ProcessHandle>,
}

/// The program behind a [`SpawnedProcess`].
#[async_trait]
pub trait ProcessHandle: Send + Sync {
    /// Waits up to `grace` for the program to exit (its standard input is closed by then),
    /// then kills it.
    async fn shutdown(&mut self, grace: Duration);

    /// The end of what it wrote to standard error (why it failed to start).
    fn stderr_tail(&self) -> String;
}

/// Starts local programs for command tools and stdio MCP servers.
#[async_trait]
pub trait ProcessHost: Send + Sync {
    /// Runs `spec` to completion with `stdin` as its input; at most `timeout`, after which
    /// it is killed and an error returned.
    async fn run(
        &self,
        spec: &ProcessSpec,
        stdin: Vec<u8>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ProcessOutput, String>;

    /// Starts `spec` with piped standard input and output.
    async fn spawn(&self, spec: &ProcessSpec) -> Result<SpawnedProcess, String>;
}
