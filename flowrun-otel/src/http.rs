//! The OTLP/HTTP (protobuf) sender: each batch of framed spans from the export queue
//! (`batch.rs`) wrapped into a request by [`crate::encode`] and POSTed with reqwest on a
//! one-worker Tokio runtime the sender owns (the queue exports from a plain thread; see
//! `runtime.rs` for the same arrangement around gRPC).
//!
//! A failed export (connection error, timeout, a status other than 2xx) logs a warning, which
//! names the endpoint but never a header value, and the batch is dropped: spans are not worth
//! slowing or failing a run for.

use opentelemetry_sdk::Resource;
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::config::{HttpTarget, OtelError};
use crate::encode::Encoder;

pub(crate) struct HttpSender {
    target: HttpTarget,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    encoder: Encoder,
}

impl std::fmt::Debug for HttpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSender")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl HttpSender {
    pub(crate) fn build(target: HttpTarget, resource: &Resource) -> Result<HttpSender, OtelError> {
        let runtime = crate::runtime::own_runtime()?;
        let client =
            flowrun_core::exec::http_client().map_err(|e| OtelError::Build(e.to_string()))?;
        let mut target = target;
        target.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(HttpSender {
            target,
            client,
            runtime,
            encoder: Encoder::new(resource),
        })
    }

    /// POSTs one request holding `framed` (`spans` spans, see `encode::put_framed`); on a
    /// failure, logs it and says why (without header values).
    pub(crate) fn send(&mut self, framed: &[u8], spans: usize) -> Result<(), String> {
        if spans == 0 {
            return Ok(());
        }
        let body = self.encoder.wrap(framed);
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
            spans,
            error = %failure,
            "cannot export OpenTelemetry spans; they are dropped"
        );
        Err(failure)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use flowrun_core::cost::Cost;
    use flowrun_core::event::{RunEnd, RunStart};
    use flowrun_core::provider::Usage;
    use flowrun_core::{EventSink as _, RunEvent, RunStatus};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    use serde_json::json;

    use super::*;
    use crate::{Exporter, OtelConfig, Protocol, SinkOptions};

    type Got = Arc<Mutex<Vec<(HeaderMap, ExportTraceServiceRequest)>>>;

    /// A receiver on its own thread that answers `status` and keeps what it got.
    fn receiver(status: StatusCode) -> (String, Got) {
        let got = Got::default();
        let keep = got.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                        let keep = keep.clone();
                        async move {
                            let req = ExportTraceServiceRequest::decode(body).unwrap();
                            keep.lock().unwrap().push((headers, req));
                            status
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        (format!("http://{addr}/v1/traces"), got)
    }

    fn target(url: &str) -> HttpTarget {
        HttpTarget::from_lookup(Some(url), |k| {
            (k == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "x-tenant=acme,x-key=s%3Dcret".into())
        })
        .unwrap()
    }

    fn resource() -> Resource {
        Resource::builder_empty().with_service_name("svc").build()
    }

    /// Spans framed as the export queue holds them.
    fn framed(n: usize) -> Vec<u8> {
        let (pipeline, collect) = crate::span::testing::pipeline();
        for _ in 0..n {
            let ids = pipeline.start(None).unwrap();
            let span = crate::span::OpenSpan::new(
                ids,
                "flow f",
                opentelemetry::trace::SpanKind::Internal,
                std::time::SystemTime::now(),
                vec![],
            );
            pipeline.end(span, std::time::SystemTime::now());
        }
        let mut framed = Vec::new();
        for span in &collect.spans() {
            crate::encode::put_framed(&span.into(), &mut framed);
        }
        framed
    }

    #[test]
    fn posts_protobuf_with_the_headers() {
        let (url, got) = receiver(StatusCode::OK);
        let mut sender = HttpSender::build(target(&url), &resource()).unwrap();
        sender.send(&framed(2), 2).unwrap();
        sender.send(&framed(1), 1).unwrap();
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2);
        let (headers, request) = &got[0];
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-tenant"], "acme");
        assert_eq!(headers["x-key"], "s=cret");
        assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 2);
        assert_eq!(got[1].1.resource_spans[0].scope_spans[0].spans.len(), 1);
    }

    #[test]
    fn failures_drop_the_batch_without_showing_headers() {
        let (url, got) = receiver(StatusCode::INTERNAL_SERVER_ERROR);
        let mut sender = HttpSender::build(target(&url), &resource()).unwrap();
        let e = sender.send(&framed(1), 1).unwrap_err();
        assert!(e.contains("500"), "{e}");
        assert!(!e.contains("cret"), "{e}");
        assert_eq!(got.lock().unwrap().len(), 1);
        // Nothing listens on port 9 of loopback (discard): a connection error, not a panic.
        let mut closed = target("http://127.0.0.1:9/v1/traces");
        closed.timeout = Duration::from_secs(2);
        let mut sender = HttpSender::build(closed, &resource()).unwrap();
        let e = sender.send(&framed(1), 1).unwrap_err();
        assert!(!e.contains("cret"), "{e}");
    }

    /// The whole pipeline: sink, batch processor, this exporter, flushed by `shutdown`.
    #[test]
    fn an_exporter_sends_a_runs_spans_on_shutdown() {
        let (url, got) = receiver(StatusCode::OK);
        let config = OtelConfig {
            protocol: Protocol::HttpProtobuf,
            service_name: "flowrun-test".into(),
            endpoint: Some(url),
        };
        let exporter = Exporter::new(&config).unwrap();
        let sink = exporter.sink(SinkOptions::default());
        sink.emit(&RunEvent::RunStarted(RunStart {
            run_id: "r1".into(),
            target_kind: "prompt".into(),
            target: "p".into(),
            version: "v1".into(),
            input: json!({}),
            started_at_ms: 1_000,
        }));
        sink.emit(&RunEvent::RunFinished(RunEnd {
            run_id: "r1".into(),
            status: RunStatus::Succeeded,
            output: None,
            usage: Usage::default(),
            cost: Cost::known(0.0),
            latency_ms: 5,
            error: None,
            finished_at_ms: 1_005,
        }));
        exporter.shutdown();
        let got = got.lock().unwrap();
        let spans: Vec<_> = got
            .iter()
            .flat_map(|(_, r)| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "prompt p");
        let resource = got[0].1.resource_spans[0].resource.as_ref().unwrap();
        assert!(resource.attributes.iter().any(
            |kv| kv.key == "service.name" && format!("{:?}", kv.value).contains("flowrun-test")
        ));
        // Spans after shutdown go nowhere, quietly.
        sink.emit(&RunEvent::RunStarted(RunStart {
            run_id: "late".into(),
            target_kind: "prompt".into(),
            target: "p".into(),
            version: "v1".into(),
            input: json!({}),
            started_at_ms: 1_000,
        }));
        drop(sink);
        exporter.shutdown();
    }
}
