//! What `flowrun sync` pushes and pulls, on the local side: finished runs, test runs and
//! evaluations not yet pushed to a remote (a ledger of content hashes per remote, so
//! re-syncing sends nothing new and a changed record is sent again), and the deployment
//! history pulled from it with its cursor. No network here: the binary does the HTTP.

use rusqlite::params;
use serde_json::Value;
use sha2::Digest as _;

use super::{Store, StoreError};

/// A record to push: `kind` is `run`, `test_run` or `eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRecord {
    pub kind: &'static str,
    pub id: String,
    pub record: Value,
    /// SHA-256 of the record as pushed (after [`withhold_content`]).
    pub hash: String,
}

/// One deployment history entry pulled from a remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledDeployment {
    pub seq: i64,
    pub env: String,
    pub bundle_id: String,
    pub action: String,
    pub rolled_back: bool,
    pub created_at: i64,
}

/// Keys that hold prompts, inputs, outputs or model text anywhere in a record.
const CONTENT_KEYS: [&str; 8] = [
    "input",
    "output",
    "output_text",
    "messages",
    "raw_response",
    "reason",
    "message",
    "expected",
];

/// Removes prompts, inputs, outputs and model text from a record (every key in
/// `CONTENT_KEYS`, at any depth): what is pushed unless `sync.content` is true.
pub fn withhold_content(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !CONTENT_KEYS.contains(&k.as_str()));
            map.values_mut().for_each(withhold_content);
        }
        Value::Array(items) => items.iter_mut().for_each(withhold_content),
        _ => {}
    }
}

fn hash(record: &Value) -> String {
    hex::encode(sha2::Sha256::digest(record.to_string().as_bytes()))
}

