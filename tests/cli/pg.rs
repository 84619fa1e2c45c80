//! PostgreSQL databases for the tests that run `flowrun serve` on PostgreSQL: one fresh
//! database per test on the server `FLOWRUN_TEST_POSTGRES_URL` names, dropped when the test
//! ends (even on a panic), made by `flowrun_server::testing`. Without the variable those tests
//! say loudly that they are skipped.

use flowrun_server::testing::{ScratchDatabase, postgres_url};

/// A database of its own for one test; dropped with this value.
pub struct PgDb {
    db: ScratchDatabase,
    /// The URL of this database.
    pub url: String,
}

impl PgDb {
    /// A fresh database, or `None` after printing that `test` is skipped.
    pub async fn new(test: &str) -> Option<PgDb> {
        let db = ScratchDatabase::create(&postgres_url(test)?, "flowrun_cli").await;
        let url = db.url().to_string();
        Some(PgDb { db, url })
    }

    /// A connection to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(self.db.url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the test database: {e}"));
        tokio::spawn(conn);
        client
    }
}
