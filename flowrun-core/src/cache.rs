//! Response caching: replies keyed by what was asked, so an identical call is answered without
//! calling (or paying) the provider again.
//!
//! The executor looks a call up with [`cache_key`] before calling a provider, uses a hit as the
//! reply (recorded as a `cached` attempt that costs nothing), and [`ResponseCache::put`]s every
//! reply it got from a provider. With `replay_only` a miss fails the call instead of calling
//! the provider (CI replaying a [`crate::cassette::Cassette`], no keys needed).
//!
//! Stores live outside the core (flowrun-local keeps one in SQLite); the core ships the trait,
//! the key, the in-memory cassette and the [`Recording`] wrapper.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::provider::{ChatRequest, ChatResponse};
use crate::spec::ProviderKind;

/// The version of the key format; hashed first, so a change of format never reuses old keys.
pub const CACHE_KEY_VERSION: &str = "flowrun-cache-v1";

/// One recorded exchange: the request as sent to the provider and its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The provider's identity the key is computed from: its name in `flowrun.yaml` and a hash
    /// of its kind, configured `base_url` and mock rules (`openai@1a2b3c4d5e6f`), so answers of
    /// another endpoint configured under the same name are not reused.
    pub provider: String,
    /// The protocol it speaks.
    pub kind: ProviderKind,
    /// The model as the provider names it.
    pub model: String,
    /// The request exactly as the executor sent it (model and merged parameters included).
    pub request: ChatRequest,
    /// The reply.
    pub response: ChatResponse,
}

impl CacheEntry {
    /// The key this entry is stored under: [`cache_key`] of its provider, kind and request.
    pub fn key(&self) -> String {
        cache_key(&self.provider, self.kind, &self.request)
    }

    /// `provider/model`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// Where the executor looks replies up and stores them.
///
/// Implementations are called inline from the executor and should be quick; they cannot fail
/// a run: a store that cannot read answers `None` (a miss), one that cannot write drops the
/// entry (keeping the error for its owner to report, if it wants).
pub trait ResponseCache: Send + Sync {
    /// The reply stored under `key`, if any.
    fn get(&self, key: &str) -> Option<ChatResponse>;

    /// Stores `entry` under `key` (replacing an older one).
    fn put(&self, key: &str, entry: &CacheEntry);

