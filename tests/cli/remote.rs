//! Remotes end to end against `flowrun serve` as a child process: `remote add` with a token
//! variable of its own, `deploy --require-tests` passing and refusing, `eval --baseline
//! env:prod` against what the server runs, and `runs --remote`.

use flowrun_client::Client;
use flowrun_fakellm::{FakeConfig, FakeLlm};
use serde_json::{Value, json};

use crate::harness::TestProject;
use crate::serve::start_server;

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
-- tests/greet.test.yaml --
target: greet
cases:
  - name: says hello
    input: {{ name: Ada }}
    assert:
      - {{ contains: Hello }}
",
        fake.openai_base_url()
    ))
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_deploy_with_tests_eval_against_an_env_and_list_runs() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let p = project(&fake, "Hello");
    let db = p.path().join("server.db");
    let (serving, url, token) = start_server(&p, &db).await;
    let flowrun = |args: &[&str]| {
        p.flowrun()
            .args(args)
            .env("PROD_TOKEN", &token)
            .env_remove("FLOWRUN_TOKEN")
            .env_remove("FLOWRUN_REMOTE")
            .output()
            .expect("flowrun")
    };

    let added = flowrun(&["remote", "add", "origin", &url, "--token-env", "PROD_TOKEN"]);
    assert!(added.status.success(), "{}", text(&added));
    let listed = flowrun(&["remote"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        format!("origin\t{url}\t$PROD_TOKEN\n")
    );
    let again = flowrun(&["remote", "add", "origin", "http://elsewhere:1"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("exists already"));

    // The tests pass: deployed (to the only remote, without naming it).
    let deployed = flowrun(&["deploy", "--env", "prod", "--require-tests"]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert!(text(&deployed).contains("deployed: `prod` on origin now runs"));

    // A draft that fails its test is not deployed: the server still has one version.
    p.write(
        "prompts/greet.yaml",
        "input: { name: string }\nmessages:\n  - user: \"Bye {{ name }}\"\n",
    );
    let refused = flowrun(&["deploy", "--env", "prod", "--require-tests"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("not deployed to `prod`: a test failed"));
    let client = Client::new(&url, Some(token.clone())).expect("client");
    assert_eq!(client.bundles().await.expect("bundles").len(), 1);

    // The draft ("Bye") against what prod runs ("Hello").
    let eval = flowrun(&[
        "eval",
        "--baseline",
        "env:prod",
        "--remote",
        "origin",
        "--format",
        "json",
    ]);
    assert!(eval.status.success(), "{}", text(&eval));
    let report: Value = serde_json::from_slice(&eval.stdout).expect("eval json");
    let shown = report.to_string();
    assert!(shown.contains("env:prod on origin"), "{shown}");
    assert!(shown.contains("echo: Hello Ada"), "{shown}");
    assert!(shown.contains("echo: Bye Ada"), "{shown}");

    // Runs on the server, filtered.
    let sub = client
        .submit("prod", "greet", &json!({ "name": "Bob" }), None)
        .await
        .expect("submit");
    client.wait_run(&sub.id).await.expect("wait");
    let runs = flowrun(&["runs", "--remote", "origin", "--env", "prod", "--json"]);
    assert!(runs.status.success(), "{}", text(&runs));
    let rows: Vec<Value> = serde_json::from_slice(&runs.stdout).expect("runs json");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], json!(sub.id));
    assert_eq!(rows[0]["status"], json!("succeeded"));
    assert_eq!(rows[0]["output"], json!("echo: Hello Bob"));
    let table = flowrun(&["runs", "--remote", "origin", "--status", "failed"]);
    assert!(table.status.success(), "{}", text(&table));
    assert!(text(&table).contains("no runs on the server match"));

    // Without the remote's variable: a usage error that names it, and no key in sight.
    let no_key = p
        .flowrun()
        .args(["versions"])
        .env_remove("PROD_TOKEN")
        .output()
        .expect("versions");
    assert_eq!(no_key.status.code(), Some(2));
    assert!(text(&no_key).contains("`PROD_TOKEN` is not set"));
    let unknown = flowrun(&["versions", "--remote", "staging"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown).contains("known: origin"),
        "{}",
        text(&unknown)
    );
    drop(serving);
}
