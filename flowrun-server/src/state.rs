//! State shared by the API handlers and the workers: the store, built executors per bundle,
//! long-poll waiters per run, the runs in flight here ([`Running`]), short-lived caches of API
//! keys and deployments, the metrics and the webhook settings; [`forward`] feeds the store's
//! events (other replicas' changes) into them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flowrun_core::event::StepRecord;

use flowrun_core::Executor;
use flowrun_core::event::FanOut;
use flowrun_otel::SinkOptions;
use tokio::sync::{Notify, OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use crate::bundle::Canonical;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::sink::StepSink;
use crate::store::{KeyRow, ServerStore, StoreError, StoreEvent};

/// How long a looked-up API key or an environment's deployed bundle is reused without asking
/// the database again. Deploys and rollbacks through this process drop the environment's entry
/// at once; another replica's are seen within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Entries a cache keeps before dropping expired ones.
const CACHE_PRUNE_AT: usize = 1024;

/// Cheap to clone; everything behind one `Arc`.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn ServerStore>,
    pub metrics: Arc<Metrics>,
    /// Whether a webhook secret is configured (else submissions naming a webhook are refused).
    pub webhooks: bool,
    executors: Mutex<HashMap<String, Arc<OnceCell<Arc<Executor>>>>>,
    http: Mutex<Option<reqwest::Client>>,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// The runs executing in this process.
    pub running: Arc<Running>,
    keys: Ttl<KeyRow>,
    deployed: Ttl<String>,
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
            running: Arc::new(Running::default()),
            keys: Ttl::default(),
            deployed: Ttl::default(),
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
    /// environment). Callers asking while it is built wait for that one build, which runs on a
    /// blocking thread (loading a project and TLS roots takes a while), so the async threads
    /// keep serving and the callers' leases keep being renewed.
    pub async fn executor(&self, bundle_id: &str) -> Result<Arc<Executor>, AppError> {
        let cell = lock(&self.executors)
            .entry(bundle_id.to_string())
            .or_default()
            .clone();
        let built = cell
            .get_or_try_init(|| self.build_executor(bundle_id))
            .await;
        if built.is_err() {
            let mut map = lock(&self.executors);
            if map.get(bundle_id).is_some_and(|c| c.get().is_none()) {
                map.remove(bundle_id);
            }
        }
        built.cloned()
    }

    async fn build_executor(&self, bundle_id: &str) -> Result<Arc<Executor>, AppError> {
        let json = self
            .store
            .bundle(bundle_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no bundle `{bundle_id}`")))?;
        let this = self.clone();
        let id = bundle_id.to_string();
        tokio::task::spawn_blocking(move || this.build_executor_now(&id, &json))
            .await
            .map_err(|e| AppError::Internal(format!("bundle {bundle_id}: {e}")))?
    }

    fn build_executor_now(&self, bundle_id: &str, json: &str) -> Result<Arc<Executor>, AppError> {
        let canonical: Canonical = serde_json::from_str(json)
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
            running: self.running.clone(),
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
        Ok(Arc::new(executor))
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

    /// Cancels a run executing in this process, if it is.
    pub fn cancel_local(&self, run_id: &str) {
        self.running.cancel(run_id);
    }

    /// The API key with this secret hash (found ones are kept for [`CACHE_TTL`]; keys never
    /// change once stored).
    pub async fn key(&self, hash: &str) -> Result<Option<KeyRow>, StoreError> {
        if let Some(key) = self.keys.get(hash) {
            return Ok(Some(key));
        }
        let key = self.store.key_by_hash(hash).await?;
        if let Some(key) = &key {
            self.keys.put(hash, key.clone());
        }
        Ok(key)
    }

    /// The bundle `env` runs, for submissions (kept for [`CACHE_TTL`]).
    pub async fn deployed_bundle(&self, env: &str) -> Result<Option<String>, StoreError> {
        if let Some(id) = self.deployed.get(env) {
            return Ok(Some(id));
        }
        let id = self.store.env(env).await?.map(|e| e.bundle_id);
        if let Some(id) = &id {
            self.deployed.put(env, id.clone());
        }
        Ok(id)
    }

    /// Forgets what `env` ran: call after pointing it elsewhere.
    pub fn forget_deployed(&self, env: &str) {
        self.deployed.remove(env);
    }
}

/// Values looked up by name, reused for [`CACHE_TTL`].
struct Ttl<T>(Mutex<HashMap<String, (T, Instant)>>);

impl<T> Default for Ttl<T> {
    fn default() -> Self {
        Ttl(Mutex::new(HashMap::new()))
    }
}

impl<T: Clone> Ttl<T> {
    fn get(&self, name: &str) -> Option<T> {
        let map = lock(&self.0);
        let (value, at) = map.get(name)?;
        (at.elapsed() < CACHE_TTL).then(|| value.clone())
    }

    fn put(&self, name: &str, value: T) {
        let mut map = lock(&self.0);
        if map.len() >= CACHE_PRUNE_AT {
            map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        map.insert(name.to_string(), (value, Instant::now()));
    }

    fn remove(&self, name: &str) {
        lock(&self.0).remove(name);
    }
}

/// The runs executing in this process: who holds each lease, its cancellation, and its last
/// finished step while that step waits to be committed (see [`crate::sink`]).
#[derive(Default)]
pub struct Running(Mutex<HashMap<String, Slot>>);

struct Slot {
    owner: String,
    cancel: CancellationToken,
    pending: Option<StepRecord>,
    lost: bool,
}

/// What a run left when it stopped executing.
pub struct Untracked {
    /// Its last finished step, not committed yet.
    pub pending: Option<StepRecord>,
    /// Whether a commit found the lease lost.
    pub lost: bool,
}

impl Running {
    pub fn track(&self, run_id: &str, owner: &str, cancel: CancellationToken) {
        lock(&self.0).insert(
            run_id.to_string(),
            Slot {
                owner: owner.to_string(),
                cancel,
                pending: None,
                lost: false,
            },
        );
    }

    pub fn untrack(&self, run_id: &str) -> Untracked {
        match lock(&self.0).remove(run_id) {
            Some(slot) => Untracked {
                pending: slot.pending,
                lost: slot.lost,
            },
            None => Untracked {
                pending: None,
                lost: false,
            },
        }
    }

    pub fn cancel(&self, run_id: &str) {
        if let Some(slot) = lock(&self.0).get(run_id) {
            slot.cancel.cancel();
        }
    }

    /// Keeps `step` as the run's pending step; returns the lease owner and the step pending
    /// before it, if any, to commit now. `None` owner: the run is not executing here.
    pub fn defer(&self, step: StepRecord) -> Result<Option<(String, StepRecord)>, StepRecord> {
        let mut map = lock(&self.0);
        let Some(slot) = map.get_mut(&step.run_id) else {
            return Err(step);
        };
        let earlier = slot.pending.replace(step);
        Ok(earlier.map(|s| (slot.owner.clone(), s)))
    }

    /// Takes the run's pending step to commit it, with the lease owner.
    pub fn take_pending(&self, run_id: &str) -> Option<(String, StepRecord)> {
        let mut map = lock(&self.0);
        let slot = map.get_mut(run_id)?;
        let step = slot.pending.take()?;
        Some((slot.owner.clone(), step))
    }

    /// The lease of `run_id` is lost: stops the run.
    pub fn lose(&self, run_id: &str) {
        if let Some(slot) = lock(&self.0).get_mut(run_id) {
            slot.lost = true;
            slot.cancel.cancel();
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
