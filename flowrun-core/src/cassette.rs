//! Cassettes: recorded model replies, kept in git so tests replay in CI without API keys.
//!
//! A [`Cassette`] is an in-memory, thread-safe map from [`crate::cache::cache_key`] to [`CacheEntry`] and a
//! [`ResponseCache`]. Recording wraps it in [`crate::cache::Recording`] (every completed exchange
//! lands in it); replaying uses it as the executor's cache with `replay_only`, so a call that
//! was not recorded fails with a clear error instead of reaching a provider.
//!
//! The text form ([`Cassette::to_text`], [`Cassette::from_text`]) is pretty-printed JSON with
//! the entries sorted by key, each with its provider, model, the full request (messages,
//! parameters, response format) and the reply, so a review of the diff shows what was asked and
//! what was answered. It holds no API key or header: requests and replies are recorded as the
//! provider-neutral values the executor works with. The same entries always give the same
//! text. Reading and writing the file is the caller's job.
//!
//! ```json
//! {
//!   "format": "flowrun-cassette",
//!   "version": 1,
//!   "entries": [
//!     {
//!       "key": "d426…",
//!       "provider": "openai@1a2b3c4d5e6f",
//!       "kind": "openai",
//!       "model": "gpt-4o-mini",
//!       "request": { "model": "gpt-4o-mini", "messages": [ … ], "params": {}, "response_format": "Text" },
//!       "response": { "text": "…", "usage": { … }, "finish_reason": "stop", "model": "…", "raw": { … } }
//!     }
//!   ]
//! }
//! ```
//!
//! The stored `key` is informational: on reading, each entry's key is computed again from its
//! provider, kind and request, so a hand-edited request is replayed for what it now says.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::cache::{CacheEntry, ResponseCache};
use crate::provider::{ChatRequest, ChatResponse};
use crate::spec::ProviderKind;

/// The `format` value of a cassette file.
pub const CASSETTE_FORMAT: &str = "flowrun-cassette";

/// The cassette text version this crate writes and reads.
pub const CASSETTE_VERSION: u32 = 1;

/// Why a cassette text could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CassetteError {
    /// Not JSON, or not the shape of a cassette.
    #[error("not a valid cassette: {0}")]
    Parse(String),
    /// Written by a different version of flowrun.
    #[error(
        "cassette version {found} is not supported (this flowrun reads version {CASSETTE_VERSION}); record it again"
    )]
    Version { found: u64 },
    /// Two entries record the same request.
    #[error(
        "cassette entries {first} and {second} record the same request (key {key}); remove one"
    )]
    Duplicate {
        first: usize,
        second: usize,
        key: String,
    },
}

/// Recorded replies by cache key. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Cassette {
    entries: Mutex<BTreeMap<String, CacheEntry>>,
}

/// The file layout; field order is the text's order.
#[derive(Serialize, Deserialize)]
struct CassetteFile {
    format: String,
    version: u64,
    #[serde(default)]
    entries: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    key: String,
    provider: String,
    kind: ProviderKind,
    model: String,
    request: ChatRequest,
    response: ChatResponse,
}

/// Only the header, read first so a newer version is reported as such, not as a shape error.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u64>,
}

impl Cassette {
    /// An empty cassette (recording into one drops the entries no longer used).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a cassette from its text form.
    pub fn from_text(text: &str) -> Result<Cassette, CassetteError> {
        let header: Header =
            serde_json::from_str(text).map_err(|e| CassetteError::Parse(format!("{e}")))?;
        if header.format.as_deref() != Some(CASSETTE_FORMAT) {
            return Err(CassetteError::Parse(format!(
                "the `format` field must be \"{CASSETTE_FORMAT}\""
            )));
        }
        match header.version {
            Some(v) if v == u64::from(CASSETTE_VERSION) => {}
            Some(found) => return Err(CassetteError::Version { found }),
            None => {
                return Err(CassetteError::Parse(
                    "the `version` field is missing".into(),
                ));
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let file: CassetteFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            CassetteError::Parse(format!("at `{path}`: {}", e.into_inner()))
        })?;
        let mut entries = BTreeMap::new();
        let mut index_of = BTreeMap::new();
        for (i, e) in file.entries.into_iter().enumerate() {
            let entry = CacheEntry {
                provider: e.provider,
                kind: e.kind,
                model: e.model,
                request: e.request,
                response: e.response,
            };
            let key = entry.key();
            if let Some(first) = index_of.insert(key.clone(), i) {
                return Err(CassetteError::Duplicate {
                    first,
                    second: i,
                    key,
                });
            }
            entries.insert(key, entry);
        }
        Ok(Cassette {
            entries: Mutex::new(entries),
        })
    }

