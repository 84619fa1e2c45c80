//! OpenTelemetry export of flowrun's runs: spans built from the executor's `RunEvent`s and sent
//! over OTLP (HTTP/protobuf or gRPC) to any collector (Jaeger, Tempo, Honeycomb, Langfuse…).
//!
//! flowrun-core knows nothing of this crate: the CLI and the server add an [`OtelSink`] to the
//! executor's sinks when [`Exporter::from_env`] finds `OTEL_EXPORTER_OTLP_ENDPOINT`.

mod attributes;
mod batch;
mod config;
mod encode;
mod http;
mod ids;
mod log;
mod runtime;
mod session;
mod sink;
mod span;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfig, BatchConfigBuilder, BatchSpanProcessor, SpanExporter as _,
};

use crate::config::{HttpTarget, Sampler};
use crate::sink::Parent;
use crate::span::{Output, Pipeline};

pub use config::{OtelConfig, OtelError, Protocol};
pub use session::Session;
pub use sink::{OtelSink, SinkOptions};

/// The export pipeline (sampler, batch processor, OTLP exporter), shared by every sink of a
/// process. Dropping it and every sink and session made from it (or [`Exporter::shutdown`])
/// flushes the spans not sent yet.
pub struct Exporter {
    pipeline: Arc<Pipeline>,
    shared: Arc<Shared>,
}

/// What every sink of an exporter shares.
#[derive(Default)]
pub(crate) struct Shared {
    /// Per-run attributes the caller knows and the events do not carry (the server's
    /// environment), by run id.
    runs: Mutex<HashMap<String, Vec<(&'static str, String)>>>,
    /// Whether `runs` may hold anything: the CLI never labels, and its sinks then skip the
    /// lock on every run.
    any: AtomicBool,
}

impl Shared {
    /// The labels of a run that is starting.
    pub(crate) fn take(&self, run_id: &str) -> Vec<(&'static str, String)> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        lock(&self.runs).remove(run_id).unwrap_or_default()
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter configured from the standard `OTEL_*` environment variables, or `None` when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is not set.
    /// `service` is the service name when `OTEL_SERVICE_NAME` is not set.
    pub fn from_env(service: &str) -> Result<Option<Exporter>, OtelError> {
        match OtelConfig::from_env(service)? {
            Some(config) => Exporter::new(&config).map(Some),
            None => Ok(None),
        }
    }

    /// Starts the export pipeline. OTLP/HTTP: spans are encoded where they end into a queue
    /// whose thread sends them on a small runtime of its own (`batch.rs`, `http.rs`). gRPC:
    /// the SDK's batch processor and `opentelemetry-otlp`'s tonic exporter. Besides `config`,
    /// reads the variables `OtelConfig` does not hold: for HTTP,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` (unless `config.endpoint` is set), `_HEADERS` and
    /// `_TIMEOUT`; `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and
    /// `OTEL_BSP_SCHEDULE_DELAY`; and `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`.
    pub fn new(config: &OtelConfig) -> Result<Exporter, OtelError> {
        // The SDK's resource: the service name and version, `OTEL_RESOURCE_ATTRIBUTES` and
        // the `telemetry.sdk.*` attributes, as before.
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let settings = batch::Settings::from_lookup(config::env);
        let output = match config.protocol {
            Protocol::HttpProtobuf => {
                let target = HttpTarget::from_lookup(config.endpoint.as_deref(), config::env)?;
                let mut sender = http::HttpSender::build(target, &resource)?;
                let send: batch::Send = Box::new(move |framed, spans| {
                    // A failure is logged by the sender; the batch is gone either way.
                    let _ = sender.send(framed, spans);
                });
                let queue = batch::Batcher::start(settings, send)
                    .map_err(|e| OtelError::Build(e.to_string()))?;
                Output::Encoded(queue)
            }
            Protocol::Grpc => {
                let mut exporter = runtime::OnRuntime::build(config)?;
                exporter.set_resource(&resource);
                let processor = BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch_config(settings))
                    .build();
                Output::Processor(Box::new(processor))
            }
        };
        let sampler = Sampler::from_lookup(config::env);
        Ok(Exporter {
            pipeline: Arc::new(Pipeline::new(output, sampler)),
            shared: Arc::new(Shared::default()),
        })
    }

    /// A sink that turns one project's run events into spans.
    pub fn sink(&self, options: SinkOptions) -> OtelSink {
        OtelSink::new(
            self.pipeline.clone(),
            options,
            self.shared.clone(),
            Parent::Root,
            None,
        )
    }

    /// Starts the span of a `flowrun test` of `cases` case runs (cases × repeats).
    pub fn test_session(&self, cases: usize) -> Session {
        let attributes = vec![opentelemetry::KeyValue::new(
            "flowrun.test.cases",
            cases as i64,
        )];
        Session::start(
            self.pipeline.clone(),
            self.shared.clone(),
            "flowrun test",
            attributes,
        )
    }

    /// Starts the span of a `flowrun eval` of `cases` case runs per side against `baseline`
    /// (its label, e.g. `git:main (3f2a1b9c)`).
    pub fn eval_session(&self, baseline: &str, cases: usize) -> Session {
        let attributes = vec![
            opentelemetry::KeyValue::new("flowrun.eval.baseline", baseline.to_string()),
            opentelemetry::KeyValue::new("flowrun.eval.cases", cases as i64),
        ];
        Session::start(
            self.pipeline.clone(),
            self.shared.clone(),
            "flowrun eval",
            attributes,
        )
    }

    /// Adds an attribute (`flowrun.env`, …) to the span of a run that is about to start.
    pub fn label_run(&self, run_id: &str, key: &'static str, value: impl Into<String>) {
        let mut runs = lock(&self.shared.runs);
        runs.entry(run_id.to_string())
            .or_default()
            .push((key, value.into()));
        self.shared.any.store(true, Ordering::Release);
    }

    /// Sends every finished span and stops the pipeline. Blocks (up to the exporter's timeout);
    /// call it outside async code.
    pub fn shutdown(&self) {
        if let Err(e) = self.pipeline.shutdown() {
            tracing::warn!(error = %e, "cannot flush OpenTelemetry spans");
        }
    }
}

/// The SDK batch processor's settings (gRPC): the same as the HTTP queue's.
fn batch_config(settings: batch::Settings) -> BatchConfig {
    BatchConfigBuilder::default()
        .with_max_queue_size(settings.max_queue)
        .with_max_export_batch_size(settings.max_batch)
        .with_scheduled_delay(settings.delay)
        .build()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
