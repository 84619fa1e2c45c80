//! Workers: a claimer takes queued runs under a lease, as many per claim as there are idle
//! workers, and each runs in its own task: it heartbeats the lease, executes with the bundle's
//! executor (resuming from the steps a crashed attempt committed) and commits the end with the
//! run's last step. A reclaimer re-queues runs whose lease expired.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use flowrun_core::event::StepRecord;
use flowrun_core::spend::{SpendLedger, SpendQuery};
use flowrun_core::{RunRequest, RunStatus};
use serde_json::to_value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;
use crate::store::{Claimed, RunResult, RunRow, RunState, ServerStore, StoreError};

/// How workers lease and poll.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How many runs execute at once.
    pub workers: usize,
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

/// Claims and executes runs until `stop`, at most `cfg.workers` at once; returns when the runs
/// in flight have ended. A run still executing when `hard_stop` fires is given back to the
/// queue.
///
/// Each claim leases its runs to an owner of its own (`{instance}/{claim number}`), so two
/// executions of one run in this process (after its lease expired) never share an owner.
pub async fn work(
    shared: Shared,
    instance: String,
    cfg: WorkerConfig,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) {
    let idle = Arc::new(Semaphore::new(cfg.workers.max(1)));
    let mut tasks = JoinSet::new();
    let mut claims = 0u64;
    while !stop.is_cancelled() {
        let first = tokio::select! {
            permit = idle.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let mut permits = vec![first];
        while let Ok(p) = idle.clone().try_acquire_owned() {
            permits.push(p);
        }
        claims += 1;
        let owner = format!("{instance}/{claims}");
        let limit = u32::try_from(permits.len()).unwrap_or(u32::MAX);
        match shared
            .store
            .claim_with_steps(&owner, now(), lease_until(&cfg), limit)
            .await
        {
            Ok(runs) if !runs.is_empty() => {
                for (claimed, permit) in runs.into_iter().zip(permits) {
                    tasks.spawn(execute(
                        shared.clone(),
                        owner.clone(),
                        cfg.clone(),
                        claimed,
                        hard_stop.clone(),
                        permit,
                    ));
                }
            }
            Ok(_) => {
                drop(permits);
                tokio::select! {
                    _ = shared.queued.notified() => {}
                    _ = tokio::time::sleep(cfg.poll) => {}
                    _ = stop.cancelled() => {}
                }
            }
            Err(e) => {
                drop(permits);
                tracing::warn!(owner, error = %e, "cannot claim runs");
                tokio::select! {
                    _ = tokio::time::sleep(cfg.poll) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn execute(
    shared: Shared,
    owner: String,
    cfg: WorkerConfig,
    claimed: Claimed,
    hard_stop: CancellationToken,
    _idle: OwnedSemaphorePermit,
) {
    let Claimed { run, steps } = claimed;
    let cancel = CancellationToken::new();
    shared.running.track(&run.id, &owner, cancel.clone());
    let result = match steps {
        Ok(steps) => execute_inner(&shared, &owner, &cfg, &run, steps, &cancel, &hard_stop).await,
        // A record this build cannot decode will not decode on the next claim either: the run
        // ends here rather than going round the queue for ever.
        Err(e @ StoreError::Json(_)) => {
            tracing::error!(run_id = run.id, error = %e, "cannot decode the run's committed steps; failing it");
            Some(ended(
                RunState::Failed,
                "the run's committed steps cannot be read back (the record is damaged or from \
                 an incompatible version); it was failed rather than retried",
            ))
        }
        // Anything else may pass: the run goes back to the queue.
        Err(e) => {
            tracing::error!(run_id = run.id, error = %e, "cannot read the run's steps");
            None
        }
    };
    let left = shared.running.untrack(&run.id);
    if left.lost {
        tracing::warn!(
            run_id = run.id,
            "lease lost before the run ended; another worker owns it"
        );
        return;
    }
    let owner = owner.as_str();
    match result {
        Some(result) => {
            let ended_at = now();
            match shared
                .store
                .finish(&run.id, owner, &result, left.pending.as_ref(), ended_at)
                .await
            {
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
            // Interrupted: keep what the last step paid for, then give the run back.
            if let Some(step) = &left.pending
                && let Err(e) = shared.store.record_step(&run.id, owner, step).await
            {
                tracing::error!(run_id = run.id, error = %e, "cannot commit a finished step");
            }
            if let Err(e) = shared.store.release(&run.id, owner).await {
                tracing::error!(run_id = run.id, error = %e, "cannot release a run's lease");
            }
        }
    }
}

/// The run's end, or `None` when it was interrupted by shutdown or lost its lease. The lease
/// is renewed every third of its length from the claim on, while the executor is built and
/// the committed steps are read as well as while the run executes.
async fn execute_inner(
    shared: &Shared,
    owner: &str,
    cfg: &WorkerConfig,
    run: &RunRow,
    completed: Vec<StepRecord>,
    cancel: &CancellationToken,
    hard_stop: &CancellationToken,
) -> Option<RunResult> {
    let mut fut = pin!(run_to_end(shared, run, completed, cancel));
    let mut beat = tokio::time::interval((cfg.lease / 3).max(Duration::from_millis(50)));
    // The claim was the first heartbeat.
    beat.tick().await;
    loop {
        tokio::select! {
            result = &mut fut => return result,
            _ = beat.tick() => {
                match shared.store.heartbeat(&run.id, owner, lease_until(cfg)).await {
                    Ok(Some(true)) => cancel.cancel(),
                    Ok(Some(false)) => {}
                    Ok(None) => {
                        tracing::warn!(run_id = run.id, "lease lost; stopping the run here");
                        shared.running.lose(&run.id);
                        return None;
                    }
                    Err(e) => tracing::warn!(run_id = run.id, error = %e, "heartbeat failed"),
                }
            }
            _ = hard_stop.cancelled() => return None,
        }
    }
}

/// Executes the run from its first unfinished step (after `completed`, the steps earlier
/// attempts committed); `None` when its state cannot be read.
async fn run_to_end(
    shared: &Shared,
    run: &RunRow,
    completed: Vec<StepRecord>,
    cancel: &CancellationToken,
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
    // Only agent steps commit turns.
    let turns = if has_agents(executor.project()) {
        match shared.store.turns(&run.id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(run_id = run.id, error = %e, "cannot read the run's agent turns");
                return None;
            }
        }
    } else {
        Vec::new()
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
    let outcome = executor.run(request).await;
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

/// Whether any flow of the project has an agent step.
fn has_agents(project: &flowrun_core::Project) -> bool {
    project
        .flows
        .values()
        .any(|f| f.spec.steps.iter().any(|s| s.agent.is_some()))
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
