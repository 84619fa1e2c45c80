//! MCP tools: the tools of the MCP servers in `flowrun.yaml` (`mcp_servers`), through the
//! official Rust SDK (`rmcp`), over stdio (a program started through the [`ProcessHost`]) or
//! streamable HTTP.
//!
//! An executor connects to each server the first time an agent step offers its tools, keeps
//! the connection (and the tools list) for its later runs, reconnects if it closed, and
//! closes it in [`McpServers::shutdown`]; a server's program is killed if it is still
//! running then, or when the executor is dropped without a shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;

use super::process::{ProcessHandle, ProcessHost, ProcessSpec};
use super::{Tool, ToolContext, ToolOutcome};
use crate::exec::EnvLookup;
use crate::provider::ToolDef;
use crate::spec::config::{McpServerSpec, ProjectConfig, SettingValue};

/// How much of a result the model gets, in bytes (as for HTTP tools).
const MAX_RESULT_BYTES: usize = super::http::MAX_RESULT_BYTES;

/// How long a server's program gets to exit once its input is closed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The MCP servers of a project and their connections, made on first use.
pub struct McpServers {
    slots: HashMap<String, tokio::sync::Mutex<Option<Arc<McpConnection>>>>,
}

/// A live connection to one server and the tools it offers.
pub struct McpConnection {
    server: String,
    service: RunningService<RoleClient, ClientConfig>,
    tools: Vec<rmcp::model::Tool>,
    process: tokio::sync::Mutex<Option<Box<dyn ProcessHandle>>>,
    /// Secret values sent to the server (headers, env), redacted from what comes back.
    secrets: Vec<String>,
}

/// Where connections get what they need.
pub struct Connector<'a> {
    pub env: &'a EnvLookup,
    pub processes: Option<&'a dyn ProcessHost>,
    pub http: &'a reqwest::Client,
}

impl McpServers {
    pub fn new(config: &ProjectConfig) -> Self {
        let slots = config
            .mcp_servers
            .keys()
            .map(|k| (k.clone(), tokio::sync::Mutex::new(None)))
            .collect();
        McpServers { slots }
    }

    /// The connection to `name`, made now if there is none (or it closed).
    pub async fn connect(
        &self,
        name: &str,
        spec: &McpServerSpec,
        via: &Connector<'_>,
    ) -> Result<Arc<McpConnection>, String> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| format!("unknown MCP server `{name}`"))?;
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.service.is_closed()
        {
            return Ok(conn.clone());
        }
        if let Some(old) = slot.take() {
            old.close().await;
        }
        let conn = Arc::new(connect(name, spec, via).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Closes every connection and ends the servers' programs.
    pub async fn shutdown(&self) {
        for slot in self.slots.values() {
            if let Some(conn) = slot.lock().await.take() {
                conn.close().await;
            }
        }
    }
}

impl McpConnection {
    /// The server's tools, as listed when connecting.
    pub fn tools(&self) -> &[rmcp::model::Tool] {
        &self.tools
    }

    async fn close(&self) {
        self.service.cancellation_token().cancel();
        if let Some(mut process) = self.process.lock().await.take() {
            process.shutdown(EXIT_GRACE).await;
        }
    }

    fn redact(&self, mut text: String) -> String {
        for secret in self.secrets.iter().filter(|s| s.len() >= 4) {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        text
    }
}

/// The value of a setting, and the secret in it (to redact) when it comes from the env.
fn setting(
    value: &SettingValue,
    env: &EnvLookup,
    what: &str,
) -> Result<(String, Option<String>), String> {
    match value {
        SettingValue::Text(t) => Ok((t.clone(), None)),
        SettingValue::Env(e) => match env(&e.env).filter(|v| !v.is_empty()) {
            Some(v) => Ok((format!("{}{v}", e.prefix), Some(v))),
            None => Err(format!(
                "environment variable `{}` ({what}) is not set; export it (or put it in `.env`)",
                e.env
            )),
        },
    }
}

fn client_info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("flowrun", env!("CARGO_PKG_VERSION")),
    )
}

