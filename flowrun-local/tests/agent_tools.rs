//! MCP and command tools end to end: an agent on the real OpenAI provider against the fake LLM
//! server, calling the tools of a real MCP server over stdio (this test binary started again
//! with `--serve-mcp`, through `LocalProcesses`) and over streamable HTTP on loopback, and
//! local command tools, enabled and not.
//!
//! It has its own `main` (`harness = false`) so that it can be the MCP server process too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flowrun_core::agent::Transcript;
use flowrun_core::{Executor, Project, RunOutcome, RunRequest, RunStatus, SourceFile};
use flowrun_fakellm::mcp::FakeMcpHttp;
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply, ToolCall};
use flowrun_local::LocalProcesses;
use serde_json::{Value, json};

type Test = fn() -> Pin<Box<dyn Future<Output = ()>>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if args.iter().any(|a| a == "--serve-mcp") {
        if let Err(e) = runtime.block_on(flowrun_fakellm::mcp::serve_stdio()) {
            eprintln!("fake MCP server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let tests: [(&str, Test); 5] = [
        ("stdio_mcp_tools", || Box::pin(stdio_mcp_tools())),
        (
            "http_mcp_tools_subset",
            || Box::pin(http_mcp_tools_subset()),
        ),
        ("mcp_problems_fail_the_step", || {
            Box::pin(mcp_problems_fail_the_step())
        }),
        ("command_tool_runs_when_allowed", || {
            Box::pin(command_tool_runs_when_allowed())
        }),
        ("command_tools_are_refused_without_a_host", || {
            Box::pin(command_tools_are_refused_without_a_host())
        }),
    ];
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let mut ran = 0;
    for (name, test) in tests {
        if filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        eprintln!("test {name} ...");
        runtime.block_on(test());
        eprintln!("test {name} ... ok");
        ran += 1;
    }
    eprintln!("test result: ok. {ran} passed");
}

fn files(fake: &FakeLlm, extra_config: &str, flow: &str) -> Vec<SourceFile> {
    let config = format!(
        r#"providers:
  fake: {{ kind: openai, base_url: "{}", api_key_env: FAKE_KEY }}
models:
  agent: {{ provider: fake, model: fake-agent }}
defaults: {{ model: agent, timeout: 10s, retries: 0 }}
{extra_config}
"#,
        fake.openai_base_url()
    );
    vec![
        SourceFile::new("flowrun.yaml", config),
        SourceFile::new(
            "prompts/researcher.yaml",
            "input: { question: string }\nmessages:\n  - system: You answer with the tools.\n  - user: \"{{ question }}\"\n",
        ),
        SourceFile::new("flows/agent.yaml", flow.to_string()),
    ]
}

fn agent_flow(tools: &str) -> String {
    format!(
        "input: {{ question: string }}\nsteps:\n  - id: research\n    agent:\n      instructions: researcher\n      tools:\n{tools}      max_turns: 5\n    with: {{ question: \"{{{{ input.question }}}}\" }}\n"
    )
}

fn project(fake: &FakeLlm, extra_config: &str, tools: &str) -> Project {
    let project = Project::load(files(fake, extra_config, &agent_flow(tools)))
        .unwrap_or_else(|e| panic!("{e}"));
    let diags = flowrun_core::check::check(&project);
    assert!(diags.is_empty(), "{diags:#?}");
    project
}

fn executor(project: Project, processes: bool) -> Executor {
    let mut builder = Executor::builder(Arc::new(project)).env(|name| match name {
        "FAKE_KEY" => Some("sk-fake".into()),
        "MCP_TOKEN" => Some("tok-Secret-123".into()),
        _ => None,
    });
    if processes {
        builder = builder.processes(LocalProcesses::new(std::env::temp_dir()));
    }
    builder.build().unwrap()
}

async fn run(exec: &Executor) -> RunOutcome {
    exec.run(RunRequest::new(
        "flow/agent",
        json!({"question": "What is 2 + 3?"}),
    ))
    .await
    .unwrap()
}

fn transcript(outcome: &RunOutcome) -> &Transcript {
    outcome.steps[0].agent.as_ref().expect("a transcript")
}

/// Names of the tools offered in the agent's first request.
fn offered(fake: &FakeLlm) -> Vec<Value> {
    let first = &fake.requests_for_model("fake-agent")[0];
    first.body["tools"].as_array().cloned().unwrap_or_default()
}

fn names(tools: &[Value]) -> Vec<&str> {
    tools
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect()
}

fn server_argv() -> String {
    let me = std::env::current_exe().unwrap();
    format!("[\"{}\", \"--serve-mcp\"]", me.display())
}

async fn stdio_mcp_tools() {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let config = format!(
        "mcp_servers:\n  calc:\n    command: {}\n    env: {{ FAKE_MCP_TOKEN: {{ env: MCP_TOKEN }}, PLAIN: visible }}\n",
        server_argv()
    );
    let exec = executor(project(&fake, &config, "        - mcp: calc\n"), true);
    fake.push_for_model(
        "fake-agent",
        Reply::tool_calls([
            ToolCall::named("add", json!({"a": 2, "b": 3})),
            ToolCall::named("env", json!({"name": "FAKE_MCP_TOKEN"})),
            ToolCall::named("env", json!({"name": "PLAIN"})),
            ToolCall::named("add", json!({"a": "two"})),
        ]),
    );
    fake.push_for_model(
        "fake-agent",
        Reply::tool_calls([
            ToolCall::named("fail", json!({"text": "the disk is on fire"})),
            ToolCall::named("pid", json!({})),
        ]),
    );
    fake.push_for_model("fake-agent", Reply::text("5"));
    let outcome = run(&exec).await;
    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    let tools = offered(&fake);
    assert_eq!(names(&tools), ["add", "echo", "env", "fail", "pid"]);
    let add = &tools[0]["function"];
    assert_eq!(add["description"], "Adds two integers");
    assert_eq!(add["parameters"]["required"], json!(["a", "b"]));
    let t = transcript(&outcome);
    let results: Vec<(&str, &str, bool)> = t
        .turns
        .iter()
        .flat_map(|t| &t.tool_results)
        .map(|r| (r.name.as_str(), r.output.as_str(), r.is_error))
        .collect();
    assert_eq!(results[0], ("add", "5", false));
    assert_eq!(
        results[1],
        ("env", "<redacted>", false),
        "secrets are redacted"
    );
    assert_eq!(results[2], ("env", "visible", false));
    assert_eq!(results[3].0, "add");
    assert!(
        results[3].1.starts_with("invalid arguments for `add`"),
        "{:?}",
        results[3]
    );
    assert!(results[3].2);
    assert_eq!(results[4], ("fail", "the disk is on fire", true));
    let pid: u32 = results[5].1.parse().expect("a pid");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    if cfg!(target_os = "linux") {
        assert!(proc_dir.exists(), "the server runs until shutdown");
    }
    // A second run uses the same connection (same process).
    fake.push_for_model("fake-agent", Reply::tool_call("pid", json!({})));
    fake.push_for_model("fake-agent", Reply::text("done"));
    let again = run(&exec).await;
    assert_eq!(again.status, RunStatus::Succeeded, "{again:#?}");
    assert_eq!(
        transcript(&again).turns[0].tool_results[0].output,
        pid.to_string()
    );
    exec.shutdown().await;
    if cfg!(target_os = "linux") {
        assert!(
            !proc_dir.exists(),
            "the server's process has ended and been reaped"
        );
    }
}

async fn http_mcp_tools_subset() {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let mcp = FakeMcpHttp::start().await.unwrap();
    let config = format!(
        "mcp_servers:\n  search:\n    url: \"{}\"\n    headers: {{ Authorization: {{ env: MCP_TOKEN, prefix: \"Bearer \" }}, X-Team: agents }}\n",
        mcp.url()
    );
    let tools = "        - { mcp: search, tools: [echo], timeout: 5s }\n";
    let exec = executor(project(&fake, &config, tools), false);
    fake.push_for_model(
        "fake-agent",
        Reply::tool_calls([
            ToolCall::named("echo", json!({"text": "token tok-Secret-123 here"})),
            ToolCall::named("add", json!({"a": 1, "b": 1})),
        ]),
    );
    fake.push_for_model("fake-agent", Reply::text("ok"));
    let outcome = run(&exec).await;
    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    assert_eq!(names(&offered(&fake)), ["echo"]);
    let results = &transcript(&outcome).turns[0].tool_results;
    assert_eq!(results[0].output, "token <redacted> here");
    assert!(!results[0].is_error);
    assert!(results[1].is_error, "only the chosen tools are offered");
    assert!(
        results[1].output.starts_with("unknown tool `add`"),
        "{}",
        results[1].output
    );
    assert!(
        mcp.header_values("authorization")
            .iter()
            .all(|v| v == "Bearer tok-Secret-123"),
    );
    assert!(!mcp.header_values("authorization").is_empty());
    assert!(mcp.header_values("x-team").iter().all(|v| v == "agents"));
    exec.shutdown().await;
}

async fn mcp_problems_fail_the_step() {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let mcp = FakeMcpHttp::start().await.unwrap();
    // A tool the server does not have.
    let config = format!("mcp_servers:\n  search:\n    url: \"{}\"\n", mcp.url());
    let exec = executor(
        project(&fake, &config, "        - { mcp: search, tools: [ecko] }\n"),
        false,
    );
    let outcome = run(&exec).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains("MCP server `search` has no tool `ecko`"),
        "{error}"
    );
    assert!(error.contains("`echo`"), "{error}");
    // A program that is not an MCP server: what it said is in the error.
    let config = "mcp_servers:\n  broken:\n    command: [sh, -c, \"echo no such database >&2; exit 3\"]\n    timeout: 5s\n";
    let exec = executor(project(&fake, config, "        - mcp: broken\n"), true);
    let outcome = run(&exec).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains("MCP server `broken`: cannot connect"),
        "{error}"
    );
    assert!(error.contains("no such database"), "{error}");
    // No process host (as on the server): stdio servers are refused.
    let config = format!("mcp_servers:\n  calc:\n    command: {}\n", server_argv());
    let exec = executor(project(&fake, &config, "        - mcp: calc\n"), false);
    let outcome = run(&exec).await;
    let error = outcome.error.unwrap_or_default();
    assert!(error.contains("runs a local program"), "{error}");
    assert_eq!(
        fake.requests_for_model("fake-agent").len(),
        0,
        "no model call was made"
    );
}

