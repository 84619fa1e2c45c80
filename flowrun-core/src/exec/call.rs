//! One model call with the full reliability policy: the response cache, per-attempt timeout,
//! retries with backoff, fallback models, cancellation. Every attempt is reported; only calls
//! that reached a provider are paid for.

use std::time::Instant;

use super::{Executor, RunCtx, StepFailure, merge_params};
use crate::cache::{CacheEntry, cache_key};
use crate::cost::Cost;
use crate::event::{CallFailure, CallRecord, RunEvent, RunStatus, StepRecord, now_ms};
use crate::models::ModelTarget;
use crate::provider::{ChatRequest, ChatResponse, DeltaFn, ProviderError, Usage};
use crate::retry::{Next, RetryPolicy};

/// Calls models for one step, accumulating attempts, usage and cost into its record.
pub(super) struct Caller<'e, 'c, 'r> {
    pub exec: &'e Executor,
    pub ctx: &'c mut RunCtx<'r>,
    pub record: &'c mut StepRecord,
    pub chain: &'c [ModelTarget],
    pub policy: RetryPolicy,
    pub on_delta: Option<&'r DeltaFn>,
    /// Successful calls of the step so far, and how many of them were cache hits.
    pub successes: u32,
    pub hits: u32,
}

/// How one attempt ended, for its [`CallRecord`].
enum Attempt<'a> {
    /// A reply, with what it cost (zero for a cache hit).
    Replied(&'a ChatResponse, Cost),
    Failed(&'a ProviderError),
}

impl Caller<'_, '_, '_> {
    /// Tries each model of the chain in turn, each with its retry budget.
    pub async fn call(
        &mut self,
        request: &ChatRequest,
        repair: bool,
    ) -> Result<ChatResponse, StepFailure> {
        let mut last_error = None;
        for target in self.chain {
            match self.call_model(target, request, repair).await {
                Ok(response) => {
                    self.record.model = Some(target.label());
                    return Ok(response);
                }
                Err(ProviderError::Cancelled) => {
                    return Err(StepFailure {
                        status: RunStatus::Cancelled,
                        message: "cancelled".into(),
                    });
                }
                Err(ProviderError::BudgetExceeded(message)) => {
                    return Err(StepFailure {
                        status: RunStatus::BudgetExceeded,
                        message,
                    });
                }
                Err(e) => last_error = Some((target.label(), e)),
            }
        }
        let message = match last_error {
            Some((label, e)) if self.chain.len() > 1 => format!(
                "{e} (on {label}, the last of {} models tried)",
                self.chain.len()
            ),
            Some((label, e)) => {
                let n = self.record.attempts;
                format!(
                    "{e} (on {label}, after {n} attempt{})",
                    if n == 1 { "" } else { "s" }
                )
            }
            None => "no model to call".into(),
        };
        Err(StepFailure {
            status: RunStatus::Failed,
            message,
        })
    }

    async fn call_model(
        &mut self,
        target: &ModelTarget,
        base: &ChatRequest,
        repair: bool,
    ) -> Result<ChatResponse, ProviderError> {
        let Some((kind, provider)) = self.exec.provider(&target.provider) else {
            return Err(ProviderError::Config(format!(
                "provider `{}` is not configured",
                target.provider
            )));
        };
        let mut request = ChatRequest {
            model: target.model.clone(),
            params: merge_params(target.params.as_ref(), &base.params),
            ..base.clone()
        };
        if let Some(cap) = self.ctx.budget.max_tokens_per_call() {
            let own = request.params.max_tokens.unwrap_or(cap);
            request.params.max_tokens = Some(own.min(cap));
        }
        let cache = self.exec.cache.as_ref();
        let key = (cache.is_some() || self.exec.replay_only)
            .then(|| cache_key(self.exec.provider_id(&target.provider), *kind, &request));
        if let Some(key) = &key
            && !self.ctx.cancel.is_cancelled()
        {
            let started_at_ms = now_ms();
            let started = Instant::now();
            if let Some(response) = cache.and_then(|c| c.get(key)) {
                if let Some(on_delta) = self.on_delta
                    && !response.text.is_empty()
                {
                    on_delta(&response.text);
                }
                if let Some(cache) = cache {
                    cache.hit(key, &self.entry(target, *kind, &request, &response));
                }
                self.record.attempts += 1;
                let latency_ms = started.elapsed().as_millis() as u64;
                let outcome = Attempt::Replied(&response, Cost::known(0.0));
                self.report(target, started_at_ms, latency_ms, outcome, repair, true);
                return Ok(response);
            }
            if self.exec.replay_only {
                let err = ProviderError::Config(format!(
                    "no recorded response for this call (prompt {}, model {}); record one with --record",
                    self.record.prompt,
                    target.label()
                ));
                self.record.attempts += 1;
                let latency_ms = started.elapsed().as_millis() as u64;
                self.report(
                    target,
                    started_at_ms,
                    latency_ms,
                    Attempt::Failed(&err),
                    repair,
                    false,
                );
                return Err(err);
            }
        }
        let price = self.exec.prices.lookup(*kind, &target.model);
        for attempt in 0.. {
            // Client-side waits (rate limits) come before the attempt's clock starts.
            tokio::select! {
                biased;
                () = provider.ready() => {}
                () = self.ctx.cancel.cancelled() => return Err(ProviderError::Cancelled),
            }
            self.check_budget(target, *kind, &request).await?;
            self.record.attempts += 1;
            let started_at_ms = now_ms();
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                () = self.ctx.cancel.cancelled() => Err(ProviderError::Cancelled),
                r = tokio::time::timeout(self.policy.timeout, provider.chat(&request, self.on_delta)) => {
                    r.unwrap_or(Err(ProviderError::Timeout(self.policy.timeout)))
                }
            };
            let latency_ms = started.elapsed().as_millis() as u64;
            let err = match result {
                Ok(response) => {
                    let cost = Cost::of(price, &target.model, &response.usage);
                    let outcome = Attempt::Replied(&response, cost);
                    self.report(target, started_at_ms, latency_ms, outcome, repair, false);
                    if let (Some(cache), Some(key)) = (cache, &key) {
                        cache.put(key, &self.entry(target, *kind, &request, &response));
                    }
                    return Ok(response);
                }
                Err(e) => e,
            };
            let outcome = Attempt::Failed(&err);
            self.report(target, started_at_ms, latency_ms, outcome, repair, false);
            if matches!(err, ProviderError::Cancelled) {
                return Err(err);
            }
            match self.policy.next(attempt, &err, rand::random::<f64>()) {
                Next::GiveUp => return Err(err),
                Next::RetryAfter(wait) => {
                    tokio::select! {
                        () = self.ctx.cancel.cancelled() => return Err(ProviderError::Cancelled),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        unreachable!("the retry loop returns")
    }

    /// Refuses the call when it could cross a `budget:` limit (nothing is sent or recorded).
    async fn check_budget(
        &self,
        target: &ModelTarget,
        kind: crate::spec::ProviderKind,
        request: &ChatRequest,
    ) -> Result<(), ProviderError> {
        let budget = &self.ctx.budget;
        if budget.is_empty() {
            return Ok(());
        }
        let call = super::budget::CallEstimate {
            label: target.label(),
            model: &target.model,
            price: self.exec.prices.lookup(kind, &target.model),
            input_tokens: super::budget::estimate_input_tokens(request),
            output_tokens: u64::from(
                request
                    .params
                    .max_tokens
                    .unwrap_or(super::budget::ASSUMED_MAX_OUTPUT),
            ),
        };
        let run_spent: f64 =
            self.ctx.steps.iter().map(|s| s.cost.usd).sum::<f64>() + self.record.cost.usd;
        budget
            .check(&self.ctx.run_id, run_spent, &call, now_ms())
            .await
            .map_err(ProviderError::BudgetExceeded)
    }

    /// The cache entry of one exchange with `target`, under the provider's identity (what the
    /// key was computed from), so the entry's own [`CacheEntry::key`] is that key.
    fn entry(
        &self,
        target: &ModelTarget,
        kind: crate::spec::ProviderKind,
        request: &ChatRequest,
        response: &ChatResponse,
    ) -> CacheEntry {
        CacheEntry {
            provider: self.exec.provider_id(&target.provider).to_string(),
            kind,
            model: target.model.clone(),
            request: request.clone(),
            response: response.clone(),
        }
    }

    /// Adds one attempt to the step's totals and emits its [`CallRecord`].
    fn report(
        &mut self,
        target: &ModelTarget,
        started_at_ms: i64,
        latency_ms: u64,
        outcome: Attempt<'_>,
        repair: bool,
        cached: bool,
    ) {
        let (usage, cost, error, raw) = match outcome {
            Attempt::Replied(r, cost) => {
                self.successes += 1;
                self.hits += u32::from(cached);
                self.record.cached = self.hits == self.successes;
                (r.usage, cost, None, Some(r.raw.clone()))
            }
            Attempt::Failed(e) => (
                Usage::default(),
                Cost::default(),
                Some(CallFailure {
                    kind: e.kind().into(),
                    message: e.to_string(),
                }),
                None,
            ),
        };
        self.record.usage.add(&usage);
        self.record.cost.add(&cost);
        self.exec.sink.emit(&RunEvent::CallAttempt(CallRecord {
            run_id: self.ctx.run_id.clone(),
            step_index: self.record.step_index,
            attempt: self.record.attempts,
            provider: target.provider.clone(),
            model: target.model.clone(),
            started_at_ms,
            latency_ms,
            usage,
            cost,
            error,
            raw_response: raw,
            repair,
            cached,
        }));
    }
}