async fn connect(
    name: &str,
    spec: &McpServerSpec,
    via: &Connector<'_>,
) -> Result<McpConnection, String> {
    let mut secrets = Vec::new();
    let fail = |secrets: &[String], e: String| {
        let mut e = format!("MCP server `{name}`: {e}");
        for s in secrets.iter().filter(|s| s.len() >= 4) {
            e = e.replace(s.as_str(), "<redacted>");
        }
        e
    };
    let timeout = spec.timeout.0;
    let mut process = None;
    let started = if let Some(argv) = &spec.command {
        let Some(host) = via.processes else {
            return Err(format!(
                "MCP server `{name}` runs a local program (`command`), which this executor does not start (the server never does); use a `url` server"
            ));
        };
        let mut env = Vec::new();
        for (k, v) in &spec.env {
            let (value, secret) =
                setting(v, via.env, &format!("`env.{k}`")).map_err(|e| fail(&secrets, e))?;
            secrets.extend(secret);
            env.push((k.clone(), value));
        }
        let spawned = host
            .spawn(&ProcessSpec {
                argv: argv.clone(),
                env,
            })
            .await
            .map_err(|e| fail(&secrets, e))?;
        let transport = (spawned.stdout, spawned.stdin);
        process = Some(spawned.handle);
        tokio::time::timeout(timeout, async {
            let service = client_info()
                .serve(transport)
                .await
                .map_err(|e| e.to_string())?;
            let tools = service.list_all_tools().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((service, tools))
        })
        .await
    } else if let Some(url) = &spec.url {
        let mut headers = HashMap::new();
        for (k, v) in &spec.headers {
            let (value, secret) =
                setting(v, via.env, &format!("header `{k}`")).map_err(|e| fail(&secrets, e))?;
            let header_name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| fail(&secrets, format!("`{k}` is not a valid header name")))?;
            let header_value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| fail(&secrets, format!("header `{k}` has an invalid value")))?;
            secrets.extend(secret);
            headers.insert(header_name, header_value);
        }
        let config =
            StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(headers);
        let transport = StreamableHttpClientTransport::with_client(via.http.clone(), config);
        tokio::time::timeout(timeout, async {
            let service = client_info()
                .serve(transport)
                .await
                .map_err(|e| e.to_string())?;
            let tools = service.list_all_tools().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((service, tools))
        })
        .await
    } else {
        return Err(format!(
            "MCP server `{name}` has neither `command` nor `url`"
        ));
    };
    let result = match started {
        Ok(r) => r,
        Err(_) => Err(format!("it did not start within {timeout:?}")),
    };
    match result {
        Ok((service, tools)) => Ok(McpConnection {
            server: name.to_owned(),
            service,
            tools,
            process: tokio::sync::Mutex::new(process),
            secrets,
        }),
        Err(e) => {
            let tail = match process.as_mut() {
                Some(p) => {
                    p.shutdown(Duration::ZERO).await;
                    p.stderr_tail()
                }
                None => String::new(),
            };
            let e = if tail.trim().is_empty() {
                format!("cannot connect: {e}")
            } else {
                format!(
                    "cannot connect: {e}; its standard error ends with: {}",
                    tail.trim()
                )
            };
            Err(fail(&secrets, e))
        }
    }
}

/// One tool of an MCP server, offered under `def.name` (the server's name for it, with
/// characters providers refuse replaced by `_`).
pub struct McpTool {
    pub def: ToolDef,
    /// The server's name of the tool.
    pub remote: String,
    pub conn: Arc<McpConnection>,
    pub timeout: Duration,
}

