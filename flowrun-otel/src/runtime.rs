//! The OTLP exporter on a runtime of its own.
//!
//! The SDK's batch processor exports from a plain thread, but the HTTP (async reqwest) and
//! gRPC (tonic) clients need a Tokio reactor. Rather than lean on the caller's runtime (the CLI
//! has none once a run ends; the server's may be shutting down), the exporter owns a
//! one-worker runtime and blocks the batch thread on it for each export.

use std::time::Duration;

use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use crate::config::{OtelConfig, OtelError, Protocol};

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
    pub(crate) fn build(config: &OtelConfig) -> Result<OnRuntime, OtelError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowrun-otel")
            .enable_all()
            .build()
            .map_err(|e| OtelError::Build(e.to_string()))?;
        let inner = {
            let _entered = runtime.enter();
            let builder = opentelemetry_otlp::SpanExporter::builder();
            match config.protocol {
                Protocol::HttpProtobuf => {
                    let mut b = builder
                        .with_http()
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
                    if let Some(url) = &config.endpoint {
                        b = b.with_endpoint(url);
                    }
                    b.build()
                }
                Protocol::Grpc => {
                    let mut b = builder
                        .with_tonic()
                        .with_protocol(opentelemetry_otlp::Protocol::Grpc);
                    if let Some(url) = &config.endpoint {
                        b = b.with_endpoint(url);
                    }
                    b.build()
                }
            }
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
