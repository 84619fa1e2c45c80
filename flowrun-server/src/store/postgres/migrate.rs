//! Versioned migrations of the PostgreSQL schema, applied at start. Replicas starting at once
//! take turns through a session advisory lock, so each migration runs exactly once. Append new
//! migrations (files under `migrations/postgres/`); never edit old ones.

use tokio_postgres::Client;

use crate::store::StoreError;

/// `(version, name, SQL)`, in order, versions 1, 2, …
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "webhooks",
        include_str!("../../../migrations/postgres/0002_webhooks.sql"),
    ),
    (
        3,
        "agent_turns",
        include_str!("../../../migrations/postgres/0003_agent_turns.sql"),
    ),
    (
        4,
        "sync",
        include_str!("../../../migrations/postgres/0004_sync.sql"),
    ),
];

/// The advisory lock key migrations hold (any constant private to flowrun).
const LOCK_KEY: i64 = 0x666c_6f77_7275_6e01;

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies the pending migrations, each in its own transaction, under the migration lock.
/// Give it a connection of its own: the lock is released when the session ends, even if this
/// process dies half-way.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let applied = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    applied?;
    unlocked?;
    Ok(())
}

async fn apply(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS flowrun_migrations (
                version    BIGINT PRIMARY KEY,
                name       TEXT NOT NULL,
                applied_at BIGINT NOT NULL
            )",
        )
        .await?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM flowrun_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    if current > latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: latest(),
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO flowrun_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &flowrun_core::event::now_ms()],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.0, i as i64 + 1, "migration {}", m.1);
        }
        assert_eq!(latest(), MIGRATIONS.len() as i64);
    }
}
