//! The `flowrun-fakellm` binary: runs the fake LLM server as a process
//! until SIGTERM or ctrl-c, printing `listening on http://127.0.0.1:PORT`.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flowrun_fakellm::{FakeConfig, FakeLlm};

/// Fake OpenAI / Anthropic server on 127.0.0.1 for tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "flowrun-fakellm", version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Latency added before every reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Probability (0..1) of answering HTTP 500.
    #[arg(long = "fail-500", default_value_t = 0.0, value_parser = probability)]
    fail_500: f64,
    /// Probability (0..1) of answering HTTP 429.
    #[arg(long = "fail-429", default_value_t = 0.0, value_parser = probability)]
    fail_429: f64,
    /// Retry-After seconds sent with injected 429s.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Probability (0..1) of never answering.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    hang: f64,
    /// Probability (0..1) of resetting the connection.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    reset: f64,
    /// Seed of the fault injection.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pause between two SSE events, in milliseconds.
    #[arg(long)]
    stream_chunk_delay_ms: Option<u64>,
    /// Fixed reply text instead of the echo.
    #[arg(long)]
    reply: Option<String>,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

impl Args {
    fn config(&self) -> FakeConfig {
        FakeConfig {
            latency: Duration::from_millis(self.latency_ms),
            fail_500: self.fail_500,
            fail_429: self.fail_429,
            retry_after_secs: self.retry_after,
            hang: self.hang,
            reset: self.reset,
            seed: self.seed,
            stream_chunk_delay: self.stream_chunk_delay_ms.map(Duration::from_millis),
            fixed_reply: self.reply.clone(),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let fake = match FakeLlm::bind(addr, args.config()).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("flowrun-fakellm: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {}", fake.base_url());
    let _ = stdout.flush();
    drop(stdout);
    terminated().await;
    fake.shutdown().await;
    ExitCode::SUCCESS
}

/// Resolves on ctrl-c or (on Unix) SIGTERM.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
