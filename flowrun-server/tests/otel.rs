//! OpenTelemetry from the server: a deployed two-step flow run by a worker is exported over
//! OTLP/HTTP to an in-process receiver as one run span (with the environment and bundle) over
//! two step spans, each over its model call span.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use flowrun_fakellm::{FakeConfig, FakeLlm};
use flowrun_otel::{Exporter, OtelConfig, Protocol};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;

fn attr(span: &Span, key: &str) -> String {
    match span
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
    {
        Some(Any::StringValue(s)) => s,
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        other => panic!("span `{}` has no `{key}`: {other:?}", span.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_run_is_exported_as_a_span_tree_with_its_env() {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut got = sink.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        got.extend(ss.spans);
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let otel = Arc::new(
        Exporter::new(&OtelConfig {
            protocol: Protocol::HttpProtobuf,
            service_name: "flowrun-server".into(),
            endpoint: Some(format!("http://{receiver}/v1/traces")),
        })
        .unwrap(),
    );
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(None, 1);
    config.otel = Some(otel.clone());
    let (store, server, url) = support::start(&dir.path().join("s.db"), config).await;
    let client = support::deployed(&store, &url, &fake).await;
    let sub = client
        .submit("prod", "pipe", &json!({ "text": "hi" }), None)
        .await
        .unwrap();
    let run = client
        .get_run(&sub.id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(run.status, flowrun_client::RunStatus::Succeeded, "{run:?}");
    server.shutdown().await;
    tokio::task::spawn_blocking(move || otel.shutdown())
        .await
        .unwrap();

    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert_eq!(attr(root, "flowrun.run_id"), sub.id);
    assert_eq!(attr(root, "flowrun.env"), "prod");
    assert_eq!(attr(root, "flowrun.flow"), "pipe");
    assert!(!attr(root, "flowrun.bundle").is_empty());
    // m1 is priced (2 and 8 USD per million tokens), m2 is not: the run's cost is unknown.
    assert_eq!(attr(root, "flowrun.cost_unknown_models"), "m2");
    let steps: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .collect();
    assert_eq!(steps.len(), 2);
    for step in steps {
        let calls: Vec<_> = spans
            .iter()
            .filter(|s| s.parent_span_id == step.span_id)
            .collect();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        let model = attr(step, "gen_ai.request.model");
        assert_eq!(attr(calls[0], "gen_ai.request.model"), model);
        assert_eq!(attr(calls[0], "gen_ai.system"), "openai");
        assert_eq!(calls[0].name, format!("chat {model}"));
    }
}
