//! The OTLP/gRPC exporter (`opentelemetry-otlp`'s tonic one) on a runtime of its own.
//!
//! The SDK's batch processor exports from a plain thread, but the gRPC (tonic) and HTTP
//! (reqwest, `http.rs`) clients need a Tokio reactor. Rather than lean on the caller's runtime
//! (the CLI has none once a run ends; the server's may be shutting down), each exporter owns a
//! one-worker runtime ([`own_runtime`]) and blocks the batch thread on it for each export.

use std::time::Duration;

use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use crate::config::{OtelConfig, OtelError};

/// The one-worker runtime an exporter runs its client on.
pub(crate) fn own_runtime() -> Result<tokio::runtime::Runtime, OtelError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("flowrun-otel")
        .enable_all()
        .build()
        .map_err(|e| OtelError::Build(e.to_string()))
}

pub(crate) struct OnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for OnRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnRuntime").finish_non_exhaustive()
    }
}

impl OnRuntime {
    /// The gRPC exporter; it reads `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, `_HEADERS` and
    /// `_TIMEOUT` itself unless `config.endpoint` is set.
    pub(crate) fn build(config: &OtelConfig) -> Result<OnRuntime, OtelError> {
        let runtime = own_runtime()?;
        let inner = {
            let _entered = runtime.enter();
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc);
            if let Some(url) = &config.endpoint {
                builder = builder.with_endpoint(url);
            }
            builder
                .build()
                .map_err(|e| OtelError::Build(e.to_string()))?
        };
        Ok(OnRuntime { inner, runtime })
    }
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let result = self.runtime.block_on(self.inner.export(batch));
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