/// The name a tool is offered under: letters, digits, `_` and `-`, at most 64.
pub fn offered_name(remote: &str) -> String {
    remote
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

impl McpTool {
    /// `tool` of the server behind `conn`.
    pub fn new(conn: Arc<McpConnection>, tool: &rmcp::model::Tool, timeout: Duration) -> Self {
        let mut parameters = Value::Object((*tool.input_schema).clone());
        if parameters.get("type").is_none() {
            parameters["type"] = Value::String("object".into());
        }
        McpTool {
            def: ToolDef {
                name: offered_name(&tool.name),
                description: tool.description.as_deref().unwrap_or_default().to_owned(),
                parameters,
            },
            remote: tool.name.to_string(),
            conn,
            timeout,
        }
    }
}

#[async_trait]
impl Tool for McpTool {
    fn def(&self) -> &ToolDef {
        &self.def
    }

    async fn call(&self, args: &Value, cx: &ToolContext<'_>) -> ToolOutcome {
        let mut params = CallToolRequestParams::new(self.remote.clone());
        if let Value::Object(map) = args {
            params = params.with_arguments(map.clone());
        }
        let call = self.conn.service.call_tool(params);
        let outcome = tokio::select! {
            () = cx.cancel.cancelled() => ToolOutcome::error("cancelled"),
            r = tokio::time::timeout(self.timeout, call) => match r {
                Err(_) => ToolOutcome::error(format!(
                    "MCP server `{}` did not answer within {:?}", self.conn.server, self.timeout
                )),
                Ok(Err(e)) => ToolOutcome::error(format!("MCP server `{}`: {e}", self.conn.server)),
                Ok(Ok(result)) => {
                    let text = result_text(&result);
                    if result.is_error == Some(true) {
                        ToolOutcome::error(text)
                    } else {
                        ToolOutcome::ok(text)
                    }
                }
            },
        };
        ToolOutcome {
            output: self.conn.redact(outcome.output),
            ..outcome
        }
    }
}

/// What the model gets of a result: text blocks as they are, embedded text resources' text,
/// other blocks (images, audio, links) described; structured content when there is no text.
fn result_text(result: &rmcp::model::CallToolResult) -> String {
    let mut parts = Vec::new();
    for block in &result.content {
        let Ok(v) = serde_json::to_value(block) else {
            continue;
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "text" => parts.push(v["text"].as_str().unwrap_or_default().to_owned()),
            "resource" => match v.pointer("/resource/text").and_then(Value::as_str) {
                Some(t) => parts.push(t.to_owned()),
                None => parts.push(format!(
                    "[binary resource {}]",
                    v.pointer("/resource/uri")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                )),
            },
            "resource_link" => parts.push(format!(
                "[resource {}]",
                v.get("uri").and_then(Value::as_str).unwrap_or("")
            )),
            other => parts.push(format!(
                "[{other} {}]",
                v.get("mimeType").and_then(Value::as_str).unwrap_or("")
            )),
        }
    }
    let text = if parts.is_empty() {
        match &result.structured_content {
            Some(v) => v.to_string(),
            None => String::new(),
        }
    } else {
        parts.join("\n")
    };
    cut(text)
}

fn cut(text: String) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text;
    }
    let mut end = MAX_RESULT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {MAX_RESULT_BYTES} bytes)", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_made_acceptable_to_providers() {
        assert_eq!(offered_name("files.read"), "files_read");
        assert_eq!(offered_name("search-web_2"), "search-web_2");
        assert_eq!(offered_name(&"x".repeat(80)).len(), 64);
    }

    #[test]
    fn results_become_text() {
        let result: rmcp::model::CallToolResult = serde_json::from_value(json!({
            "content": [
                {"type": "text", "text": "one"},
                {"type": "image", "data": "aGk=", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///a", "text": "two"}},
            ]
        }))
        .unwrap();
        assert_eq!(result_text(&result), "one\n[image image/png]\ntwo");
        let structured: rmcp::model::CallToolResult =
            serde_json::from_value(json!({"content": [], "structuredContent": {"n": 1}})).unwrap();
        assert_eq!(result_text(&structured), r#"{"n":1}"#);
    }
}