    /// The text form: pretty JSON, entries sorted by key, ending with a newline.
    pub fn to_text(&self) -> String {
        let entries = self
            .lock()
            .iter()
            .map(|(key, e)| FileEntry {
                key: key.clone(),
                provider: e.provider.clone(),
                kind: e.kind,
                model: e.model.clone(),
                request: e.request.clone(),
                response: e.response.clone(),
            })
            .collect();
        let file = CassetteFile {
            format: CASSETTE_FORMAT.into(),
            version: u64::from(CASSETTE_VERSION),
            entries,
        };
        // Plain data (strings, numbers, JSON values): serialization cannot fail.
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Adds (or replaces) `entry` under its own key.
    pub fn insert(&self, entry: CacheEntry) {
        self.lock().insert(entry.key(), entry);
    }

    /// The entry stored under `key`.
    pub fn entry(&self, key: &str) -> Option<CacheEntry> {
        self.lock().get(key).cloned()
    }

    /// Every entry with its key, sorted by key.
    pub fn entries(&self) -> Vec<(String, CacheEntry)> {
        self.lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CacheEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResponseCache for Cassette {
    fn get(&self, key: &str) -> Option<ChatResponse> {
        self.lock().get(key).map(|e| e.response.clone())
    }

    fn put(&self, key: &str, entry: &CacheEntry) {
        self.lock().insert(key.to_string(), entry.clone());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::provider::{Message, Params, ResponseFormat, Role, Usage};

    fn entry(provider: &str, user: &str, reply: &str) -> CacheEntry {
        CacheEntry {
            provider: provider.into(),
            kind: ProviderKind::Openai,
            model: "gpt-4o-mini".into(),
            request: ChatRequest {
                model: "gpt-4o-mini".into(),
                messages: vec![
                    Message::new(Role::System, "You are terse.\nVery terse."),
                    Message::new(Role::User, user),
                ],
                params: Params {
                    temperature: Some(0.2),
                    stop: vec!["END".into()],
                    ..Params::default()
                },
                response_format: ResponseFormat::Json {
                    schema: Some(json!({"type": "object", "required": ["a"]})),
                },
                tools: Vec::new(),
                tool_choice: None,
                parallel_tool_calls: None,
            },
            response: ChatResponse {
                text: reply.into(),
                usage: Usage {
                    input_tokens: 12,
                    output_tokens: 3,
                    cached_tokens: 0,
                    reasoning_tokens: 1,
                },
                finish_reason: Some("stop".into()),
                model: "gpt-4o-mini-2024-07-18".into(),
                raw: json!({"id": "chatcmpl-1", "z": 1.5e300, "choices": [{"index": 0}], "a": null}),
                tool_calls: Vec::new(),
            },
        }
    }

    fn sample() -> Cassette {
        let c = Cassette::new();
        c.insert(entry(
            "openai",
            "Ünïcode \"quoted\" \u{1f} text",
            "{\"a\": 1}",
        ));
        c.insert(entry("openai", "second", "two"));
        c.insert(entry("other", "second", "three"));
        c
    }

    #[test]
    fn round_trip_is_identical() {
        let c = sample();
        let text = c.to_text();
        let again = Cassette::from_text(&text).unwrap();
        assert_eq!(again.entries(), c.entries());
        assert_eq!(again.to_text(), text);
        // Insertion order does not matter; keys do.
        let reversed = Cassette::new();
        for (_, e) in c.entries().into_iter().rev() {
            reversed.insert(e);
        }
        assert_eq!(reversed.to_text(), text);
    }

    #[test]
    fn text_is_readable_and_sorted() {
        let text = sample().to_text();
        assert!(text.starts_with("{\n  \"format\": \"flowrun-cassette\",\n  \"version\": 1,\n"));
        assert!(text.ends_with("}\n"));
        assert!(text.contains("\"content\": \"You are terse.\\nVery terse.\""));
        assert!(text.contains("\"provider\": \"other\""));
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("\"key\": \""))
            .collect();
        assert_eq!(keys.len(), 3);
        assert!(keys.is_sorted(), "{keys:?}");
        for secret in ["authorization", "api_key", "x-api-key"] {
            assert!(!text.to_lowercase().contains(secret));
        }
    }

    #[test]
    fn is_a_response_cache() {
        let c = Cassette::new();
        let e = entry("openai", "hi", "hello");
        let key = e.key();
        assert_eq!(c.get(&key), None);
        c.put(&key, &e);
        assert_eq!(c.get(&key).map(|r| r.text), Some("hello".into()));
        assert_eq!(c.entry(&key), Some(e));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn keys_are_recomputed_on_reading() {
        let c = Cassette::new();
        c.insert(entry("openai", "hi", "hello"));
        let text = c.to_text();
        let (old_key, _) = c.entries().remove(0);
        let edited = text.replace("\"hi\"", "\"hi there\"");
        let read = Cassette::from_text(&edited).unwrap();
        let (new_key, e) = read.entries().remove(0);
        assert_ne!(new_key, old_key);
        assert_eq!(new_key, e.key());
        assert_eq!(e.request.messages[1].content, "hi there");
    }

    #[test]
    fn bad_texts_are_errors_not_panics() {
        let err = |t: &str| Cassette::from_text(t).unwrap_err().to_string();
        assert!(err("").starts_with("not a valid cassette"), "{}", err(""));
        assert!(err("[]").starts_with("not a valid cassette"));
        assert!(err("{\"version\": 1}").contains("`format`"));
        assert_eq!(
            err("{\"format\": \"flowrun-cassette\", \"version\": 7, \"entries\": 3}"),
            "cassette version 7 is not supported (this flowrun reads version 1); record it again"
        );
        let good = sample().to_text();
        let broken = good.replacen("\"input_tokens\": 12", "\"input_tokens\": \"x\"", 1);
        let e = err(&broken);
        assert!(
            e.contains("at `entries[0].response.usage.input_tokens`"),
            "{e}"
        );
        let empty = "{\"format\": \"flowrun-cassette\", \"version\": 1}";
        assert!(Cassette::from_text(empty).unwrap().is_empty());

        let one = Cassette::new();
        one.insert(entry("openai", "hi", "hello"));
        let v: serde_json::Value = serde_json::from_str(&one.to_text()).unwrap();
        let mut dup = v.clone();
        let first = v["entries"][0].clone();
        dup["entries"].as_array_mut().unwrap().push(first);
        let e = err(&dup.to_string());
        assert!(
            e.starts_with("cassette entries 0 and 1 record the same request"),
            "{e}"
        );
    }
}
