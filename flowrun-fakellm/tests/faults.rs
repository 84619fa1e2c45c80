//! Integration tests of seeded fault injection: reproducibility, Retry-After
//! on injected 429s, injected resets and hangs, and script preservation.

mod common;

use std::time::Duration;

use common::{client, openai_body, post_openai};
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
use serde_json::Value;

/// Statuses of `n` sequential requests (0 for a client-side error).
async fn statuses(config: FakeConfig, n: usize) -> Vec<u16> {
    let fake = FakeLlm::start(config).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let r = post_openai(&fake, &openai_body("gpt-test", "x")).await;
        let status = r.status().as_u16();
        if status == 429 {
            assert_eq!(r.headers()["retry-after"], "3");
        }
        let body: Value = r.json().await.unwrap();
        match status {
            200 => assert_eq!(body["choices"][0]["message"]["content"], "echo: x"),
            500 => assert_eq!(body["error"]["type"], "server_error"),
            429 => assert_eq!(body["error"]["code"], "rate_limit_exceeded"),
            other => panic!("unexpected status {other}"),
        }
        out.push(status);
    }
    let counts = fake.reply_counts();
    assert_eq!(
        counts.text as usize,
        out.iter().filter(|s| **s == 200).count()
    );
    assert_eq!(
        counts.error as usize,
        out.iter().filter(|s| **s != 200).count()
    );
    for (status, count) in fake.error_counts() {
        assert_eq!(
            count as usize,
            out.iter().filter(|s| **s == status).count(),
            "{status}"
        );
    }
    out
}

#[tokio::test]
async fn same_seed_same_faults() {
    let config = |seed| {
        FakeConfig::default()
            .with_fail_500(0.3)
            .with_fail_429(0.3, Some(3))
            .with_seed(seed)
    };
    let a = statuses(config(42), 40).await;
    let b = statuses(config(42), 40).await;
    assert_eq!(a, b);
    for status in [200, 429, 500] {
        assert!(a.contains(&status), "{status} missing from {a:?}");
    }
    let c = statuses(config(43), 40).await;
    assert_ne!(a, c, "another seed gives another sequence");
}

#[tokio::test]
async fn faults_take_precedence_and_keep_the_script() {
    let fake = FakeLlm::start(FakeConfig::default().with_fail_500(1.0))
        .await
        .unwrap();
    fake.push(Reply::text("scripted"));
    let r = post_openai(&fake, &openai_body("gpt-test", "x")).await;
    assert_eq!(r.status(), 500);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(fake.pending_replies(), 1);
}

#[tokio::test]
async fn injected_reset_and_hang() {
    let fake = FakeLlm::start(FakeConfig::default().with_reset(1.0))
        .await
        .unwrap();
    let err = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .json(&openai_body("gpt-test", "x"))
        .send()
        .await
        .unwrap_err();
    assert!(
        common::error_chain(&err).to_lowercase().contains("reset"),
        "{err:?}"
    );
    assert_eq!(fake.reply_counts().reset, 1);

    let fake = FakeLlm::start(FakeConfig::default().with_hang(1.0))
        .await
        .unwrap();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = quick
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .json(&openai_body("gpt-test", "x"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(fake.reply_counts().hang, 1);
}
