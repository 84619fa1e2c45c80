//! The OTLP/HTTP (protobuf) span exporter: each batch encoded by [`crate::encode`] and POSTed
//! with reqwest on a one-worker Tokio runtime the exporter owns (the batch processor exports
//! from a plain thread; see `runtime.rs` for the same arrangement around gRPC).
//!
//! A failed export (connection error, timeout, a status other than 2xx) logs a warning, which
//! names the endpoint but never a header value, and the batch is dropped: spans are not worth
//! slowing or failing a run for.

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::config::{HttpTarget, OtelError};
use crate::encode::Encoder;
use crate::lock;

pub(crate) struct HttpExporter {
    target: HttpTarget,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    encoder: Mutex<Encoder>,
}

impl std::fmt::Debug for HttpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExporter")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl HttpExporter {
    pub(crate) fn build(
        target: HttpTarget,
        resource: &Resource,
    ) -> Result<HttpExporter, OtelError> {
        let runtime = crate::runtime::own_runtime()?;
        let client =
            flowrun_core::exec::http_client().map_err(|e| OtelError::Build(e.to_string()))?;
        let mut target = target;
        target.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(HttpExporter {
            target,
            client,
            runtime,
            encoder: Mutex::new(Encoder::new(resource)),
        })
    }

    fn send(&self, batch: &[SpanData]) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let body = lock(&self.encoder).encode(batch);
        let request = self
            .client
            .post(self.target.url.clone())
            .headers(self.target.headers.clone())
            .timeout(self.target.timeout)
            .body(body);
        let sent = self.runtime.block_on(async move {
            let response = request.send().await?;
            let status = response.status();
            // Read the (small) reply so that the connection can be reused.
            let _ = response.bytes().await;
            Ok::<_, reqwest::Error>(status)
        });
        let failure = match sent {
            Ok(status) if status.is_success() => return Ok(()),
            Ok(status) => format!("the collector answered {status}"),
            Err(e) => e.without_url().to_string(),
        };
        tracing::warn!(
            endpoint = %self.target.url,
            spans = batch.len(),
            error = %failure,
            "cannot export OpenTelemetry spans; they are dropped"
        );
        Err(OTelSdkError::InternalFailure(failure))
    }
}

impl SpanExporter for HttpExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.send(&batch))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self.encoder.get_mut() {
            Ok(encoder) => encoder.set_resource(resource),
            Err(poisoned) => poisoned.into_inner().set_resource(resource),
        }
    }
}
