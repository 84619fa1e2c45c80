//! Client-side rate limits: `rate_limit: <requests per minute>` on a provider in
//! `flowrun.yaml`.
//!
//! [`RateLimit`] spaces requests evenly: with `n` requests per minute, each request starts at
//! least `60 s / n` after the one before, whichever task sends it. Each caller reserves the
//! next free start time under a short lock and sleeps until then on tokio's timer (no polling),
//! so concurrent callers are served in the order they asked and never all at once. An idle
//! limiter lets the next request through immediately; it does not save up a burst.
//!
//! [`RateLimited`] puts one limiter in front of a provider; the executor builds one per provider
//! that sets `rate_limit`, shared by every call to it. The wait happens in
//! [`Provider::ready`], which the executor awaits before each attempt (retries included) and
//! outside the attempt's timeout, so a queue of calls does not turn into timeouts.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{ChatRequest, ChatResponse, DeltaFn, Provider, ProviderError};

/// Evenly spaced request starts, shared by every caller holding it.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    /// When the next request may start (`None` until the first one).
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// At most `per_minute` requests per minute, evenly spaced.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        RateLimit::every(Duration::from_secs(60) / per_minute.get())
    }

    /// One request per `interval`.
    pub fn every(interval: Duration) -> Self {
        RateLimit {
            interval,
            next: Mutex::new(None),
        }
    }

    /// The time between two request starts.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes the next turn and waits for it. A turn taken by a caller that then stops waiting
    /// (cancelled, dropped) is not given back: the limiter errs on the slow side.
    pub async fn acquire(&self) {
        let turn = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let turn = next.map_or(now, |n| n.max(now));
            *next = Some(turn + self.interval);
            turn
        };
        tokio::time::sleep_until(turn).await;
    }
}

/// A provider behind a [`RateLimit`].
pub struct RateLimited {
    inner: Arc<dyn Provider>,
    limit: RateLimit,
}

impl RateLimited {
    pub fn new(inner: Arc<dyn Provider>, limit: RateLimit) -> Self {
        RateLimited { inner, limit }
    }

    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }
}

#[async_trait]
impl Provider for RateLimited {
    /// Sends the request at once: the turn was taken by [`Provider::ready`].
    async fn chat(
        &self,
        request: &ChatRequest,
        on_delta: Option<&DeltaFn>,
    ) -> Result<ChatResponse, ProviderError> {
        self.inner.chat(request, on_delta).await
    }

    async fn ready(&self) {
        self.limit.acquire().await;
        self.inner.ready().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::provider::{ResponseFormat, Usage};

    fn rpm(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn interval_from_requests_per_minute() {
        assert_eq!(
            RateLimit::per_minute(rpm(120)).interval(),
            Duration::from_millis(500)
        );
        assert_eq!(
            RateLimit::per_minute(rpm(1)).interval(),
            Duration::from_secs(60)
        );
        assert_eq!(
            RateLimit::per_minute(rpm(u32::MAX)).interval(),
            Duration::from_nanos(13)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_are_spaced() {
        let limit = Arc::new(RateLimit::per_minute(rpm(120)));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move {
                    limit.acquire().await;
                    Instant::now() - start
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        for (i, t) in times.iter().enumerate() {
            assert!(
                *t >= Duration::from_millis(500) * i as u32,
                "call {i} started at {t:?}"
            );
        }
        assert_eq!(times[0], Duration::ZERO, "the first call does not wait");
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(500), "{times:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limiter_does_not_burst() {
        let limit = RateLimit::per_minute(rpm(60));
        limit.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        limit.acquire().await;
        assert_eq!(Instant::now() - start, Duration::ZERO, "idle: no wait");
        limit.acquire().await;
        assert!(
            Instant::now() - start >= Duration::from_secs(1),
            "but no burst"
        );
    }

    struct Counting(AtomicU32);

    #[async_trait]
    impl Provider for Counting {
        async fn chat(
            &self,
            request: &ChatRequest,
            _: Option<&DeltaFn>,
        ) -> Result<ChatResponse, ProviderError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(ChatResponse {
                text: "ok".into(),
                usage: Usage::default(),
                finish_reason: None,
                model: request.model.clone(),
                raw: serde_json::Value::Null,
                tool_calls: Vec::new(),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_decorator_waits_in_ready_and_forwards_chat() {
        let inner = Arc::new(Counting(AtomicU32::new(0)));
        let provider = RateLimited::new(inner.clone(), RateLimit::per_minute(rpm(30)));
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![],
            params: Default::default(),
            response_format: ResponseFormat::Text,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
        };
        let start = Instant::now();
        for _ in 0..3 {
            provider.ready().await;
            provider.chat(&request, None).await.unwrap();
        }
        assert!(Instant::now() - start >= Duration::from_secs(4));
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    }
}
