//! State shared by the API handlers and the workers: the store, built executors per bundle,
//! long-poll waiters per run, cancellation tokens of runs in flight, the metrics and the
//! webhook settings; [`forward`] feeds the store's events (other replicas' changes) into them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use flowrun_core::Executor;
use flowrun_core::event::FanOut;
use flowrun_otel::SinkOptions;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::bundle::Canonical;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::sink::StepSink;
use crate::store::{ServerStore, StoreEvent};

/// Cheap to clone; everything behind one `Arc`.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn ServerStore>,
    pub metrics: Arc<Metrics>,
    /// Whether a webhook secret is configured (else submissions naming a webhook are refused).
    pub webhooks: bool,
    executors: Mutex<HashMap<String, Arc<Executor>>>,
    http: Mutex<Option<reqwest::Client>>,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    cancels: Mutex<HashMap<String, CancellationToken>>,
    /// Wakes an idle worker when a run is queued.
    pub queued: Notify,
    /// Wakes an idle webhook deliverer when a run ends here.
    pub deliveries: Notify,
    /// Set when the server stops: long polls return early.
    pub stopping: CancellationToken,
    /// OpenTelemetry export of runs, when on.
    pub otel: Option<Arc<flowrun_otel::Exporter>>,
}

impl std::ops::Deref for Shared {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        store: Arc<dyn ServerStore>,
        metrics: Arc<Metrics>,
        webhooks: bool,
        stopping: CancellationToken,
    ) -> Shared {
        Shared(Arc::new(Inner {
            store,
            metrics,
            webhooks,
            executors: Mutex::new(HashMap::new()),
            http: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            cancels: Mutex::new(HashMap::new()),
            queued: Notify::new(),
            deliveries: Notify::new(),
            stopping,
            otel: None,
        }))
    }

    /// Exports every run's spans through `otel` (call before sharing).
    pub fn with_otel(mut self, otel: Option<Arc<flowrun_otel::Exporter>>) -> Shared {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.otel = otel;
        }
        self
    }

    /// The executor of a bundle, built once (providers read their keys from the server's
    /// environment).
    pub async fn executor(&self, bundle_id: &str) -> Result<Arc<Executor>, AppError> {
        if let Some(e) = lock(&self.executors).get(bundle_id) {
            return Ok(e.clone());
        }
        let json = self
            .store
            .bundle(bundle_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no bundle `{bundle_id}`")))?;
        let canonical: Canonical = serde_json::from_str(&json)
            .map_err(|e| AppError::Internal(format!("bundle {bundle_id}: {e}")))?;
        let project = flowrun_core::Project::load(canonical.sources()).map_err(|e| {
            AppError::Internal(format!("stored bundle {bundle_id} is invalid: {e}"))
        })?;
        let http = {
            let mut slot = lock(&self.http);
            match &*slot {
                Some(c) => c.clone(),
                None => {
                    let c = flowrun_core::exec::http_client()
                        .map_err(|e| AppError::Internal(e.to_string()))?;
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        let mut sinks: Vec<Arc<dyn flowrun_core::EventSink>> = vec![Arc::new(StepSink {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
        })];
        if let Some(otel) = &self.otel {
            sinks.push(Arc::new(
                otel.sink(SinkOptions::from_config(&project.config)),
            ));
        }
        let executor = Executor::builder(Arc::new(project))
            .http_client(http)
            .sink(Arc::new(FanOut(sinks)))
            .build()
            .map_err(|e| AppError::Internal(format!("bundle {bundle_id}: {e}")))?;
        let executor = Arc::new(executor);
        lock(&self.executors).insert(bundle_id.to_string(), executor.clone());
        Ok(executor)
    }

    /// The notifier a long poll of `run_id` waits on.
    pub fn waiter(&self, run_id: &str) -> Arc<Notify> {
        lock(&self.waiters)
            .entry(run_id.to_string())
            .or_default()
            .clone()
    }

    /// Drops the notifier of `run_id` when nobody else holds it.
    pub fn forget_waiter(&self, run_id: &str) {
        let mut map = lock(&self.waiters);
        if map.get(run_id).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(run_id);
        }
    }

    /// Wakes every long poll of `run_id` and an idle webhook deliverer (it ended).
    pub fn wake(&self, run_id: &str) {
        self.deliveries.notify_one();
        if let Some(n) = lock(&self.waiters).remove(run_id) {
            n.notify_waiters();
        }
    }

    pub fn track(&self, run_id: &str, token: CancellationToken) {
        lock(&self.cancels).insert(run_id.to_string(), token);
    }

    pub fn untrack(&self, run_id: &str) {
        lock(&self.cancels).remove(run_id);
    }

    /// Cancels a run executing in this process, if it is.
    pub fn cancel_local(&self, run_id: &str) {
        if let Some(t) = lock(&self.cancels).get(run_id) {
            t.cancel();
        }
    }
}

/// Wakes idle workers, long polls and cancellations on the store's events until the feed ends.
pub async fn forward(shared: Shared, mut events: mpsc::Receiver<StoreEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            StoreEvent::Queued => shared.queued.notify_one(),
            StoreEvent::Ended(id) => shared.wake(&id),
            StoreEvent::CancelRequested(id) => shared.cancel_local(&id),
        }
    }
}
