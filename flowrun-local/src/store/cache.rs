//! The response cache in the history database: the store as a [`ResponseCache`].
//!
//! Table `response_cache` (migration 2): one row per cache key with the provider, the model,
//! the request and the reply as JSON, and when it was stored. A read error or an unreadable row
//! is a miss (the next reply replaces the row); a write error is kept for
//! [`Store::take_sink_error`], like a failed event write, and never fails the run.

use std::sync::Arc;

use flowrun_core::cache::{CacheEntry, ResponseCache};
use flowrun_core::event::now_ms;
use flowrun_core::provider::ChatResponse;
use rusqlite::{Connection, OptionalExtension, params};

use super::behind::Write;
use super::{Store, StoreError};

impl Store {
    /// The cached reply under `key`, if any.
    pub fn cached_response(&self, key: &str) -> Result<Option<ChatResponse>, StoreError> {
        let text: Option<String> = self.with_conn(|conn| {
            Ok(conn
                .prepare_cached("SELECT response FROM response_cache WHERE key = ?1")?
                .query_row(params![key], |r| r.get(0))
                .optional()?)
        })?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Stores `entry` under `key`, replacing an older reply.
    pub fn cache_response(&self, key: &str, entry: &CacheEntry) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            write_entry(conn, key, entry)?;
            Ok(())
        })
    }

    /// Empties the response cache, returning how many replies were dropped.
    pub fn clear_response_cache(&self) -> Result<usize, StoreError> {
        self.with_conn(|conn| Ok(conn.execute("DELETE FROM response_cache", [])?))
    }

    fn keep_error(&self, what: &str, e: &StoreError) {
        let mut slot = self
            .sink_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert_with(|| format!("response cache {what}: {e}"));
    }
}

/// The statement that stores `entry` under `key`, in the caller's transaction.
pub(super) fn write_entry(
    conn: &Connection,
    key: &str,
    entry: &CacheEntry,
) -> rusqlite::Result<usize> {
    let request = serde_json::to_string(&entry.request).ok();
    let response = serde_json::to_string(&entry.response).unwrap_or_default();
    conn.prepare_cached(
        "INSERT INTO response_cache (key, provider, model, request, response, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (key) DO UPDATE SET provider = excluded.provider, model = excluded.model,
            request = excluded.request, response = excluded.response, created_at = excluded.created_at",
    )?
    .execute(params![key, entry.provider, entry.model, request, response, now_ms()])
}

impl ResponseCache for Store {
    fn get(&self, key: &str) -> Option<ChatResponse> {
        // A reply still on its way to the database is already the cached one.
        if let Some(reply) = self.behind.get().and_then(|w| w.pending_reply(key)) {
            return Some(reply);
        }
        self.cached_response(key).unwrap_or_else(|e| {
            self.keep_error("read", &e);
            None
        })
    }

    fn put(&self, key: &str, entry: &CacheEntry) {
        if let Some(writer) = self.behind.get() {
            writer.push(Write::Cache(key.to_string(), Arc::new(entry.clone())));
            return;
        }
        if let Err(e) = self.cache_response(key, entry) {
            self.keep_error("write", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowrun_core::provider::{ChatRequest, Message, Params, ResponseFormat, Role, Usage};
    use flowrun_core::spec::ProviderKind;
    use flowrun_core::{Executor, Project, RunRequest, SourceFile};
    use serde_json::json;

    use super::*;

    fn entry(reply: &str) -> CacheEntry {
        CacheEntry {
            provider: "openai".into(),
            kind: ProviderKind::Openai,
            model: "gpt-4o-mini".into(),
            request: ChatRequest {
                model: "gpt-4o-mini".into(),
                messages: vec![Message::new(Role::User, "hi")],
                params: Params::default(),
                response_format: ResponseFormat::Text,
                tools: Vec::new(),
                tool_choice: None,
                parallel_tool_calls: None,
            },
            response: ChatResponse {
                text: reply.into(),
                usage: Usage {
                    input_tokens: 1,
                    output_tokens: 2,
                    cached_tokens: 0,
                    reasoning_tokens: 0,
                },
                finish_reason: Some("stop".into()),
                model: "gpt-4o-mini".into(),
                raw: json!({"id": "x"}),
                tool_calls: Vec::new(),
            },
        }
    }

    #[test]
    fn survives_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".flowrun/flowrun.db");
        let e = entry("hello");
        let key = e.key();
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.get(&key), None);
            store.put(&key, &e);
            store.put(&key, &entry("hello again"));
            assert_eq!(store.take_sink_error(), None);
        }
        let store = Store::open(&path).unwrap();
        let got = store.get(&key).expect("a hit after reopening");
        assert_eq!(got, entry("hello again").response);
        assert_eq!(store.get("other"), None);
        assert_eq!(store.clear_response_cache().unwrap(), 1);
        assert_eq!(store.get(&key), None);
    }

    #[test]
    fn an_unreadable_row_is_a_miss() {
        let store = Store::in_memory().unwrap();
        store
            .with_conn(|c| {
                c.execute(
                    "INSERT INTO response_cache (key, provider, model, response, created_at)
                     VALUES ('k', 'p', 'm', 'not json', 0)",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.get("k"), None);
        assert_eq!(store.take_sink_error(), None);
    }

    #[tokio::test]
    async fn cached_runs_are_recorded_as_cached_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let project = Arc::new(
            Project::load(vec![
                SourceFile::new(
                    "flowrun.yaml",
                    "providers: {offline: {kind: mock}}\ndefaults: {model: offline/echo}\n",
                ),
                SourceFile::new(
                    "prompts/hello.yaml",
                    "input: {name: string}\nmessages:\n  - user: \"Hello {{ name }}\"\n",
                ),
            ])
            .unwrap(),
        );
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            // A new store (and executor) each time: the second run is served from the file.
            let store = Arc::new(Store::open(&path).unwrap());
            let exec = Executor::builder(project.clone())
                .sink(store.clone())
                .cache(store.clone())
                .build()
                .unwrap();
            let outcome = exec
                .run(RunRequest::new("hello", json!({"name": "Ada"})))
                .await
                .unwrap();
            assert_eq!(store.take_sink_error(), None);
            outcomes.push(outcome);
        }
        assert!(!outcomes[0].cached);
        assert!(outcomes[1].cached);
        assert_eq!(outcomes[1].output, outcomes[0].output);
        let store = Store::open(&path).unwrap();
        let calls: Vec<bool> = outcomes
            .iter()
            .map(|o| store.run(&o.run_id).unwrap().calls[0].cached)
            .collect();
        assert_eq!(calls, [false, true]);
    }
}
