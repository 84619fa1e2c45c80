//! One model call with the full reliability policy: per-attempt timeout, retries with
//! backoff, fallback models, cancellation. Every attempt is reported and paid for.

use std::time::Instant;

use super::{Executor, RunCtx, StepFailure, merge_params};
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
                Err(e) => last_error = Some((target.label(), e)),
            }
        }
        let message = match last_error {
            Some((label, e)) if self.chain.len() > 1 => format!(
                "{e} (on {label}, the last of {} models tried)",
                self.chain.len()
            ),
            Some((label, e)) => {
                format!("{e} (on {label}, after {} attempts)", self.record.attempts)
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
        let request = ChatRequest {
            model: target.model.clone(),
            params: merge_params(target.params.as_ref(), &base.params),
            ..base.clone()
        };
        let price = self.exec.prices.lookup(*kind, &target.model);
        for attempt in 0.. {
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
            let (usage, error, raw) = match &result {
                Ok(r) => (r.usage, None, Some(r.raw.clone())),
                Err(e) => (
                    Usage::default(),
                    Some(CallFailure {
                        kind: e.kind().into(),
                        message: e.to_string(),
                    }),
                    None,
                ),
            };
            let cost = if result.is_ok() {
                Cost::of(price, &target.model, &usage)
            } else {
                Cost::default()
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
                latency_ms: started.elapsed().as_millis() as u64,
                usage,
                cost,
                error,
                raw_response: raw,
                repair,
            }));
            let err = match result {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
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
}
