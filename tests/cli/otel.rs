//! OpenTelemetry export from `flowrun run`, `test`, `eval` and `dev`: an in-process OTLP
//! receiver (HTTP/protobuf on an axum server, gRPC on a tonic `TraceService`) gets the span
//! tree of a two-step flow run against the fake LLM server, with the GenAI attributes, and
//! prompt text only when allowed; a test or eval session is one trace, its cases' runs under
//! the session's span with their results.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

use crate::eval_cmd::{commit_all, git_init, have_git};
use crate::harness::{Outcome, TestProject, run};

const KEY: &str = "sk-test-secret-0123456789";
const SECRET_INPUT: &str = "my card number is 4111";

/// What the receiver got: every export request, and the headers of each.
#[derive(Clone, Default)]
pub(crate) struct Received {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    headers: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl Received {
    pub(crate) fn spans(&self) -> Vec<Span> {
        let requests = self.requests.lock().unwrap();
        let mut out = Vec::new();
        for req in requests.iter() {
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .map(|r| attrs(&r.attributes))
                    .and_then(|a| a.get("service.name").cloned())
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(Span {
                            service: service.clone(),
                            name: s.name.clone(),
                            id: s.span_id.clone(),
                            parent: s.parent_span_id.clone(),
                            trace: s.trace_id.clone(),
                            kind: s.kind,
                            attrs: attrs(&s.attributes),
                        });
                    }
                }
            }
        }
        out
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lock()
            .unwrap()
            .iter()
            .find_map(|h| h.get(name).cloned())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Span {
    service: String,
    pub(crate) name: String,
    id: Vec<u8>,
    pub(crate) parent: Vec<u8>,
    trace: Vec<u8>,
    kind: i32,
    attrs: HashMap<String, String>,
}

impl Span {
    pub(crate) fn attr(&self, key: &str) -> &str {
        self.attrs
            .get(key)
            .unwrap_or_else(|| panic!("span `{}` has no `{key}`: {:?}", self.name, self.attrs))
    }
}

fn attrs(list: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(Any::StringValue(s)) => s,
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
pub(crate) async fn http_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let state = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                state.requests.lock().unwrap().push(req);
                state.headers.lock().unwrap().push(
                    headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect(),
                );
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        self.headers.lock().unwrap().push(headers);
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver: the collector's `TraceService`.
async fn grpc_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, received)
}

