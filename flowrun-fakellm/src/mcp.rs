//! A fake MCP server for tests: a few tools (`add`, `echo`, `fail`, `env`, `pid`) served over
//! stdio ([`serve_stdio`], for a test to start as a process) or streamable HTTP on loopback
//! ([`FakeMcpHttp::start`]), with rmcp's server side. HTTP requests' headers are recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AddArgs {
    /// The left number.
    pub a: i64,
    pub b: i64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TextArgs {
    pub text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NameArgs {
    pub name: String,
}

/// The fake server's tools.
#[derive(Debug, Clone)]
pub struct FakeMcp {
    tool_router: ToolRouter<Self>,
}

impl Default for FakeMcp {
    fn default() -> Self {
        FakeMcp {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl FakeMcp {
    #[tool(description = "Adds two integers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Says the text back")]
    fn echo(&self, Parameters(TextArgs { text }): Parameters<TextArgs>) -> String {
        text
    }

    #[tool(description = "Always fails with the text as the error")]
    fn fail(&self, Parameters(TextArgs { text }): Parameters<TextArgs>) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(text)])
    }

    #[tool(description = "The value of an environment variable of the server")]
    fn env(&self, Parameters(NameArgs { name }): Parameters<NameArgs>) -> String {
        std::env::var(&name).unwrap_or_default()
    }

    #[tool(description = "The server's process id")]
    fn pid(&self) -> String {
        std::process::id().to_string()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for FakeMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Serves [`FakeMcp`] on this process's standard input and output until the input closes.
pub async fn serve_stdio() -> Result<(), String> {
    let service = FakeMcp::default()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| e.to_string())?;
    service.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// [`FakeMcp`] over streamable HTTP on a loopback port, at `/mcp`.
pub struct FakeMcpHttp {
    addr: SocketAddr,
    stop: CancellationToken,
    headers: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeMcpHttp {
    pub async fn start() -> std::io::Result<FakeMcpHttp> {
        let stop = CancellationToken::new();
        let service: StreamableHttpService<FakeMcp, LocalSessionManager> =
            StreamableHttpService::new(
                || Ok(FakeMcp::default()),
                Default::default(),
                StreamableHttpServerConfig::default()
                    .with_sse_keep_alive(None)
                    .with_cancellation_token(stop.child_token()),
            );
        let headers = Arc::new(Mutex::new(Vec::new()));
        let seen = headers.clone();
        let router =
            axum::Router::new()
                .nest_service("/mcp", service)
                .layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        let seen = seen.clone();
                        async move {
                            if let Ok(mut seen) = seen.lock() {
                                for (k, v) in req.headers() {
                                    seen.push((k.to_string(), v.to_str().unwrap_or("").to_owned()));
                                }
                            }
                            next.run(req).await
                        }
                    },
                ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { until.cancelled_owned().await })
                .await;
        });
        Ok(FakeMcpHttp {
            addr,
            stop,
            headers,
        })
    }

    /// The endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Values of header `name` received so far.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for FakeMcpHttp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
