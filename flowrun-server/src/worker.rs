//! Workers: claim queued runs under a lease, heartbeat it, execute with the bundle's executor
//! (resuming from the steps a crashed attempt committed) and commit the end. A reclaimer
//! re-queues runs whose lease expired.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use flowrun_core::spend::{SpendLedger, SpendQuery};
use flowrun_core::{RunRequest, RunStatus};
use serde_json::to_value;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;
use crate::store::{RunResult, RunRow, RunState, ServerStore};

/// How workers lease and poll.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long a claimed run is held without a heartbeat.
    pub lease: Duration,
    /// How often an idle worker looks for queued runs (it is also woken on submit).
    pub poll: Duration,
    /// Claims before a run whose workers keep dying is failed.
    pub max_attempts: u32,
}

fn now() -> i64 {
    flowrun_core::event::now_ms()
}

fn lease_until(cfg: &WorkerConfig) -> i64 {
    now() + cfg.lease.as_millis() as i64
}

/// Claims and executes runs until `stop`; a run still executing when `hard_stop` fires is
/// given back to the queue.
pub async fn work(
    shared: Shared,
    owner: String,
    cfg: WorkerConfig,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        match shared.store.claim(&owner, now(), lease_until(&cfg)).await {
            Ok(Some(run)) => execute(&shared, &owner, &cfg, run, &hard_stop).await,
            Ok(None) => {
                tokio::select! {
                    _ = shared.queued.notified() => {}
                    _ = tokio::time::sleep(cfg.poll) => {}
                    _ = stop.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(worker = owner, error = %e, "cannot claim a run");
                tokio::select! {
                    _ = tokio::time::sleep(cfg.poll) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
}

async fn execute(
    shared: &Shared,
    owner: &str,
    cfg: &WorkerConfig,
    run: RunRow,
    hard_stop: &CancellationToken,
) {
    let cancel = CancellationToken::new();
    shared.track(&run.id, cancel.clone());
    let result = execute_inner(shared, owner, cfg, &run, &cancel, hard_stop).await;
    shared.untrack(&run.id);
    match result {
        Some(result) => {
            let ended_at = now();
            match shared.store.finish(&run.id, owner, &result, ended_at).await {
                Ok(true) => {
                    let seconds = (ended_at - run.created_at) as f64 / 1000.0;
                    shared.metrics.run_ended(result.status, seconds);
                    tracing::info!(
                        run_id = run.id,
                        env = run.env,
                        flow = run.flow,
                        status = result.status.as_str(),
                        seconds,
                        "run ended"
                    );
                }
                Ok(false) => tracing::warn!(
                    run_id = run.id,
                    "lease lost before the run ended; another worker owns it"
                ),
                Err(e) => tracing::error!(run_id = run.id, error = %e, "cannot commit a run's end"),
            }
            shared.wake(&run.id);
        }
        None => {
            if let Err(e) = shared.store.release(&run.id, owner).await {
                tracing::error!(run_id = run.id, error = %e, "cannot release a run's lease");
            }
        }
    }
}

/// The run's end, or `None` when it was interrupted by shutdown or lost its lease.
async fn execute_inner(
    shared: &Shared,
    owner: &str,
    cfg: &WorkerConfig,
    run: &RunRow,
    cancel: &CancellationToken,
    hard_stop: &CancellationToken,
) -> Option<RunResult> {
    if run.cancel_requested {
        return Some(ended(RunState::Cancelled, "cancelled"));
    }
    let executor = match shared.executor(&run.bundle_id).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(run_id = run.id, bundle_id = run.bundle_id, error = ?e, "cannot build the run's executor");
            return Some(ended(
                RunState::Failed,
                "the deployed bundle could not be loaded",
            ));
        }
    };
    let completed = match shared.store.steps(&run.id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(run_id = run.id, error = %e, "cannot read the run's steps");
            return None;
        }
    };
    let turns = match shared.store.turns(&run.id).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(run_id = run.id, error = %e, "cannot read the run's agent turns");
            return None;
        }
    };
    let ledger = Arc::new(EnvLedger {
        store: shared.store.clone(),
        env: run.env.clone(),
    });
    if let Some(otel) = &shared.otel {
        otel.label_run(&run.id, "flowrun.env", run.env.clone());
        otel.label_run(&run.id, "flowrun.bundle", run.bundle_id.clone());
    }
    let request = RunRequest::new(run.flow.clone(), run.input.clone())
        .with_cancel(cancel.clone())
        .with_ledger(ledger)
        .with_run_id(run.id.clone())
        .resuming(completed)
        .resuming_turns(turns);
    let mut fut = pin!(executor.run(request));
    let mut beat = tokio::time::interval((cfg.lease / 3).max(Duration::from_millis(50)));
    beat.tick().await;
    let outcome = loop {
        tokio::select! {
            outcome = &mut fut => break outcome,
            _ = beat.tick() => {
                match shared.store.heartbeat(&run.id, owner, lease_until(cfg)).await {
                    Ok(Some(true)) => cancel.cancel(),
                    Ok(Some(false)) => {}
                    Ok(None) => {
                        tracing::warn!(run_id = run.id, "lease lost; stopping the run here");
                        return None;
                    }
                    Err(e) => tracing::warn!(run_id = run.id, error = %e, "heartbeat failed"),
                }
            }
            _ = hard_stop.cancelled() => return None,
        }
    };
    if let Ok(o) = &outcome
        && o.status == RunStatus::BudgetExceeded
    {
        shared.metrics.budget_refused(&run.env);
        tracing::info!(
            run_id = run.id,
            env = run.env,
            "run stopped by a budget limit"
        );
    }
    Some(match outcome {
        Ok(o) => RunResult {
            status: match o.status {
                RunStatus::Succeeded => RunState::Succeeded,
                RunStatus::Cancelled => RunState::Cancelled,
                _ => RunState::Failed,
            },
            output: o.output.clone(),
            error: o.error.clone(),
            usage: to_value(o.usage).ok(),
            cost: to_value(&o.cost).ok(),
        },
        Err(e) => ended(RunState::Failed, &e.to_string()),
    })
}

/// Today's spend of one environment, from the store, for `max_cost_per_day`.
struct EnvLedger {
    store: Arc<dyn ServerStore>,
    env: String,
}

#[async_trait::async_trait]
impl SpendLedger for EnvLedger {
    async fn spent(&self, query: &SpendQuery<'_>) -> Result<f64, String> {
        self.store
            .spent(&self.env, query.flow, query.since_ms, query.exclude_run)
            .await
            .map_err(|e| e.to_string())
    }
}

fn ended(status: RunState, error: &str) -> RunResult {
    RunResult {
        status,
        output: None,
        error: Some(error.to_string()),
        usage: None,
        cost: None,
    }
}

/// Re-queues runs of dead workers every half lease until `stop`.
pub async fn reclaim(shared: Shared, cfg: WorkerConfig, stop: CancellationToken) {
    let period = (cfg.lease / 2).max(Duration::from_millis(50));
    loop {
        match shared.store.reclaim_expired(now(), cfg.max_attempts).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(runs = ids.len(), "reclaimed runs with expired leases");
                for id in &ids {
                    shared.wake(id);
                }
                shared.queued.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot reclaim expired leases"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
    }
}
