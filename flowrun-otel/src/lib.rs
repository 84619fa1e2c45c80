//! OpenTelemetry export of flowrun's runs: spans built from the executor's `RunEvent`s and sent
//! over OTLP (HTTP/protobuf or gRPC) to any collector (Jaeger, Tempo, Honeycomb, Langfuse…).
//!
//! flowrun-core knows nothing of this crate: the CLI and the server add an [`OtelSink`] to the
//! executor's sinks when [`Exporter::from_env`] finds `OTEL_EXPORTER_OTLP_ENDPOINT`.

mod config;
mod runtime;
mod sink;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use config::{OtelConfig, OtelError, Protocol};
pub use sink::{OtelSink, SinkOptions};

/// The tracer provider with its exporter, shared by every sink of a process. Dropping it (or
/// [`Exporter::shutdown`]) flushes the spans not sent yet.
pub struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    labels: Arc<Labels>,
}

/// Per-run attributes the caller knows and the events do not carry (the server's environment).
#[derive(Default)]
pub(crate) struct Labels(Mutex<HashMap<String, Vec<(&'static str, String)>>>);

impl Labels {
    pub(crate) fn take(&self, run_id: &str) -> Vec<(&'static str, String)> {
        lock(&self.0).remove(run_id).unwrap_or_default()
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
    /// exporter on a small runtime of its own.
    pub fn new(config: &OtelConfig) -> Result<Exporter, OtelError> {
        let exporter = runtime::OnRuntime::build(config)?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("flowrun");
        Ok(Exporter {
            provider,
            tracer,
            labels: Arc::default(),
        })
    }

    /// A sink that turns one project's run events into spans.
    pub fn sink(&self, options: SinkOptions) -> OtelSink {
        OtelSink::new(self.tracer.clone(), options, self.labels.clone())
    }

    /// Adds an attribute (`flowrun.env`, …) to the span of a run that is about to start.
    pub fn label_run(&self, run_id: &str, key: &'static str, value: impl Into<String>) {
        lock(&self.labels.0)
            .entry(run_id.to_string())
            .or_default()
            .push((key, value.into()));
    }

    /// Sends every finished span and stops the pipeline. Blocks (up to the exporter's timeout);
    /// call it outside async code.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "cannot flush OpenTelemetry spans");
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
