//! `flowrun serve`: deployed flows over HTTP. Bundles (content-addressed project versions),
//! environments that point at them (deploy, promote, roll back), a durable run queue whose
//! workers lease runs and commit each step, so no accepted run is lost to a crash.
//!
//! State lives behind [`store::ServerStore`]: [`store::SqliteStore`] embedded, or
//! [`store::PostgresStore`] shared by several replicas. [`Server::start`] serves on a listener
//! and runs the workers, the reclaimer and the webhook deliverer in-process. Logs are `tracing`
//! events: the binary installs the subscriber.

pub mod api;
pub mod auth;
pub mod bundle;
pub mod error;
pub mod metrics;
pub mod sink;
pub mod state;
pub mod store;
pub mod testing;
pub mod webhook;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::state::Shared;
use crate::store::ServerStore;
use crate::webhook::WebhookConfig;
use crate::worker::WorkerConfig;

/// Runs a server executes at once unless told otherwise: each is a task that mostly waits on
/// its provider, so a few dozen cost little and keep a real provider's seconds-long calls from
/// queueing behind each other.
pub const DEFAULT_WORKERS: usize = 64;

/// The PostgreSQL connections a process opens for `workers` workers unless told otherwise: a
/// worker holds one only for a statement, so half as many (at most 32), plus 8 for the API,
/// the listener and the reclaimer. Two replicas with the defaults stay within PostgreSQL's
/// default `max_connections` of 100.
pub fn default_pool_size(workers: usize) -> usize {
    workers.div_ceil(2).clamp(1, 32) + 8
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Runs executed at once ([`DEFAULT_WORKERS`]). A run mostly waits on its model calls,
    /// so this is a bound on concurrency, not on threads.
    pub workers: usize,
    pub lease: Duration,
    pub poll: Duration,
    pub max_attempts: u32,
    /// How long in-flight runs may take to finish on shutdown before their leases are released.
    pub grace: Duration,
    pub max_body: usize,
    pub webhook: WebhookConfig,
    /// Where run, step and model call spans go (OTLP), when export is on.
    pub otel: Option<Arc<flowrun_otel::Exporter>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: DEFAULT_WORKERS,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            max_attempts: 5,
            grace: Duration::from_secs(30),
            max_body: 10 * 1024 * 1024,
            webhook: WebhookConfig::default(),
            otel: None,
        }
    }
}

/// A running server: the HTTP listener, the workers and the reclaimer.
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    grace: Duration,
    http: JoinHandle<()>,
    workers: JoinHandle<()>,
    reclaimer: JoinHandle<()>,
    deliverer: JoinHandle<()>,
    /// Forwards the store's events (other replicas' changes) to the workers and long polls.
    events: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves on `listener`; first re-queues the runs a crashed process left running, where
    /// the store can tell ([`ServerStore::recover_abandoned`]).
    pub async fn start(
        listener: TcpListener,
        store: Arc<dyn ServerStore>,
        config: ServerConfig,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        match store
            .recover_abandoned(flowrun_core::event::now_ms(), config.max_attempts)
            .await
        {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(
                    runs = ids.len(),
                    "re-queued the runs a previous process left"
                );
            }
            Ok(_) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        let stop = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let shared = Shared::new(
            store,
            Arc::new(Metrics::new()),
            config.webhook.secret.is_some(),
            stop.clone(),
        )
        .with_otel(config.otel.clone());
        let events = shared
            .store
            .subscribe()
            .map(|rx| tokio::spawn(state::forward(shared.clone(), rx)));
        let router = api::router(shared.clone(), config.max_body);
        let http = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the HTTP server stopped");
                }
            })
        };
        let wcfg = WorkerConfig {
            workers: config.workers.max(1),
            lease: config.lease,
            poll: config.poll,
            max_attempts: config.max_attempts,
        };
        let reclaimer = tokio::spawn(worker::reclaim(shared.clone(), wcfg.clone(), stop.clone()));
        let instance = flowrun_core::new_id();
        let deliverer = tokio::spawn(webhook::deliver(
            shared.clone(),
            format!("{instance}/webhooks"),
            config.webhook.clone(),
            stop.clone(),
        ));
        let workers = tokio::spawn(worker::work(
            shared.clone(),
            instance,
            wcfg,
            stop.clone(),
            hard_stop.clone(),
        ));
        Ok(Server {
            addr,
            stop,
            hard_stop,
            grace: config.grace,
            http,
            workers,
            reclaimer,
            deliverer,
            events,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops claiming and accepting, lets runs in flight finish within the grace period, then
    /// gives the rest back to the queue.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let hard_stop = self.hard_stop.clone();
        let grace = self.grace;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            hard_stop.cancel();
        });
        let _ = self.workers.await;
        timer.abort();
        let _ = self.reclaimer.await;
        // A delivery cut short here is retried when its lease expires.
        let mut deliverer = self.deliverer;
        if tokio::time::timeout(Duration::from_secs(5), &mut deliverer)
            .await
            .is_err()
        {
            deliverer.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        if let Some(events) = self.events {
            events.abort();
        }
    }

    /// Stops everything at once, as a crash would: leases stay in the database until they
    /// expire. For tests.
    pub fn abort(self) {
        self.http.abort();
        self.reclaimer.abort();
        self.deliverer.abort();
        if let Some(events) = self.events {
            events.abort();
        }
        self.workers.abort();
    }

    /// Waits until the HTTP server ends (after [`Server::shutdown`] from another task, or an
    /// error).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}
