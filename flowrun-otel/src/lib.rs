//! OpenTelemetry export of flowrun's runs: spans built from the executor's `RunEvent`s and sent
//! over OTLP (HTTP/protobuf or gRPC) to any collector (Jaeger, Tempo, Honeycomb, Langfuse…).
//!
//! flowrun-core knows nothing of this crate: the CLI and the server add an [`OtelSink`] to the
//! executor's sinks when [`Exporter::from_env`] finds `OTEL_EXPORTER_OTLP_ENDPOINT`.

mod config;
mod encode;
mod http;
mod ids;
mod intern;
mod recycle;
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
use crate::span::Pipeline;

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
    /// Span names and attribute values that repeat.
    pub(crate) strings: intern::Interned,
    /// Attribute vectors the exporter gives back.
    pub(crate) vecs: Arc<recycle::AttributeVecs>,
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

    /// Starts the export pipeline: a batch processor whose thread hands each batch to the OTLP
    /// exporter on a small runtime of its own. Besides `config`, reads the variables
    /// `OtelConfig` does not hold: for HTTP, `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` (unless
    /// `config.endpoint` is set), `_HEADERS` and `_TIMEOUT`; `OTEL_BSP_*`; and
    /// `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`.
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
        let batch = batch_config(|k| std::env::var_os(k).is_some());
        let vecs = Arc::new(recycle::AttributeVecs::default());
        let processor = match config.protocol {
            Protocol::HttpProtobuf => {
                let target = HttpTarget::from_lookup(config.endpoint.as_deref(), config::env)?;
                let exporter = http::HttpExporter::build(target, &resource, vecs.clone())?;
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build()
            }
            Protocol::Grpc => {
                let mut exporter = runtime::OnRuntime::build(config)?;
                exporter.set_resource(&resource);
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build()
            }
        };
        let sampler = Sampler::from_lookup(config::env);
        Ok(Exporter {
            pipeline: Arc::new(Pipeline::new(Box::new(processor), sampler)),
            shared: Arc::new(Shared {
                vecs,
                ..Shared::default()
            }),
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

/// Spans the batch processor holds before it drops new ones (the SDK's default is 2,048): a
/// run makes three or more, and a busy `flowrun test` or server makes thousands a second.
const MAX_QUEUE_SIZE: usize = 16_384;
/// Spans per export request (the SDK's default is 512): fewer, larger requests wake the
/// export thread less often.
const MAX_EXPORT_BATCH_SIZE: usize = 4_096;

/// The batch processor's settings: flowrun's defaults where no `OTEL_BSP_*` variable is set
/// (`is_set`), which the SDK reads itself.
fn batch_config(is_set: impl Fn(&str) -> bool) -> BatchConfig {
    let mut config = BatchConfigBuilder::default();
    if !is_set("OTEL_BSP_MAX_QUEUE_SIZE") {
        config = config.with_max_queue_size(MAX_QUEUE_SIZE);
    }
    if !is_set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        config = config.with_max_export_batch_size(MAX_EXPORT_BATCH_SIZE);
    }
    config.build()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