const COMMAND_TOOL: &str = r#"        - name: shout
          description: Shouts the word
          parameters: { type: object, properties: { word: { type: string } }, required: [word] }
          command: [sh, -c, "cat; printf ' %s' \"$1\" | tr a-z A-Z", sh, "{{ args.word }}"]
          timeout: 10s
"#;

async fn command_tool_runs_when_allowed() {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let exec = executor(
        project(&fake, "allow_command_tools: true", COMMAND_TOOL),
        true,
    );
    fake.push_for_model(
        "fake-agent",
        Reply::tool_calls([
            ToolCall::named("shout", json!({"word": "hi; rm -rf /"})),
            ToolCall::named("shout", json!({})),
        ]),
    );
    fake.push_for_model("fake-agent", Reply::text("done"));
    let outcome = run(&exec).await;
    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:#?}");
    let results = &transcript(&outcome).turns[0].tool_results;
    // The arguments arrive as JSON on stdin, and templated arguments are one argv entry each.
    assert_eq!(results[0].output, r#"{"word":"hi; rm -rf /"} HI; RM -RF /"#);
    assert!(!results[0].is_error);
    assert!(results[1].is_error);
    assert!(
        results[1].output.starts_with("invalid arguments"),
        "{}",
        results[1].output
    );
}

async fn command_tools_are_refused_without_a_host() {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    // Not allowed in flowrun.yaml: the project does not load, saying where and what to do.
    let diags = match Project::load(files(&fake, "", &agent_flow(COMMAND_TOOL))) {
        Ok(_) => panic!("a command tool loaded without `allow_command_tools`"),
        Err(e) => e.0,
    };
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].file, "flows/agent.yaml");
    assert_eq!(diags[0].location.as_ref().map(|l| l.line), Some(10));
    assert_eq!(diags[0].message, "command tools are off in this project");
    assert!(
        diags[0]
            .help
            .as_deref()
            .unwrap_or_default()
            .contains("allow_command_tools: true"),
        "{diags:#?}"
    );
    // Allowed, but the executor runs no programs (the server's): the step fails, unrun.
    let exec = executor(
        project(&fake, "allow_command_tools: true", COMMAND_TOOL),
        false,
    );
    let outcome = run(&exec).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains("command tool `shout` cannot run here"),
        "{error}"
    );
    assert_eq!(fake.requests_for_model("fake-agent").len(), 0);
}
