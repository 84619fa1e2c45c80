//! Server-wide options of the fake LLM: latency, random fault rates, seed.

use std::time::Duration;

/// Server-wide behaviour of a [`crate::FakeLlm`].
///
/// Fault rates are probabilities in `0.0..=1.0`. For every accepted request
/// one random number `r` in `[0, 1)` is drawn from a generator seeded with
/// [`FakeConfig::seed`]; the request fails with 500 if `r < fail_500`, else
/// with 429 if `r < fail_500 + fail_429`, else hangs if `r < … + hang`, else
/// is reset if `r < … + reset`. A fault takes precedence over the script and
/// does not consume a scripted reply. Requests sent one after the other thus
/// see the same faults for the same seed.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeConfig {
    /// Added before every reply.
    pub latency: Duration,
    /// Probability of an injected HTTP 500.
    pub fail_500: f64,
    /// Probability of an injected HTTP 429.
    pub fail_429: f64,
    /// `Retry-After` seconds sent with injected 429s (none when `None`).
    pub retry_after_secs: Option<u64>,
    /// Probability of an injected hang.
    pub hang: f64,
    /// Probability of an injected connection reset.
    pub reset: f64,
    /// Seed of the fault-injection random generator.
    pub seed: u64,
    /// Pause between two SSE events of a streamed reply.
    pub stream_chunk_delay: Option<Duration>,
    /// Fixed reply text used instead of the echo when nothing is scripted.
    pub fixed_reply: Option<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            latency: Duration::ZERO,
            fail_500: 0.0,
            fail_429: 0.0,
            retry_after_secs: None,
            hang: 0.0,
            reset: 0.0,
            seed: 0,
            stream_chunk_delay: None,
            fixed_reply: None,
        }
    }
}

impl FakeConfig {
    /// Set [`FakeConfig::latency`].
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Set [`FakeConfig::fail_500`].
    pub fn with_fail_500(mut self, rate: f64) -> Self {
        self.fail_500 = rate;
        self
    }

    /// Set [`FakeConfig::fail_429`] and [`FakeConfig::retry_after_secs`].
    pub fn with_fail_429(mut self, rate: f64, retry_after_secs: Option<u64>) -> Self {
        self.fail_429 = rate;
        self.retry_after_secs = retry_after_secs;
        self
    }

    /// Set [`FakeConfig::hang`].
    pub fn with_hang(mut self, rate: f64) -> Self {
        self.hang = rate;
        self
    }

    /// Set [`FakeConfig::reset`].
    pub fn with_reset(mut self, rate: f64) -> Self {
        self.reset = rate;
        self
    }

    /// Set [`FakeConfig::seed`].
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Set [`FakeConfig::stream_chunk_delay`].
    pub fn with_stream_chunk_delay(mut self, delay: Duration) -> Self {
        self.stream_chunk_delay = Some(delay);
        self
    }

    /// Set [`FakeConfig::fixed_reply`].
    pub fn with_fixed_reply(mut self, text: impl Into<String>) -> Self {
        self.fixed_reply = Some(text.into());
        self
    }
}