fn project(fake: &FakeLlm, capture: bool) -> TestProject {
    TestProject::from_txtar(&format!(
        "-- flowrun.yaml --
providers:
  fake: {{ kind: openai, base_url: \"{}\", api_key_env: FAKE_OPENAI_KEY }}
models:
  gpt: {{ provider: fake, model: gpt-4o-mini }}
defaults: {{ model: gpt, backoff: 10ms, timeout: 5s }}
telemetry: {{ capture_content: {capture} }}
-- prompts/summarize.yaml --
input: {{ text: string }}
messages:
  - user: \"Summarize: {{{{ text }}}}\"
-- prompts/title.yaml --
input: {{ summary: string }}
messages:
  - user: \"Title for: {{{{ summary }}}}\"
-- flows/brief.yaml --
input: {{ text: string }}
steps:
  - id: summary
    prompt: summarize
    with: {{ text: \"{{{{ input.text }}}}\" }}
  - id: title
    prompt: title
    with: {{ summary: \"{{{{ steps.summary.output }}}}\" }}
output: \"{{{{ steps.title.output }}}}\"
",
        fake.openai_base_url()
    ))
}

/// `flowrun ARGS` in `project` (off the test's runtime, which serves the receiver) with the
/// fake's key, no ambient `OTEL_*` but `envs`.
async fn flowrun(
    project: &TestProject,
    envs: Vec<(&'static str, String)>,
    args: &[&str],
) -> Outcome {
    let mut cmd = project.flowrun();
    cmd.env("FAKE_OPENAI_KEY", KEY)
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

async fn run_flow(project: TestProject, envs: Vec<(&'static str, String)>) {
    let input = format!("text={SECRET_INPUT}");
    let args = ["run", "flow/brief", "--json", "--input", &input];
    let out = flowrun(&project, envs, &args).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// The tree: one run span, its two step spans, one chat span under each; returns them.
fn check_tree(spans: &[Span]) -> (Span, Vec<Span>, Vec<Span>) {
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let roots: Vec<_> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = roots[0].clone();
    assert!(spans.iter().all(|s| s.trace == root.trace));
    let steps: Vec<Span> = spans
        .iter()
        .filter(|s| s.parent == root.id)
        .cloned()
        .collect();
    let mut step_ids: Vec<_> = steps.iter().map(|s| s.attr("flowrun.step.id")).collect();
    step_ids.sort();
    assert_eq!(step_ids, ["summary", "title"]);
    let calls: Vec<Span> = steps
        .iter()
        .map(|step| {
            let under: Vec<_> = spans.iter().filter(|s| s.parent == step.id).collect();
            assert_eq!(under.len(), 1, "{under:#?}");
            under[0].clone()
        })
        .collect();
    (root, steps, calls)
}

fn check_attributes(root: &Span, steps: &[Span], calls: &[Span]) {
    assert_eq!(root.name, "flow brief");
    assert_eq!(root.attr("flowrun.flow"), "brief");
    assert_eq!(root.attr("flowrun.status"), "succeeded");
    assert!(!root.attr("flowrun.version").is_empty());
    assert!(root.attr("flowrun.cost_usd").parse::<f64>().unwrap() > 0.0);
    for step in steps {
        assert_eq!(step.attr("gen_ai.request.model"), "gpt-4o-mini");
        assert_eq!(step.attr("gen_ai.system"), "openai");
    }
    for call in calls {
        assert_eq!(call.kind, SpanKind::Client as i32);
        assert_eq!(call.name, "chat gpt-4o-mini");
        assert_eq!(call.attr("gen_ai.operation.name"), "chat");
        assert_eq!(call.attr("gen_ai.system"), "openai");
        assert_eq!(call.attr("gen_ai.request.model"), "gpt-4o-mini");
        assert_eq!(call.attr("gen_ai.response.model"), "gpt-4o-mini");
        assert!(
            call.attr("gen_ai.usage.input_tokens")
                .parse::<u64>()
                .unwrap()
                > 0
        );
        assert_eq!(call.attr("gen_ai.usage.output_tokens"), "2");
        assert!(call.attr("flowrun.cost_usd").parse::<f64>().unwrap() > 0.0);
        assert_eq!(call.attr("flowrun.attempt"), "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_has_the_span_tree_and_no_content() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push(Reply::text("short summary"));
    fake.push(Reply::text("A title"));
    let (addr, received) = http_receiver().await;
    run_flow(
        project(&fake, false),
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme".into()),
        ],
    )
    .await;
    let spans = received.spans();
    let (root, steps, calls) = check_tree(&spans);
    check_attributes(&root, &steps, &calls);
    assert_eq!(root.service, "flowrun");
    assert_eq!(received.header("x-tenant").as_deref(), Some("acme"));
    assert_eq!(
        received.header("content-type").as_deref(),
        Some("application/x-protobuf")
    );
    // Without `capture_content`, no prompt, input or completion leaves the process.
    let everything = format!("{spans:?}");
    assert!(!everything.contains(SECRET_INPUT), "{everything}");
    assert!(!everything.contains("short summary"), "{everything}");
    assert!(!everything.contains(KEY));
    assert!(
        steps
            .iter()
            .all(|s| !s.attrs.contains_key("gen_ai.input.messages"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_with_capture_content() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    fake.push(Reply::text("short summary"));
    fake.push(Reply::text("A title"));
    let (addr, received) = grpc_receiver().await;
    run_flow(
        project(&fake, true),
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_SERVICE_NAME", "briefs".into()),
        ],
    )
    .await;
    let spans = received.spans();
    let (root, steps, calls) = check_tree(&spans);
    check_attributes(&root, &steps, &calls);
    assert_eq!(root.service, "briefs");
    let summary = steps
        .iter()
        .find(|s| s.attr("flowrun.step.id") == "summary")
        .unwrap();
    assert!(
        summary
            .attr("gen_ai.input.messages")
            .contains(&format!("Summarize: {SECRET_INPUT}"))
    );
    assert!(
        summary
            .attr("gen_ai.output.messages")
            .contains("short summary")
    );
    assert!(!format!("{spans:?}").contains(KEY));
}

#[test]
fn a_bad_protocol_is_a_usage_error_naming_the_variable() {
    let project = TestProject::from_txtar(
        "-- flowrun.yaml --
providers: { m: { kind: mock } }
defaults: { model: m/echo }
-- prompts/hi.yaml --
messages:
  - user: hi
",
    );
    let out = run(project
        .flowrun()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .args(["run", "hi"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "`OTEL_EXPORTER_OTLP_PROTOCOL` is `http/json`; use `http/protobuf` or `grpc`"
        ),
        "{}",
        out.stderr
    );
}

/// Two cases of the flow; the fake echoes, so the title step's output is
/// `echo: Title for: echo: Summarize: <text>`: `title` passes, `missing` fails.
const TESTS: &str = "target: flow/brief
cases:
  - { name: title, input: { text: first }, assert: [{ contains: \"Title for\" }] }
  - { name: missing, input: { text: second }, assert: [{ contains: nowhere }] }
";

/// The spans under `parent`.
pub(crate) fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.parent == parent.id).collect()
}

/// A case's run span under `session`: its steps and calls below it, its result on it.
fn check_case_run(spans: &[Span], session: &Span, run: &Span) {
    assert_eq!(run.parent, session.id);
    assert_eq!(run.trace, session.trace);
    assert_eq!(run.name, "flow brief");
    assert_eq!(run.attr("flowrun.status"), "succeeded");
    assert_eq!(run.attr("flowrun.test.file"), "tests/brief.test.yaml");
    let steps = children(spans, run);
    assert_eq!(steps.len(), 2, "{steps:#?}");
    for step in steps {
        let calls = children(spans, step);
        assert_eq!(calls.len(), 1, "{calls:#?}");
        assert_eq!(calls[0].attr("gen_ai.system"), "openai");
        assert_eq!(calls[0].attr("gen_ai.request.model"), "gpt-4o-mini");
    }
    let pass = run.attr("flowrun.test.pass");
    let expected = match run.attr("flowrun.test.case") {
        "title" => "true",
        "missing" => "false",
        other => panic!("unexpected case {other}"),
    };
    assert_eq!(pass, expected, "{run:#?}");
    assert_eq!(
        run.attr("flowrun.test.score"),
        if pass == "true" { "1" } else { "0" }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_run_is_one_trace_with_each_case_result_even_when_it_fails() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let (addr, received) = http_receiver().await;
    let project = project(&fake, false);
    project.write("tests/brief.test.yaml", TESTS);
    let envs = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))];
    let out = flowrun(&project, envs, &["test"]).await;
    // One case fails, so the exit status is 1: the spans were flushed all the same.
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let spans = received.spans();
    // The session, and per case: its run, two steps and a call under each.
    assert_eq!(spans.len(), 1 + 2 * 5, "{spans:#?}");
    let roots: Vec<_> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    let session = roots[0];
    assert_eq!(session.name, "flowrun test");
    assert_eq!(session.attr("flowrun.test.cases"), "2");
    assert_eq!(session.attr("flowrun.test.pass_count"), "1");
    assert_eq!(session.attr("flowrun.test.fail_count"), "1");
    assert_eq!(session.attr("flowrun.test.passed"), "false");
    assert!(session.attr("flowrun.cost_usd").parse::<f64>().unwrap() > 0.0);
    let runs = children(&spans, session);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    for run in runs {
        check_case_run(&spans, session, run);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eval_labels_each_side_under_one_session() {
    if !have_git() {
        return;
    }
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let (addr, received) = http_receiver().await;
    let project = project(&fake, false);
    project.write("tests/brief.test.yaml", TESTS);
    project.write(".gitignore", ".flowrun/\n");
    git_init(project.path(), "main");
    commit_all(project.path(), "the baseline");
    let envs = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))];
    let out = flowrun(&project, envs, &["eval", "--baseline", "git:main"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let spans = received.spans();
    // The session, and per case and side: its run, two steps and a call under each.
    assert_eq!(spans.len(), 1 + 2 * 2 * 5, "{spans:#?}");
    let roots: Vec<_> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    let session = roots[0];
    assert_eq!(session.name, "flowrun eval");
    assert!(
        session
            .attr("flowrun.eval.baseline")
            .starts_with("git:main")
    );
    assert_eq!(
        session.attr("flowrun.eval.verdict"),
        "no significant change"
    );
    assert_eq!(session.attr("flowrun.eval.draft.pass_count"), "1");
    assert_eq!(session.attr("flowrun.eval.baseline.pass_count"), "1");
    let runs = children(&spans, session);
    let mut sides: Vec<_> = runs.iter().map(|r| r.attr("flowrun.eval.side")).collect();
    sides.sort();
    assert_eq!(sides, ["baseline", "baseline", "draft", "draft"]);
    for run in runs {
        check_case_run(&spans, session, run);
    }
}