    /// Told that the executor used the reply [`get`](Self::get) returned for `key`, with the
    /// full exchange. The default does nothing; [`Recording`] records it.
    fn hit(&self, key: &str, entry: &CacheEntry) {
        let _ = (key, entry);
    }
}

/// The cache key of a request to provider `provider_name`: the lowercase hex SHA-256 of
/// [`CACHE_KEY_VERSION`], a newline and the canonical JSON (object keys sorted, no whitespace)
/// of the provider name, its kind, the model, the parameters, the response format and the
/// messages.
///
/// The same request gives the same key on every run and platform; changing any of these parts
/// (a message, a parameter, the output schema, the model, the provider) changes it. Parameters
/// left unset are not part of the key, so a new optional parameter keeps existing keys.
pub fn cache_key(provider_name: &str, kind: ProviderKind, request: &ChatRequest) -> String {
    let mut value = json!({
        "provider": provider_name,
        "kind": kind.as_str(),
        "model": request.model,
        "params": request.params,
        "response_format": request.response_format,
        "messages": request.messages,
    });
    // Tool settings join the key only when present, so keys of requests without tools (and
    // every stored cache and cassette) stay as they were.
    if !request.tools.is_empty() {
        value["tools"] = json!(request.tools);
    }
    if let Some(choice) = &request.tool_choice {
        value["tool_choice"] = json!(choice);
    }
    if let Some(parallel) = request.parallel_tool_calls {
        value["parallel_tool_calls"] = json!(parallel);
    }
    let mut text = String::with_capacity(256);
    text.push_str(CACHE_KEY_VERSION);
    text.push('\n');
    write_canonical(&value, &mut text);
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Compact JSON with object keys sorted (by their UTF-8 bytes), whatever order the value was
/// built or parsed in.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Records every exchange the executor completes into `into`, whether the reply came from the
/// provider or from `inner`.
///
/// - Record mode for a cassette: `Recording::new(cassette)`; every call goes to the provider
///   (nothing is looked up) and is recorded.
/// - Record while reusing another cache: `Recording::over(sqlite, cassette)`; hits in `sqlite`
///   are used (and recorded), misses go to the provider and are stored in both.
///
/// Replay is the cassette itself as the cache, with `replay_only`.
pub struct Recording {
    /// Looked up first, if set; also receives every reply from a provider.
    pub inner: Option<Arc<dyn ResponseCache>>,
    /// Receives every completed exchange.
    pub into: Arc<dyn ResponseCache>,
}

impl Recording {
    /// Records into `into`, looking nothing up.
    pub fn new(into: Arc<dyn ResponseCache>) -> Self {
        Recording { inner: None, into }
    }

    /// Looks up in `inner` and records into `into`.
    pub fn over(inner: Arc<dyn ResponseCache>, into: Arc<dyn ResponseCache>) -> Self {
        Recording {
            inner: Some(inner),
            into,
        }
    }
}

impl ResponseCache for Recording {
    fn get(&self, key: &str) -> Option<ChatResponse> {
        self.inner.as_ref()?.get(key)
    }

    fn put(&self, key: &str, entry: &CacheEntry) {
        if let Some(inner) = &self.inner {
            inner.put(key, entry);
        }
        self.into.put(key, entry);
    }

    fn hit(&self, key: &str, entry: &CacheEntry) {
        if let Some(inner) = &self.inner {
            inner.hit(key, entry);
        }
        self.into.put(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::provider::{Message, Params, ResponseFormat, Role, Usage};

    fn canonical_json(value: &Value) -> String {
        let mut out = String::new();
        write_canonical(value, &mut out);
        out
    }

    /// An object from pairs, in the given order (serde_json keeps insertion order here).
    fn object(pairs: &[(&str, Value)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect::<Map<String, Value>>(),
        )
    }

    fn request() -> ChatRequest {
        ChatRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![
                Message::new(Role::System, "You are terse."),
                Message::new(Role::User, "Summarize: the report"),
            ],
            params: Params {
                temperature: Some(0.2),
                ..Params::default()
            },
            response_format: ResponseFormat::Text,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
        }
    }

    fn key(request: &ChatRequest) -> String {
        cache_key("openai", ProviderKind::Openai, request)
    }

    #[test]
    fn key_is_stable() {
        let k = key(&request());
        assert_eq!(k.len(), 64);
        assert!(
            k.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(k, key(&request()));
        // Pinned: a change here invalidates every stored cache and cassette, so it must come
        // with a new CACHE_KEY_VERSION. (Python: sha256 of the version line and
        // json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).)
        assert_eq!(
            k,
            "d426f00cfb4d4383be42751e29531451aa0c1a3f19fcc4dbbb295ec2a655fd65"
        );
    }

    #[test]
    fn key_changes_with_every_part() {
        let base = request();
        let k = key(&base);
        let mut variants: Vec<(&str, String)> = Vec::new();
        variants.push((
            "provider name",
            cache_key("other", ProviderKind::Openai, &base),
        ));
        variants.push((
            "provider kind",
            cache_key("openai", ProviderKind::Anthropic, &base),
        ));
        let mut r = base.clone();
        r.model = "gpt-4o".into();
        variants.push(("model", key(&r)));
        let mut r = base.clone();
        r.params.temperature = Some(0.3);
        variants.push(("temperature", key(&r)));
        let mut r = base.clone();
        r.params.seed = Some(1);
        variants.push(("seed", key(&r)));
        let mut r = base.clone();
        r.params.stop = vec!["\n".into()];
        variants.push(("stop", key(&r)));
        let mut r = base.clone();
        r.response_format = ResponseFormat::Json { schema: None };
        variants.push(("response format", key(&r)));
        let mut r = base.clone();
        r.response_format = ResponseFormat::Json {
            schema: Some(json!({"type": "object"})),
        };
        variants.push(("output schema", key(&r)));
        let mut r = base.clone();
        r.messages[1].content.push(' ');
        variants.push(("message text", key(&r)));
        let mut r = base.clone();
        r.messages[0].role = Role::User;
        variants.push(("message role", key(&r)));
        let mut r = base.clone();
        r.messages.push(Message::new(Role::User, "more"));
        variants.push(("message count", key(&r)));
        let mut r = base.clone();
        r.messages.swap(0, 1);
        variants.push(("message order", key(&r)));
        for (what, other) in &variants {
            assert_ne!(&k, other, "the key ignores the {what}");
        }
        let mut all: Vec<&String> = variants.iter().map(|(_, k)| k).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), variants.len());
    }

    #[test]
    fn key_ignores_object_key_order() {
        let a = object(&[
            ("type", json!("object")),
            ("required", json!(["a"])),
            (
                "properties",
                object(&[("a", json!({"type": "string"})), ("b", json!({}))]),
            ),
        ]);
        let b = object(&[
            (
                "properties",
                object(&[("b", json!({})), ("a", json!({"type": "string"}))]),
            ),
            ("required", json!(["a"])),
            ("type", json!("object")),
        ]);
        assert_ne!(a.to_string(), b.to_string());
        assert_eq!(canonical_json(&a), canonical_json(&b));
        let with = |schema: Value| {
            let mut r = request();
            r.response_format = ResponseFormat::Json {
                schema: Some(schema),
            };
            key(&r)
        };
        assert_eq!(with(a), with(b));
    }

    #[test]
    fn canonical_json_escapes_and_sorts() {
        let v = json!({"b": [1, 2.5, null, true], "a": "x\"\n\u{e9}", "A": {}});
        assert_eq!(
            canonical_json(&v),
            r#"{"A":{},"a":"x\"\n\u00e9","b":[1,2.5,null,true]}"#.replace("\\u00e9", "\u{e9}")
        );
    }

    #[derive(Default)]
    struct Map1(std::sync::Mutex<Vec<(String, String)>>);

    impl ResponseCache for Map1 {
        fn get(&self, key: &str) -> Option<ChatResponse> {
            let found = self.0.lock().unwrap().iter().any(|(k, _)| k == key);
            found.then(|| response("cached"))
        }
        fn put(&self, key: &str, entry: &CacheEntry) {
            self.0
                .lock()
                .unwrap()
                .push((key.to_string(), entry.response.text.clone()));
        }
    }

    fn response(text: &str) -> ChatResponse {
        ChatResponse {
            text: text.into(),
            usage: Usage::default(),
            finish_reason: Some("stop".into()),
            model: "gpt-4o-mini".into(),
            raw: json!({}),
            tool_calls: Vec::new(),
        }
    }

    #[test]
    fn recording_records_puts_and_hits() {
        let inner = Arc::new(Map1::default());
        let into = Arc::new(Map1::default());
        let rec = Recording::over(inner.clone(), into.clone());
        let entry = CacheEntry {
            provider: "openai".into(),
            kind: ProviderKind::Openai,
            model: "gpt-4o-mini".into(),
            request: request(),
            response: response("fresh"),
        };
        assert_eq!(rec.get("k"), None);
        rec.put("k", &entry);
        assert_eq!(rec.get("k").map(|r| r.text), Some("cached".into()));
        rec.hit("k", &entry);
        assert_eq!(
            inner.0.lock().unwrap().len(),
            1,
            "a hit is not stored again"
        );
        assert_eq!(into.0.lock().unwrap().len(), 2, "a hit is recorded");

        let only = Recording::new(into.clone());
        only.put("k", &entry);
        assert_eq!(only.get("k"), None, "record mode looks nothing up");
        assert_eq!(entry.key(), key(&request()));
        assert_eq!(entry.label(), "openai/gpt-4o-mini");
    }
}
