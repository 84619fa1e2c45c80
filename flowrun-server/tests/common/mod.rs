//! Test databases for the server's integration tests: a fresh SQLite file, or a fresh
//! PostgreSQL database made for one test on the server `FLOWRUN_TEST_POSTGRES_URL` names and
//! dropped after it (`flowrun_server::testing`), so tests run in parallel. [`on_both!`] runs a
//! test against each.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use flowrun_server::store::{PostgresStore, ServerStore, SqliteStore};

use flowrun_server::testing::{ScratchDatabase, postgres_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database; a PostgreSQL one is dropped when this is.
pub struct TestDb {
    kind: Kind,
}

enum Kind {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres(ScratchDatabase),
}

impl TestDb {
    /// Runs `sql` on this database behind the store's back (to damage a record, say).
    #[allow(dead_code)]
    pub async fn raw_sql(&self, sql: &str) {
        if let Some(url) = self.postgres_url() {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client.batch_execute(sql).await.expect("raw SQL");
        } else {
            let path = self.sqlite_path().expect("a SQLite file").to_path_buf();
            let sql = sql.to_string();
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(path).expect("open");
                c.busy_timeout(std::time::Duration::from_secs(5))
                    .expect("busy timeout");
                c.execute_batch(&sql).expect("raw SQL");
            })
            .await
            .expect("join");
        }
    }

    /// A fresh database, or `None` when PostgreSQL is not configured (reported as skipped).
    pub async fn new(backend: Backend, test: &str) -> Option<TestDb> {
        let kind = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tmp");
                let path = dir.path().join("server.db");
                Kind::Sqlite { _dir: dir, path }
            }
            Backend::Postgres => return Some(TestDb::postgres_on(&postgres_url(test)?).await),
        };
        Some(TestDb { kind })
    }

    /// A fresh database on the PostgreSQL server `admin_url` names (its user may create
    /// databases), dropped with the returned value.
    pub async fn postgres_on(admin_url: &str) -> TestDb {
        TestDb {
            kind: Kind::Postgres(ScratchDatabase::create(admin_url, "flowrun_t").await),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Sqlite { .. } => Backend::Sqlite,
            Kind::Postgres(_) => Backend::Postgres,
        }
    }

    /// The PostgreSQL URL of this database (`None` on SQLite).
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.kind {
            Kind::Postgres(db) => Some(db.url()),
            Kind::Sqlite { .. } => None,
        }
    }

    /// The SQLite file (`None` on PostgreSQL).
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match &self.kind {
            Kind::Sqlite { path, .. } => Some(path),
            Kind::Postgres(_) => None,
        }
    }

    /// A new store on this database (a new connection or pool each time).
    pub async fn open(&self) -> Arc<dyn ServerStore> {
        match &self.kind {
            Kind::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).expect("open sqlite")),
            Kind::Postgres(db) => Arc::new(
                PostgresStore::connect(db.url(), 8)
                    .await
                    .expect("open postgres"),
            ),
        }
    }
}

/// Runs each `async fn name(db: TestDb)` twice, as `name::sqlite` and `name::postgres`.
#[allow(unused_macros)]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = crate::common::TestDb::new(
                        crate::common::Backend::Sqlite,
                        concat!(stringify!($name), "::sqlite"),
                    )
                    .await;
                    if let Some(db) = db {
                        super::$name(db).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = crate::common::TestDb::new(
                        crate::common::Backend::Postgres,
                        concat!(stringify!($name), "::postgres"),
                    )
                    .await;
                    if let Some(db) = db {
                        super::$name(db).await;
                    }
                }
            }
        )*
    };
}
