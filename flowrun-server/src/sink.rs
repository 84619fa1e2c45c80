//! The executor's event sink in the server: commits each finished step before the executor
//! goes on, so a run resumed after a crash never calls a finished step's model again. Model
//! call attempts feed the metrics.

use std::sync::Arc;

use flowrun_core::{EventSink, RunEvent};

use crate::metrics::Metrics;
use crate::store::ServerStore;

/// Commits `StepFinished` events to the store's `steps` table (runs execute under their
/// server-assigned ids, so the record's `run_id` is the stored run's).
pub struct StepSink {
    pub store: Arc<dyn ServerStore>,
    pub metrics: Arc<Metrics>,
}

impl EventSink for StepSink {
    fn emit(&self, event: &RunEvent) {
        let record = match event {
            RunEvent::StepFinished(record) => record,
            RunEvent::CallAttempt(call) => return self.metrics.call(call),
            _ => return,
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let record = record.clone();
        let commit = async move {
            if let Err(e) = store.record_step(&record.run_id, &record).await {
                tracing::error!(
                    run_id = record.run_id,
                    step_id = record.step_id,
                    error = %e,
                    "cannot commit a finished step"
                );
            }
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
