//! Webhooks end to end on loopback: a run's end is POSTed to a real receiver and its signature
//! verifies with the client's `verify_webhook`; failed deliveries are retried; a delivery
//! pending when the server dies is sent by the next one; bad URLs are refused.

mod support;

use std::time::{Duration, SystemTime};

use flowrun_client::{Client, RunFilter, RunStatus, SubmitOptions, WebhookEvent, verify_webhook};
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
use serde_json::json;
use support::{Received, Receiver, SECRET, config, deployed, start};

fn with_webhook(url: &str) -> SubmitOptions {
    SubmitOptions {
        webhook: Some(url.to_string()),
        ..SubmitOptions::default()
    }
}

/// Checks the signature the way a receiver does and parses the body.
fn verified(r: &Received) -> WebhookEvent {
    verify_webhook(
        SECRET,
        &r.header("flowrun-signature"),
        &r.body,
        SystemTime::now(),
        Duration::from_secs(300),
    )
    .expect("the signature verifies");
    assert_eq!(r.header("content-type"), "application/json");
    serde_json::from_slice(&r.body).expect("a run event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_is_delivered_signed() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (store, server, url) = start(&dir.path().join("s.db"), config(Some(SECRET), 2)).await;
    let client = deployed(&store, &url, &fake).await;
    let sub = client
        .submit_with(
            "prod",
            "pipe",
            &json!({ "text": "hi" }),
            &with_webhook(&receiver.url),
        )
        .await
        .expect("submit");
    let run = client.wait_run(&sub.id).await.expect("wait");
    assert_eq!(run.status, RunStatus::Succeeded);

    let got = receiver.wait_for(1).await;
    let event = verified(&got[0]);
    assert_eq!(event.event, "run.finished");
    assert_eq!(event.run_id, sub.id);
    assert_eq!((event.env.as_str(), event.flow.as_str()), ("prod", "pipe"));
    assert_eq!(event.status, RunStatus::Succeeded);
    assert_eq!(event.output, Some(json!("echo: B echo: A hi")));
    assert_eq!(event.finished_at, run.finished_at);
    assert!(
        event
            .usage
            .is_some_and(|u| u["input_tokens"].as_u64() > Some(0))
    );
    assert!(event.cost.is_some_and(|c| c["usd"].as_f64() > Some(0.0)));
    assert_eq!(got[0].header("flowrun-delivery"), sub.id);
    assert_eq!(got[0].header("flowrun-delivery-attempt"), "1");
    // A tampered body or another secret does not verify.
    let mut tampered = got[0].body.to_vec();
    tampered.extend_from_slice(b" ");
    let sig = got[0].header("flowrun-signature");
    let five_min = Duration::from_secs(300);
    assert!(verify_webhook(SECRET, &sig, &tampered, SystemTime::now(), five_min).is_err());
    assert!(verify_webhook("other", &sig, &got[0].body, SystemTime::now(), five_min).is_err());
    // The URL is not shown by the API (it may carry a token).
    let shown = reqwest::get(format!("{url}/v1/runs/{}", sub.id))
        .await
        .expect("get");
    assert_eq!(shown.status(), 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_runs_queued_or_running_are_delivered() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    // The one worker hangs in the first run's second step; the second run waits in the queue.
    fake.push_for_model("m2", Reply::hang());
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (store, server, url) = start(&dir.path().join("s.db"), config(Some(SECRET), 1)).await;
    let client = deployed(&store, &url, &fake).await;
    let hook = with_webhook(&receiver.url);
    let running = client
        .submit_with("prod", "pipe", &json!({ "text": "1" }), &hook)
        .await
        .expect("submit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fake.requests_for_model("m2").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got to step 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = client
        .submit_with("prod", "pipe", &json!({ "text": "2" }), &hook)
        .await
        .expect("submit");
    let cancelled = client.cancel(&queued.id).await.expect("cancel queued");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    client.cancel(&running.id).await.expect("cancel running");
    let ended = client.wait_run(&running.id).await.expect("wait");
    assert_eq!(ended.status, RunStatus::Cancelled);

    let got = receiver.wait_for(2).await;
    let mut events: Vec<WebhookEvent> = got.iter().map(verified).collect();
    events.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    let mut ids = [running.id.clone(), queued.id.clone()];
    ids.sort();
    assert_eq!(
        events.iter().map(|e| e.run_id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert!(events.iter().all(|e| e.status == RunStatus::Cancelled));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_delivery_on_the_third_attempt() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let receiver = Receiver::start(2).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (store, server, url) = start(&dir.path().join("s.db"), config(Some(SECRET), 2)).await;
    let client = deployed(&store, &url, &fake).await;
    let sub = client
        .submit_with(
            "prod",
            "pipe",
            &json!({ "text": "x" }),
            &with_webhook(&receiver.url),
        )
        .await
        .expect("submit");
    let got = receiver.wait_for(3).await;
    let statuses: Vec<u16> = got.iter().map(|r| r.answered.as_u16()).collect();
    assert_eq!(statuses, [500, 500, 204]);
    let attempts: Vec<String> = got
        .iter()
        .map(|r| r.header("flowrun-delivery-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    for r in &got {
        assert_eq!(verified(r).run_id, sub.id);
    }
    // Delivered: no fourth attempt comes, and the metrics count each outcome.
    let metrics = wait_metric(&client, "flowrun_webhook_deliveries_total", "delivered").await;
    assert_eq!(
        sample(&metrics, "flowrun_webhook_deliveries_total", "retry"),
        Some(2.0)
    );
    assert_eq!(receiver.received().len(), 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_survives_a_server_restart() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let receiver = Receiver::start(usize::MAX).await;
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    let (store, server, url) = start(&db, config(Some(SECRET), 2)).await;
    let client = deployed(&store, &url, &fake).await;
    let sub = client
        .submit_with(
            "prod",
            "pipe",
            &json!({ "text": "x" }),
            &with_webhook(&receiver.url),
        )
        .await
        .expect("submit");
    receiver.wait_for(1).await;
    // Killed with the delivery pending (failed once, maybe leased mid-attempt).
    server.abort();
    drop(store);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = receiver.received().len();
    receiver.recover();

    let (_store, server, _url) = start(&db, config(Some(SECRET), 2)).await;
    let got = receiver.wait_for(before + 1).await;
    let last = got.last().expect("a delivery");
    assert_eq!(last.answered.as_u16(), 204);
    let event = verified(last);
    assert_eq!(event.run_id, sub.id);
    assert_eq!(event.status, RunStatus::Succeeded);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhook_urls_and_a_server_without_a_secret_are_refused() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let dir = tempfile::tempdir().expect("tmp");
    let (store, server, url) = start(&dir.path().join("s.db"), config(Some(SECRET), 1)).await;
    let client = deployed(&store, &url, &fake).await;
    for bad in [
        "not a url",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "https://user:pw@example.com/hook",
    ] {
        let e = client
            .submit_with("prod", "pipe", &json!({ "text": "x" }), &with_webhook(bad))
            .await
            .expect_err(bad);
        let flowrun_client::ClientError::Api {
            status,
            code,
            field,
            ..
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!((*status, code.as_str()), (400, "invalid_webhook"), "{bad}");
        assert_eq!(field.as_deref(), Some("Flowrun-Webhook"));
    }
    assert!(
        client
            .runs(&RunFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    server.shutdown().await;

    let dir = tempfile::tempdir().expect("tmp");
    let (store, server, url) = start(&dir.path().join("s.db"), config(None, 1)).await;
    let client: Client = deployed(&store, &url, &fake).await;
    let e = client
        .submit_with(
            "prod",
            "pipe",
            &json!({ "text": "x" }),
            &with_webhook("https://example.com/hook"),
        )
        .await
        .expect_err("no secret");
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.code(), Some("webhooks_disabled"));
    server.shutdown().await;
}

/// The value of `name{...="label"}` in the metrics text.
fn sample(text: &str, name: &str, label: &str) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("metrics parse");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.values().any(|v| v == label))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => Some(v),
            prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Waits until the metric `name{..="label"}` appears (the outcome is counted just before it
/// is committed).
async fn wait_metric(client: &Client, name: &str, label: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = client.metrics().await.expect("metrics");
        if sample(&text, name, label).is_some() {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} {label} never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
