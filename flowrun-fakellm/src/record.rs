//! Recording of received requests (with secrets redacted) and reply counts.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use crate::reply::ReplyKind;

/// Which wire format a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// The value that replaces secret header values in recordings.
pub const REDACTED: &str = "<redacted>";

/// Header names whose values are never recorded.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
];

/// One request as the fake server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The API (endpoint) that was called.
    pub api: Api,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The `model` field of the body, when present and a string.
    pub model: Option<String>,
    /// Headers with lowercased names; values of secret headers
    /// (`authorization`, `x-api-key`, ...) are replaced by [`REDACTED`].
    /// Repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (a JSON string holding the raw text when the body was
    /// not valid JSON).
    pub body: serde_json::Value,
    /// Whether the body asked for a streamed answer.
    pub stream: bool,
    /// When the request arrived: milliseconds since the Unix epoch (wall clock, so it can be
    /// compared with timestamps other processes on the machine wrote).
    pub received_at_ms: i64,
}

impl RecordedRequest {
    pub(crate) fn new(api: Api, path: &str, headers: &HeaderMap, raw_body: &[u8]) -> Self {
        let body = serde_json::from_slice::<serde_json::Value>(raw_body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(raw_body).into_owned())
        });
        RecordedRequest {
            api,
            path: path.to_owned(),
            model: body
                .get("model")
                .and_then(|m| m.as_str())
                .map(str::to_owned),
            headers: redacted_headers(headers),
            stream: body
                .get("stream")
                .and_then(|s| s.as_bool())
                .unwrap_or(false),
            body,
            received_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }

    /// The recorded value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

fn redacted_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        // `HeaderName`s are already lowercase.
        let name = name.as_str().to_owned();
        let value = if SECRET_HEADERS.contains(&name.as_str()) {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.entry(name)
            .and_modify(|v| {
                if v != REDACTED {
                    v.push_str(", ");
                    v.push_str(&value);
                }
            })
            .or_insert(value);
    }
    out
}

/// How many replies of each kind the server has served (including injected
/// faults and request validation errors).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyCounts {
    /// Text answers.
    pub text: u64,
    /// Tool-call answers.
    pub tool_calls: u64,
    /// HTTP errors.
    pub error: u64,
    /// Hung requests.
    pub hang: u64,
    /// Reset connections.
    pub reset: u64,
}

impl ReplyCounts {
    pub(crate) fn add(&mut self, kind: ReplyKind) {
        match kind {
            ReplyKind::Text => self.text += 1,
            ReplyKind::ToolCalls => self.tool_calls += 1,
            ReplyKind::Error => self.error += 1,
            ReplyKind::Hang => self.hang += 1,
            ReplyKind::Reset => self.reset += 1,
        }
    }

    /// Sum of all counts.
    pub fn total(&self) -> u64 {
        self.text + self.tool_calls + self.error + self.hang + self.reset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn secrets_are_redacted_and_names_lowercased() {
        let mut h = HeaderMap::new();
        h.insert(
            "Authorization",
            HeaderValue::from_static("Bearer sk-secret"),
        );
        h.insert("X-Api-Key", HeaderValue::from_static("sk-ant-secret"));
        h.insert("Anthropic-Version", HeaderValue::from_static("2023-06-01"));
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        let r = RecordedRequest::new(Api::Anthropic, "/v1/messages", &h, br#"{"model":"m"}"#);
        assert_eq!(r.header("authorization"), Some(REDACTED));
        assert_eq!(r.header("X-API-KEY"), Some(REDACTED));
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(r.header("accept"), Some("a, b"));
        assert_eq!(r.model.as_deref(), Some("m"));
        assert!(!r.stream);
        let dump = format!("{r:?}");
        assert!(!dump.contains("secret"), "{dump}");
    }

    #[test]
    fn the_arrival_time_is_wall_clock_milliseconds() {
        let ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let before = ms();
        let r = RecordedRequest::new(
            Api::OpenAi,
            "/v1/chat/completions",
            &HeaderMap::new(),
            b"{}",
        );
        let after = ms();
        assert!(
            (before..=after).contains(&r.received_at_ms),
            "{before} <= {} <= {after}",
            r.received_at_ms
        );
    }

    #[test]
    fn invalid_json_body_is_kept_as_text() {
        let r = RecordedRequest::new(
            Api::OpenAi,
            "/v1/chat/completions",
            &HeaderMap::new(),
            b"{oops",
        );
        assert_eq!(r.body, serde_json::Value::String("{oops".into()));
        assert_eq!(r.model, None);
    }
}
