//! The executor's event sink in the server: commits each finished step and each finished agent
//! turn before the executor goes on, so a run resumed after a crash never calls a finished
//! step's model (or repeats a finished turn's model call and tools) again. Model call attempts
//! feed the metrics.

use std::sync::Arc;

use flowrun_core::{EventSink, RunEvent};

use crate::metrics::Metrics;
use crate::store::ServerStore;

/// Commits `StepFinished` events to the store's `steps` table and `AgentTurn` events to its
/// `agent_turns` (runs execute under their server-assigned ids, so the record's `run_id` is
/// the stored run's).
pub struct StepSink {
    pub store: Arc<dyn ServerStore>,
    pub metrics: Arc<Metrics>,
}

impl EventSink for StepSink {
    fn emit(&self, event: &RunEvent) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let commit: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match event {
            RunEvent::StepFinished(record) => {
                let record = record.clone();
                Box::pin(async move {
                    if let Err(e) = store.record_step(&record.run_id, &record).await {
                        tracing::error!(
                            run_id = record.run_id,
                            step_id = record.step_id,
                            error = %e,
                            "cannot commit a finished step"
                        );
                    }
                })
            }
            RunEvent::AgentTurn(turn) => {
                let turn = turn.clone();
                Box::pin(async move {
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
            // Wait for the commit: the step is durable before the next one starts.
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(commit));
            }
            _ => {
                handle.spawn(commit);
            }
        }
    }
}