impl Store {
    /// Every finished record (oldest first: runs, then test runs, then evaluations) whose
    /// content differs from what was last pushed to `remote`.
    pub fn unsynced(&self, remote: &str, content: bool) -> Result<Vec<LocalRecord>, StoreError> {
        let (run_ids, reports) = self.with_conn(|conn| {
            let run_ids = conn
                .prepare("SELECT id FROM runs WHERE status <> 'running' ORDER BY started_at, id")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut reports = Vec::new();
            for (kind, table) in [("test_run", "test_runs"), ("eval", "evals")] {
                let sql = format!("SELECT id, report FROM {table} ORDER BY started_at, id");
                let rows = conn
                    .prepare(&sql)?
                    .query_map([], |r| {
                        Ok((kind, r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                reports.extend(rows);
            }
            Ok((run_ids, reports))
        })?;
        let pushed = self.pushed_hashes(remote)?;
        let mut out = Vec::new();
        let mut add = |kind: &'static str, id: String, mut record: Value| {
            if !content {
                withhold_content(&mut record);
            }
            let hash = hash(&record);
            if pushed.get(&(kind.to_string(), id.clone())) != Some(&hash) {
                out.push(LocalRecord {
                    kind,
                    id,
                    record,
                    hash,
                });
            }
        };
        for id in run_ids {
            let detail = self.run(&id)?;
            let record = serde_json::to_value(&detail)
                .map_err(|e| StoreError::NotFound(format!("cannot encode run {id}: {e}")))?;
            add("run", id, record);
        }
        for (kind, id, report) in reports {
            let record = serde_json::from_str(&report).map_err(|e| {
                StoreError::NotFound(format!("stored {kind} {id} is not valid JSON: {e}"))
            })?;
            add(kind, id, record);
        }
        Ok(out)
    }

    fn pushed_hashes(
        &self,
        remote: &str,
    ) -> Result<std::collections::HashMap<(String, String), String>, StoreError> {
        self.with_conn(|conn| {
            let rows = conn
                .prepare("SELECT kind, id, hash FROM sync_pushed WHERE remote = ?1")?
                .query_map([remote], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Records that `records` reached `remote` (one transaction, after the server said so).
    pub fn mark_synced(&self, remote: &str, records: &[LocalRecord]) -> Result<(), StoreError> {
        let now = flowrun_core::event::now_ms();
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO sync_pushed (remote, kind, id, hash, pushed_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (remote, kind, id) DO UPDATE SET hash = excluded.hash, pushed_at = excluded.pushed_at",
                )?;
                for r in records {
                    stmt.execute(params![remote, r.kind, r.id, r.hash, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// A named cursor of `remote` (0 when never set).
    pub fn sync_cursor(&self, remote: &str, name: &str) -> Result<i64, StoreError> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM sync_cursors WHERE remote = ?1 AND name = ?2",
                    params![remote, name],
                    |r| r.get(0),
                )
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(0),
                    e => Err(e),
                })?)
        })
    }

    /// Stores pulled deployment history and moves the `deployments` cursor to `next_after`,
    /// in one transaction (an interrupted pull starts again from the last page stored).
    pub fn save_deployments(
        &self,
        remote: &str,
        rows: &[PulledDeployment],
        next_after: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO deployments (remote, seq, env, bundle_id, action, rolled_back, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (remote, seq) DO UPDATE SET rolled_back = excluded.rolled_back",
                )?;
                for d in rows {
                    stmt.execute(params![
                        remote,
                        d.seq,
                        d.env,
                        d.bundle_id,
                        d.action,
                        d.rolled_back,
                        d.created_at
                    ])?;
                }
            }
            tx.execute(
                "INSERT INTO sync_cursors (remote, name, value) VALUES (?1, 'deployments', ?2)
                 ON CONFLICT (remote, name) DO UPDATE SET value = excluded.value",
                params![remote, next_after],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The deployment history pulled from `remote`, oldest first.
    pub fn pulled_deployments(&self, remote: &str) -> Result<Vec<PulledDeployment>, StoreError> {
        self.with_conn(|conn| {
            let rows = conn
                .prepare(
                    "SELECT seq, env, bundle_id, action, rolled_back, created_at FROM deployments
                     WHERE remote = ?1 ORDER BY seq",
                )?
                .query_map([remote], |r| {
                    Ok(PulledDeployment {
                        seq: r.get(0)?,
                        env: r.get(1)?,
                        bundle_id: r.get(2)?,
                        action: r.get(3)?,
                        rolled_back: r.get(4)?,
                        created_at: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn withholding_removes_content_at_any_depth() {
        let mut v = json!({
            "id": "r1", "input": {"q": "secret"}, "status": "succeeded",
            "steps": [{"step_id": "a", "messages": [{"content": "secret"}], "output_text": "secret",
                       "input_tokens": 3}],
            "calls": [{"raw_response": {"choices": []}, "model": "m"}]
        });
        withhold_content(&mut v);
        assert_eq!(
            v,
            json!({"id": "r1", "status": "succeeded",
                   "steps": [{"step_id": "a", "input_tokens": 3}], "calls": [{"model": "m"}]})
        );
    }

    #[test]
    fn ledger_and_cursor_round_trip() {
        let store = Store::in_memory().unwrap();
        assert!(store.unsynced("origin", false).unwrap().is_empty());
        assert_eq!(store.sync_cursor("origin", "deployments").unwrap(), 0);
        let d = PulledDeployment {
            seq: 7,
            env: "prod".into(),
            bundle_id: "b".into(),
            action: "deploy".into(),
            rolled_back: false,
            created_at: 1,
        };
        store
            .save_deployments("origin", std::slice::from_ref(&d), 7)
            .unwrap();
        store
            .save_deployments("origin", std::slice::from_ref(&d), 7)
            .unwrap();
        assert_eq!(store.sync_cursor("origin", "deployments").unwrap(), 7);
        assert_eq!(store.pulled_deployments("origin").unwrap(), vec![d]);
        assert_eq!(store.sync_cursor("other", "deployments").unwrap(), 0);
    }
}
