//! `flowrun serve` as a child process: create a key, serve on a free port, `flowrun deploy`
//! `flowrun serve` as a child process: create a key, serve on a free port, `flowrun deploy`
//! the project, submit a run over HTTP and read its result; then `versions`, `rollback`. Logs
//! as JSON lines without the webhook secret; webhook configuration errors. On PostgreSQL
//! (`FLOWRUN_TEST_POSTGRES_URL`): two serve processes on one database.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flowrun_client::{Client, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm};
use serde_json::json;

use crate::harness::TestProject;
use crate::pg::PgDb;

/// Kills the server when the test ends, even on a panic.
pub struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn project(fake: &FakeLlm, greeting: &str) -> TestProject {
    TestProject::from_txtar(&format!(
        "-- flowrun.yaml --
providers:
  fake: {{ kind: openai, base_url: \"{}\" }}
defaults: {{ model: fake/m1, retries: 0 }}
-- prompts/greet.yaml --
input: {{ name: string }}
messages:
  - user: \"{greeting} {{{{ name }}}}\"
-- flows/welcome.yaml --
input: {{ name: string }}
steps:
  - id: greet
    prompt: greet
    with: {{ name: \"{{{{ input.name }}}}\" }}
",
        fake.openai_base_url()
    ))
}

/// Creates an admin key in `db` and starts `flowrun serve` on it on a free port: the server,
/// its URL and the key.
pub async fn start_server(p: &TestProject, db: &std::path::Path) -> (Serving, String, String) {
    let key = p
        .flowrun()
        .args([
            "serve", "keys", "create", "--env", "*", "--role", "admin", "--db",
        ])
        .arg(db)
        .output()
        .expect("keys create");
    assert!(key.status.success(), "{key:?}");
    let token = String::from_utf8(key.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(token.starts_with("frk_"), "{token}");

    let (serving, url) = spawn_serve(&["--db", db.to_str().expect("utf-8 path")]).await;
    (serving, url, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_deploy_submit_and_read_the_result() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let p = project(&fake, "Hello");
    let db = p.path().join("server.db");
    let (serving, url, token) = start_server(&p, &db).await;

    let deploy = p
        .flowrun()
        .args(["deploy", "--env", "prod", "--remote", &url])
        .env("FLOWRUN_TOKEN", &token)
        .output()
        .expect("deploy");
    assert!(deploy.status.success(), "{deploy:?}");
    let said = String::from_utf8_lossy(&deploy.stdout).to_string();
    assert!(
        said.starts_with(&format!("deployed: `prod` on {url} now runs ")),
        "{said}"
    );

    let client = Client::new(&url, Some(token.clone())).expect("client");
    let sub = client
        .submit("prod", "welcome", &json!({ "name": "Ada" }), Some("req-1"))
        .await
        .expect("submit");
    let run = client
        .get_run(&sub.id, Some(Duration::from_secs(30)))
        .await
        .expect("get");
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.output, Some(json!("echo: Hello Ada")));
    assert_eq!(run.steps.len(), 1);

    // A second version, then back to the first.
    let p2 = project(&fake, "Bye");
    let cmd = |p: &TestProject, args: &[&str]| {
        p.flowrun()
            .args(args)
            .args(["--remote", &url])
            .env("FLOWRUN_TOKEN", &token)
            .output()
            .expect("flowrun")
    };
    assert!(cmd(&p2, &["deploy", "--env", "prod"]).status.success());
    let versions = cmd(&p2, &["versions"]);
    let listing = String::from_utf8_lossy(&versions.stdout).to_string();
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(cmd(&p2, &["rollback", "--env", "prod"]).status.success());
    let sub = client
        .submit("prod", "welcome", &json!({ "name": "Bob" }), None)
        .await
        .expect("submit");
    let run = client.wait_run(&sub.id).await.expect("wait");
    assert_eq!(run.output, Some(json!("echo: Hello Bob")));

    // Without a token, deploy refuses before uploading anything.
    let no_token = p
        .flowrun()
        .args(["deploy", "--env", "prod", "--remote", &url])
        .env_remove("FLOWRUN_TOKEN")
        .output()
        .expect("deploy");
    assert_eq!(no_token.status.code(), Some(2));
    drop(serving);
}

#[test]
fn serve_logs_json_events_and_never_the_webhook_secret() {
    let p = TestProject::empty();
    let secret = "whsec_do_not_log_me_0123456789";
    let bin = assert_cmd::cargo::cargo_bin("flowrun");
    let mut child = Command::new(bin)
        .current_dir(p.path())
        .args(["--log-format", "json", "serve", "--addr", "127.0.0.1:0"])
        .env("FLOWRUN_WEBHOOK_SECRET", secret)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let serving = Serving(child);
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stderr);
    let event = loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read");
        assert!(n > 0, "the server stopped before serving: {lines:?}");
        lines.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["fields"]["message"] == "serving" {
            break v;
        }
    };
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["webhooks"], true);
    assert!(event["fields"]["addr"].is_string());
    drop(serving);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
    assert!(
        !lines.concat().contains(secret) && !rest.contains(secret),
        "the secret was logged"
    );
}

#[test]
fn webhook_secret_problems_are_usage_errors() {
    let p = TestProject::empty();
    let out = crate::harness::run(p.flowrun().args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--webhook-secret-env",
        "FLOWRUN_TEST_NO_SUCH_VAR",
    ]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`FLOWRUN_TEST_NO_SUCH_VAR` is not set"),
        "{}",
        out.stderr
    );
    let out = crate::harness::run(
        p.flowrun()
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("FLOWRUN_WEBHOOK_SECRET", ""),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`FLOWRUN_WEBHOOK_SECRET` is empty"),
        "{}",
        out.stderr
    );
    let out = crate::harness::run(p.flowrun().args(["serve"]).env("RUST_LOG", "a=b=c"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("`RUST_LOG`"), "{}", out.stderr);
}

/// Starts `flowrun serve` with `args` and returns it with its URL (its first stdout line).
async fn spawn_serve(args: &[&str]) -> (Serving, String) {
    let bin = assert_cmd::cargo::cargo_bin("flowrun");
    let mut child = Command::new(bin)
        .args(["serve", "--addr", "127.0.0.1:0", "--workers", "2"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let stdout = child.stdout.take().expect("stdout");
    let serving = Serving(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (serving, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_share_one_postgres_database() {
    let Some(db) = PgDb::new("two_serve_processes_share_one_postgres_database").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let p = project(&fake, "Hello");
    let key = p
        .flowrun()
        .args(["serve", "keys", "create", "--env", "*", "--role", "admin"])
        .env("FLOWRUN_DATABASE_URL", &db.url)
        .output()
        .expect("keys create");
    assert!(key.status.success(), "{key:?}");
    let token = String::from_utf8(key.stdout)
        .expect("utf8")
        .trim()
        .to_string();

    let (serving_a, url_a) = spawn_serve(&["--database-url", &db.url]).await;
    let (serving_b, url_b) = spawn_serve(&["--database-url", &db.url]).await;
    let deploy = p
        .flowrun()
        .args(["deploy", "--env", "prod", "--remote", &url_a])
        .env("FLOWRUN_TOKEN", &token)
        .output()
        .expect("deploy");
    assert!(deploy.status.success(), "{deploy:?}");
    // Submitted to A, read from B: one queue, one set of deployments and keys.
    let a = Client::new(&url_a, Some(token.clone())).expect("client");
    let b = Client::new(&url_b, Some(token)).expect("client");
    let mut ids = Vec::new();
    for name in ["Ada", "Bob", "Cy", "Di"] {
        let sub = a
            .submit("prod", "welcome", &json!({ "name": name }), None)
            .await
            .expect("submit");
        ids.push((sub.id, name));
    }
    for (id, name) in ids {
        let run = b.wait_run(&id).await.expect("wait");
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert_eq!(run.output, Some(json!(format!("echo: Hello {name}"))));
    }
    drop((serving_a, serving_b));
}

#[test]
fn serve_refuses_a_database_url_it_cannot_use_without_showing_the_password() {
    let p = TestProject::empty();
    for url in [
        "mysql://app:hunter2@db/flowrun",
        "postgres://app:hunter2@db:notaport/flowrun",
    ] {
        let out = p
            .flowrun()
            .args(["serve", "--addr", "127.0.0.1:0", "--database-url", url])
            .output()
            .expect("serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("app:***@db"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn serve_refuses_a_lease_under_a_second() {
    let p = TestProject::empty();
    let out = p
        .flowrun()
        .args(["serve", "--addr", "127.0.0.1:0", "--lease", "100ms"])
        .output()
        .expect("serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--lease"), "{stderr}");
    assert!(stderr.contains("at least `1s`"), "{stderr}");
}
