//! The operations endpoints on loopback: `/metrics` parses as Prometheus text and its numbers
//! move with runs; `/v1/openapi.json` is served without auth, is OpenAPI 3, lists every route
//! the router serves with its methods, and matches the committed `schemas/openapi.json`.

mod support;

use std::collections::BTreeSet;

use flowrun_client::RunStatus;
use flowrun_fakellm::{FakeConfig, FakeLlm};
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use support::{config, deployed, start};

fn parse(text: &str) -> Scrape {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with `# EOF`"
    );
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("metrics parse")
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_runs() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let dir = tempfile::tempdir().expect("tmp");
    let (store, server, url) = start(&dir.path().join("s.db"), config(None, 2)).await;
    let client = deployed(&store, &url, &fake).await;

    // No key needed.
    let resp = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("application/openmetrics-text"))
    );
    let before = parse(&resp.text().await.expect("text"));
    assert_eq!(
        value(&before, "flowrun_runs", &[("status", "succeeded")]),
        Some(0.0)
    );
    assert_eq!(value(&before, "flowrun_queue_depth", &[]), Some(0.0));
    assert_eq!(
        value(&before, "flowrun_llm_tokens_total", &[("model", "fake/m1")]),
        None
    );

    for text in ["a", "b"] {
        let sub = client
            .submit("prod", "pipe", &json!({ "text": text }), None)
            .await
            .expect("submit");
        let run = client.wait_run(&sub.id).await.expect("wait");
        assert_eq!(run.status, RunStatus::Succeeded);
    }
    let after = parse(&client.metrics().await.expect("metrics"));
    assert_eq!(
        value(&after, "flowrun_runs", &[("status", "succeeded")]),
        Some(2.0)
    );
    assert_eq!(
        value(&after, "flowrun_runs", &[("status", "queued")]),
        Some(0.0)
    );
    assert_eq!(value(&after, "flowrun_queue_depth", &[]), Some(0.0));
    let runs_observed = value(
        &after,
        "flowrun_run_duration_seconds_count",
        &[("status", "succeeded")],
    );
    assert_eq!(runs_observed, Some(2.0));
    for model in ["fake/m1", "fake/m2"] {
        let calls = value(
            &after,
            "flowrun_llm_call_duration_seconds_count",
            &[("model", model), ("outcome", "ok")],
        );
        assert_eq!(calls, Some(2.0), "{model}");
        for direction in ["input", "output"] {
            let tokens = value(
                &after,
                "flowrun_llm_tokens_total",
                &[("model", model), ("direction", direction)],
            );
            assert!(tokens.is_some_and(|t| t > 0.0), "{model} {direction}");
        }
    }
    // Only m1 has a price.
    assert!(
        value(
            &after,
            "flowrun_llm_cost_usd_total",
            &[("model", "fake/m1")]
        )
        .is_some_and(|usd| usd > 0.0)
    );
    assert_eq!(
        value(
            &after,
            "flowrun_llm_cost_usd_total",
            &[("model", "fake/m2")]
        ),
        None
    );
    server.shutdown().await;
}

/// Methods the OpenAPI document gives `path`.
fn documented_methods(doc: &serde_json::Value, path: &str) -> BTreeSet<String> {
    doc["paths"][path]
        .as_object()
        .map(|ops| {
            ops.keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .map(|k| k.to_uppercase())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route_and_is_served_without_auth() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_store, server, url) = start(&dir.path().join("s.db"), config(None, 1)).await;
    let resp = reqwest::get(format!("{url}/v1/openapi.json"))
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");

    // It parses as OpenAPI 3.1 with an independent parser.
    let spec = oas3::from_json(&text).expect("an OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3."), "{}", spec.openapi);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    // Every documented path answers exactly its documented methods: any other method is a
    // 405 from the router, and a documented one is never the fallback's "no such endpoint".
    let http = reqwest::Client::new();
    let paths: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    for path in &paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let mut routed = BTreeSet::new();
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let resp = http
                .request(method.parse().expect("method"), format!("{url}{concrete}"))
                .send()
                .await
                .expect("request");
            if resp.status() == 405 {
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path} is documented but not routed"
            );
            routed.insert(method.to_string());
        }
        assert_eq!(routed, documented_methods(&doc, path), "{path}");
    }
    // The routes the product is known to serve are all there.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
        "/v1/bundles",
        "/v1/envs",
        "/v1/envs/{env}/deploy",
        "/v1/envs/{env}/promote",
        "/v1/envs/{env}/rollback",
        "/v1/envs/{env}/flows/{flow}/runs",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/cancel",
    ] {
        assert!(paths.iter().any(|p| p == path), "{path} is not documented");
    }
    // An undocumented path is the fallback.
    let resp = http
        .get(format!("{url}/v1/nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    server.shutdown().await;
}

#[test]
fn the_committed_openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json");
    let now = flowrun_server::api::openapi_json();
    if std::env::var_os("FLOWRUN_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, now).expect("write schemas/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == now,
        "schemas/openapi.json is stale: run `FLOWRUN_UPDATE_OPENAPI=1 cargo test -p flowrun-server --test ops` \
         or `cargo run -- serve openapi > schemas/openapi.json`"
    );
}
