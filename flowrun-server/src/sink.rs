//! The executor's event sink in the server: commits each finished step and each finished agent
//! turn before the executor calls a model again, so a run resumed after a crash never calls a
//! finished step's model (or repeats a finished turn's model call and tools) again. Model call
//! attempts feed the metrics.
//!
//! A finished step is committed when the run's next step starts (or its next agent turn
//! ends), which is before any further model call; the run's last step is not committed here
//! but by the worker, in the transaction that ends the run ([`crate::store::ServerStore::finish`]).
//! Every step commit holds the run's lease: when the lease is lost, the run is stopped.

use std::sync::Arc;

use flowrun_core::event::StepRecord;
use flowrun_core::{EventSink, RunEvent};

use crate::metrics::Metrics;
use crate::state::Running;
use crate::store::ServerStore;

/// Commits `StepFinished` events to the store's `steps` table and `AgentTurn` events to its
/// `agent_turns` (runs execute under their server-assigned ids, so the record's `run_id` is
/// the stored run's).
pub struct StepSink {
    pub store: Arc<dyn ServerStore>,
    pub metrics: Arc<Metrics>,
    pub running: Arc<Running>,
}

type Commit = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl StepSink {
    /// Commits `step` under `owner`'s lease; a lost lease stops the run.
    fn commit_step(&self, owner: String, step: StepRecord) -> Commit {
        let store = self.store.clone();
        let running = self.running.clone();
        Box::pin(async move {
            match store.record_step(&step.run_id, &owner, &step).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        run_id = step.run_id,
                        step_id = step.step_id,
                        "lease lost; stopping the run here"
                    );
                    running.lose(&step.run_id);
                }
                Err(e) => tracing::error!(
                    run_id = step.run_id,
                    step_id = step.step_id,
                    error = %e,
                    "cannot commit a finished step"
                ),
            }
        })
    }

    /// The commit of the run's pending step, if it has one.
    fn pending(&self, run_id: &str) -> Option<Commit> {
        let (owner, step) = self.running.take_pending(run_id)?;
        Some(self.commit_step(owner, step))
    }
}

impl EventSink for StepSink {
    fn emit(&self, event: &RunEvent) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let commit: Commit = match event {
            RunEvent::StepFinished(record) => match self.running.defer(record.clone()) {
                Ok(None) => return,
                Ok(Some((owner, earlier))) => self.commit_step(owner, earlier),
                Err(record) => {
                    tracing::error!(
                        run_id = record.run_id,
                        step_id = record.step_id,
                        "a step finished in a run no worker here holds; not committed"
                    );
                    return;
                }
            },
            RunEvent::StepStarted(start) => match self.pending(&start.run_id) {
                Some(commit) => commit,
                None => return,
            },
            RunEvent::AgentTurn(turn) => {
                let earlier = self.pending(&turn.run_id);
                let store = self.store.clone();
                let turn = turn.clone();
                Box::pin(async move {
                    if let Some(earlier) = earlier {
                        earlier.await;
                    }
                    if let Err(e) = store.record_turn(&turn).await {
                        tracing::error!(
                            run_id = turn.run_id,
                            step_index = turn.step_index,
                            turn = turn.turn,
                            error = %e,
                            "cannot commit a finished agent turn"
                        );
                    }
                })
            }
            RunEvent::CallAttempt(call) => return self.metrics.call(call),
            _ => return,
        };
        match handle.runtime_flavor() {
            // Wait for the commit: the step is durable before the next model call.
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(commit));
            }
            _ => {
                handle.spawn(commit);
            }
        }
    }
}
