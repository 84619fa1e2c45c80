//! What the webhook and operations tests share: a priced two-step bundle on the fake LLM
//! server, a server on a SQLite file on loopback, and a webhook receiver (a real axum server
//! on loopback) that fails its first N deliveries.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use flowrun_client::{BundleFile, Client};
use flowrun_fakellm::FakeLlm;
use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::{ServerStore, SqliteStore};
use flowrun_server::webhook::{WebhookConfig, WebhookSecret};
use flowrun_server::{Server, ServerConfig};

pub const SECRET: &str = "whsec_test_secret";

/// A two-step flow `pipe`: `first` on model m1 (priced), `second` on m2.
pub fn bundle(fake: &FakeLlm) -> Vec<BundleFile> {
    let file = |path: &str, text: String| BundleFile {
        path: path.into(),
        text,
    };
    vec![
        file(
            "flowrun.yaml",
            format!(
                "providers:\n  fake: {{ kind: openai, base_url: \"{}\" }}\ndefaults: {{ model: fake/m1, retries: 0, timeout: 60s }}\npricing:\n  m1: {{ input_per_mtok: 2.0, output_per_mtok: 8.0 }}\n",
                fake.openai_base_url()
            ),
        ),
        file(
            "prompts/a.yaml",
            "model: fake/m1\ninput: { text: string }\nmessages:\n  - user: \"A {{ text }}\"\n".into(),
        ),
        file(
            "prompts/b.yaml",
            "model: fake/m2\ninput: { text: string }\nmessages:\n  - user: \"B {{ text }}\"\n".into(),
        ),
        file(
            "flows/pipe.yaml",
            "input: { text: string }\nsteps:\n  - id: first\n    prompt: a\n    with: { text: \"{{ input.text }}\" }\n  - id: second\n    prompt: b\n    with: { text: \"{{ steps.first.output }}\" }\noutput: \"{{ steps.second.output }}\"\n".into(),
        ),
    ]
}

/// Fast retries, short leases, with or without a secret.
pub fn config(secret: Option<&str>, workers: usize) -> ServerConfig {
    ServerConfig {
        workers,
        lease: Duration::from_millis(600),
        poll: Duration::from_millis(50),
        grace: Duration::from_secs(2),
        webhook: WebhookConfig {
            secret: secret.map(WebhookSecret::new),
            max_attempts: 5,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            lease: Duration::from_secs(1),
            poll: Duration::from_millis(50),
        },
        ..ServerConfig::default()
    }
}

pub async fn start(db: &Path, config: ServerConfig) -> (Arc<SqliteStore>, Server, String) {
    let store = Arc::new(SqliteStore::open(db).expect("open store"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dyn_store: Arc<dyn ServerStore> = store.clone();
    let server = Server::start(listener, dyn_store, config)
        .await
        .expect("start");
    let url = format!("http://{}", server.addr());
    (store, server, url)
}

/// An admin client with `pipe` deployed to `prod`.
pub async fn deployed(store: &SqliteStore, url: &str, fake: &FakeLlm) -> Client {
    let (_, secret) = create_key(store, "*", Role::Admin).await.expect("key");
    let client = Client::new(url, Some(secret)).expect("client");
    let up = client.upload_bundle(&bundle(fake)).await.expect("upload");
    client.deploy("prod", &up.id).await.expect("deploy");
    client
}

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: StatusCode,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

#[derive(Default)]
struct ReceiverState {
    /// Requests still to fail with 500.
    failures_left: usize,
    got: Vec<Received>,
}

/// A webhook receiver on loopback.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub url: String,
}

impl Receiver {
    /// Answers 500 to the first `failures` requests, then 204.
    pub async fn start(failures: usize) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            failures_left: failures,
            got: Vec::new(),
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { state, url }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().got.clone()
    }

    /// From now on, answer 204.
    pub fn recover(&self) {
        self.lock().failures_left = 0;
    }

    /// Waits until `n` requests arrived (or fails the test after 30 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver got {} of {n} deliveries",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let answered = if s.failures_left > 0 {
        s.failures_left -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    s.got.push(Received {
        headers,
        body,
        answered,
    });
    answered
}
