//! HTTP tools: a request built from templates over the call's arguments (`args`), with
//! secret headers read from the environment, and the response (or a JSON Pointer into it)
//! as the result.
//!
//! Secrets never leave the request: they are not in templates' output, errors or results,
//! and a response that echoes one has it replaced by `<redacted>`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutcome};
use crate::provider::ToolDef;
use crate::spec::agent::{HeaderValue, HttpMethod, HttpToolSpec};
use crate::yaml::{Document, Path};

/// How much of a response the model gets, in bytes.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// An HTTP tool of an agent step; templates are located in the flow file at `path`.
pub struct HttpTool<'a> {
    pub def: ToolDef,
    pub spec: &'a HttpToolSpec,
    pub doc: &'a Document,
    /// The tool's `http` key in the flow file.
    pub path: Path,
}

impl HttpTool<'_> {
    fn render(
        &self,
        cx: &ToolContext<'_>,
        path: &Path,
        value: &Value,
        args: &Value,
    ) -> Result<Value, String> {
        cx.executor
            .renderer()
            .eval_value(self.doc, path, value, &json!({ "args": args }))
            .map_err(|e| format!("the tool's template failed: {}", e.0.message))
    }

    /// The request, and the secret values it carries (to redact from what comes back).
    fn build(
        &self,
        cx: &ToolContext<'_>,
        args: &Value,
    ) -> Result<(reqwest::RequestBuilder, Vec<String>), String> {
        let url = match self.render(
            cx,
            &self.path.key("url"),
            &Value::String(self.spec.url.clone()),
            args,
        )? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let method = match self.spec.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        let mut request = cx
            .executor
            .tool_http_client()
            .request(method, &url)
            .timeout(self.spec.timeout.0);
        let mut secrets = Vec::new();
        for (name, value) in &self.spec.headers {
            let value = match value {
                HeaderValue::Template(t) => {
                    let path = self.path.key("headers").key(name);
                    match self.render(cx, &path, &Value::String(t.clone()), args)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    }
                }
                HeaderValue::Env(e) => {
                    let Some(secret) = cx.executor.env_var(&e.env).filter(|v| !v.is_empty()) else {
                        return Err(format!(
                            "the tool is not configured: environment variable `{}` (header `{name}`) is not set",
                            e.env
                        ));
                    };
                    secrets.push(secret.clone());
                    format!("{}{secret}", e.prefix)
                }
            };
            request = request.header(name.as_str(), value);
        }
        if let Some(body) = &self.spec.body {
            let body = self.render(cx, &self.path.key("body"), body, args)?;
            request = request.json(&body);
        }
        Ok((request, secrets))
    }
}

#[async_trait]
impl Tool for HttpTool<'_> {
    fn def(&self) -> &ToolDef {
        &self.def
    }

    async fn call(&self, args: &Value, cx: &ToolContext<'_>) -> ToolOutcome {
        let (request, secrets) = match self.build(cx, args) {
            Ok(r) => r,
            Err(e) => return ToolOutcome::error(e),
        };
        let timeout = self.spec.timeout.0;
        let outcome = tokio::select! {
            () = cx.cancel.cancelled() => ToolOutcome::error("cancelled"),
            outcome = send(request, timeout, self.spec.response.as_deref()) => outcome,
        };
        redact(outcome, &secrets)
    }
}

async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    pointer: Option<&str>,
) -> ToolOutcome {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return ToolOutcome::error(format!("the request timed out after {timeout:?}"));
        }
        Err(e) => return ToolOutcome::error(format!("the request failed: {}", e.without_url())),
    };
    let status = response.status();
    let body = match tokio::time::timeout(timeout, response.bytes()).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return ToolOutcome::error(format!("reading the response failed: {}", e.without_url()));
        }
        Err(_) => return ToolOutcome::error(format!("the request timed out after {timeout:?}")),
    };
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return ToolOutcome::error(format!("HTTP {}: {}", status.as_u16(), cut(&text)));
    }
    let Some(pointer) = pointer.filter(|p| !p.is_empty()) else {
        return ToolOutcome::ok(cut(&text));
    };
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return ToolOutcome::error(format!(
            "the response is not JSON, so `{pointer}` selects nothing: {}",
            cut(&text)
        ));
    };
    match json.pointer(pointer) {
        Some(Value::String(s)) => ToolOutcome::ok(cut(s)),
        Some(other) => ToolOutcome::ok(cut(&other.to_string())),
        None => ToolOutcome::error(format!(
            "the response has nothing at `{pointer}`: {}",
            cut(&text)
        )),
    }
}

/// At most [`MAX_RESULT_BYTES`], cut at a character boundary, with a note when cut.
fn cut(text: &str) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_RESULT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {MAX_RESULT_BYTES} bytes)", &text[..end])
}

fn redact(mut outcome: ToolOutcome, secrets: &[String]) -> ToolOutcome {
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        outcome.output = outcome.output.replace(secret.as_str(), "<redacted>");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_cut_and_secrets_redacted() {
        let long = "é".repeat(MAX_RESULT_BYTES);
        let out = cut(&long);
        assert!(
            out.ends_with("(cut at 65536 bytes)"),
            "{}",
            &out[out.len() - 40..]
        );
        let outcome = redact(
            ToolOutcome::ok("token=s3cret-value ok"),
            &["s3cret-value".into()],
        );
        assert_eq!(outcome.output, "token=<redacted> ok");
    }
}
