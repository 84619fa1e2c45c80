//! `flowrun sync` against `flowrun serve` as a child process: the local history is pushed in
//! batches; a batch the server fails midway (a proxy in front of it answers 500) leaves a sync
//! that the next one completes; re-syncing pushes nothing; content goes only when allowed; the
//! deployment history comes back; the server records which key pushed each record.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use flowrun_client::Client;
use serde_json::Value;

use crate::harness::{Outcome, TestProject, run};
use crate::serve::start_server;

const SECRET_INPUT: &str = "private-question-42";

/// A reverse proxy to `upstream` that answers 500 to the `fail_at`-th push (1-based; 0: none).
async fn proxy(upstream: String, fail_at: Arc<AtomicUsize>) -> String {
    let pushes = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (upstream, http, pushes, fail_at) = (
                upstream.clone(),
                http.clone(),
                pushes.clone(),
                fail_at.clone(),
            );
            async move {
                if method == Method::POST && uri.path() == "/v1/sync/records" {
                    let n = pushes.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == fail_at.load(Ordering::SeqCst) {
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            r#"{"error":{"code":"internal","message":"injected failure"}}"#
                                .to_string(),
                        );
                    }
                }
                let url = format!(
                    "{upstream}{}",
                    uri.path_and_query().map_or("/", |p| p.as_str())
                );
                let mut req = http.request(method, url).body(body);
                for name in ["authorization", "content-type"] {
                    if let Some(v) = headers.get(name) {
                        req = req.header(name, v.clone());
                    }
                }
                let resp = req.send().await.expect("upstream answers");
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                (status, resp.text().await.unwrap_or_default())
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn project() -> TestProject {
    TestProject::from_txtar(
        "-- flowrun.yaml --
providers: { m: { kind: mock } }
defaults: { model: m/echo }
-- prompts/ask.yaml --
input: { question: string }
messages:
  - user: \"{{ question }}\"
-- tests/ask.test.yaml --
target: ask
cases:
  - name: echoes
    input: { question: hello }
    assert:
      - { contains: hello }
",
    )
}

/// Finished runs, test runs and evaluations in the local history.
fn local_records(p: &TestProject) -> usize {
    let conn = rusqlite::Connection::open(p.path().join(".flowrun/flowrun.db")).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize;
    count("SELECT count(*) FROM runs WHERE status <> 'running'")
        + count("SELECT count(*) FROM test_runs")
        + count("SELECT count(*) FROM evals")
}

async fn flowrun(p: &TestProject, token: &str, args: &[&str]) -> Outcome {
    let mut cmd = p.flowrun();
    cmd.args(args)
        .env("FLOWRUN_TOKEN", token)
        .env_remove("FLOWRUN_REMOTE");
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

fn json(out: &Outcome) -> Value {
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pushes_resumes_after_a_failed_batch_and_then_sends_nothing() {
    let p = project();
    let db = p.path().join("server.db");
    let (_serving, url, token) = start_server(&p, &db).await;
    for i in 0..6 {
        let q = format!("question={SECRET_INPUT} {i}");
        let out = flowrun(&p, &token, &["run", "ask", "--quiet", "--input", &q]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = flowrun(&p, &token, &["test"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deployed = flowrun(&p, &token, &["deploy", "--env", "prod", "--remote", &url]).await;
    assert_eq!(deployed.code, 0, "{}", deployed.stderr);
    let n = local_records(&p);
    assert!(n >= 7, "6 runs and the test run at least: {n}");

    // The server fails the second batch of two: the first batch is stored, the sync fails.
    let fail_at = Arc::new(AtomicUsize::new(2));
    let via = proxy(url.clone(), fail_at.clone()).await;
    let first = flowrun(&p, &token, &["sync", "--remote", &via, "--batch", "2"]).await;
    assert_eq!(first.code, 1, "{}{}", first.stdout, first.stderr);
    assert!(
        first
            .stderr
            .contains(&format!("pushed 2 of {n} records before the error")),
        "{}",
        first.stderr
    );
    let client = Client::new(&url, Some(token.clone())).unwrap();
    assert_eq!(client.synced_records(None, 1000).await.unwrap().len(), 2);

    // The next sync (same remote label) pushes only the rest, and pulls the deployment.
    fail_at.store(0, Ordering::SeqCst);
    let second = json(
        &flowrun(
            &p,
            &token,
            &["sync", "--remote", &via, "--batch", "2", "--json"],
        )
        .await,
    );
    assert_eq!(second["pushed"], (n - 2) as u64, "{second}");
    assert_eq!(second["stored"], (n - 2) as u64, "{second}");
    assert_eq!(second["deployments_pulled"], 1, "{second}");
    assert_eq!(second["content"], false);

    // Nothing new: nothing sent, nothing pulled.
    let third = json(&flowrun(&p, &token, &["sync", "--remote", &via, "--json"]).await);
    assert_eq!(third["pushed"], 0, "{third}");
    assert_eq!(third["deployments_pulled"], 0, "{third}");

    // Every record is on the server once, with the key that pushed it, and no content.
    let records = client.synced_records(None, 1000).await.unwrap();
    assert_eq!(records.len(), n);
    let key_id = &records[0].pushed_by;
    assert!(
        !key_id.is_empty() && !key_id.starts_with("frk_"),
        "{key_id}"
    );
    assert!(records.iter().all(|r| &r.pushed_by == key_id));
    let runs: Vec<_> = records.iter().filter(|r| r.kind == "run").collect();
    assert_eq!(runs.len(), n - 1);
    assert_eq!(
        client
            .synced_records(Some("test_run"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let all =
        serde_json::to_string(&records.iter().map(|r| &r.record).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains(SECRET_INPUT), "content was pushed: {all}");
    assert!(runs.iter().all(|r| r.record.get("input").is_none()
        && r.record["status"] == "succeeded"
        && r.record["steps"][0]["input_tokens"].is_u64()));

    // Allowing content: every record changes, and is sent again with its prompts and outputs.
    let config = std::fs::read_to_string(p.path().join("flowrun.yaml")).unwrap();
    p.write(
        "flowrun.yaml",
        &format!("{config}sync: {{ content: true }}\n"),
    );
    let fourth = json(&flowrun(&p, &token, &["sync", "--remote", &via, "--json"]).await);
    assert_eq!(fourth["pushed"], n as u64, "{fourth}");
    assert_eq!(fourth["stored"], n as u64, "{fourth}");
    let records = client.synced_records(Some("run"), 1000).await.unwrap();
    assert_eq!(records.len(), n - 1);
    let all =
        serde_json::to_string(&records.iter().map(|r| &r.record).collect::<Vec<_>>()).unwrap();
    assert!(all.contains(SECRET_INPUT));
    assert!(!all.contains(&token));
}
