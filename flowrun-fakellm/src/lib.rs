//! A fake LLM HTTP server speaking the real wire formats of the OpenAI
//! chat-completions API and of the Anthropic Messages API, as JSON and as
//! SSE streams, for tests and benchmarks on loopback.
//!
//! - `POST /v1/chat/completions`: OpenAI format.
//! - `POST /v1/messages`: Anthropic format (needs `x-api-key` and
//!   `anthropic-version` headers).
//! - `GET /healthz`: `200 ok`.
//!
//! With nothing scripted the server echoes: the reply is `echo: ` followed by
//! the text of the last user message (or `{"echo": "<text>"}` when OpenAI
//! JSON output was asked for). Token usage is the number of
//! whitespace-separated words: of every message (system prompt included)
//! for input, of the reply for output. [`Reply`] values pushed with
//! [`FakeLlm::push`] / [`FakeLlm::push_for_model`] are served first, in FIFO
//! order, and can script text, tool calls, HTTP errors, hangs, connection
//! resets and delays. [`FakeConfig`] adds latency and seeded random faults.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
//!
//! let fake = FakeLlm::start(FakeConfig::default()).await?;
//! fake.push(Reply::text("hi"));
//! let url = format!("{}/chat/completions", fake.openai_base_url());
//! // ... POST to `url`, then inspect `fake.requests()` ...
//! fake.shutdown().await;
//! # let _ = url;
//! # Ok(())
//! # }
//! ```
//!
//! The `flowrun-fakellm` binary runs the same server as a process.

mod anthropic;
mod chat;
mod config;
mod faults;
mod handler;
pub mod mcp;
mod openai;
mod record;
mod reply;
mod script;
mod server;
mod sse;
mod state;
mod text;

pub use config::FakeConfig;
pub use handler::{ANTHROPIC_PATH, OPENAI_PATH};
pub use record::{Api, REDACTED, RecordedRequest, ReplyCounts};
pub use reply::{Reply, ReplyKind, ToolCall, Usage};
pub use server::FakeLlm;
