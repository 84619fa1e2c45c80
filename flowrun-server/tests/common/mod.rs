//! Test databases for the server's integration tests: a fresh SQLite file, or a fresh
//! PostgreSQL database made for one test on the server `FLOWRUN_TEST_POSTGRES_URL` names and
//! dropped after it, so tests run in parallel. [`on_both!`] runs a test against each.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use flowrun_server::store::{PostgresStore, ServerStore, SqliteStore};

/// The environment variable naming the PostgreSQL server tests use.
pub const POSTGRES_ENV: &str = "FLOWRUN_TEST_POSTGRES_URL";

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
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

/// The PostgreSQL server URL tests use, or `None` after saying loudly that `test` is skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: {test}: {POSTGRES_ENV} not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            None
        }
    }
}

/// `url` pointing at database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let after = &rest[path_start..];
    let query = after.find('?').map_or("", |i| &after[i..]);
    format!(
        "{}{}/{name}{query}",
        &url[..scheme_end],
        &rest[..path_start]
    )
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

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
        let name = format!(
            "flowrun_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the PostgreSQL server");
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        drop(client);
        let _ = driver.await;
        let url = with_database(admin_url, &name);
        TestDb {
            kind: Kind::Postgres {
                admin_url: admin_url.to_string(),
                name,
                url,
            },
        }
    }

    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Sqlite { .. } => Backend::Sqlite,
            Kind::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The PostgreSQL URL of this database (`None` on SQLite).
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.kind {
            Kind::Postgres { url, .. } => Some(url),
            Kind::Sqlite { .. } => None,
        }
    }

    /// The SQLite file (`None` on PostgreSQL).
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match &self.kind {
            Kind::Sqlite { path, .. } => Some(path),
            Kind::Postgres { .. } => None,
        }
    }

    /// A new store on this database (a new connection or pool each time).
    pub async fn open(&self) -> Arc<dyn ServerStore> {
        match &self.kind {
            Kind::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).expect("open sqlite")),
            Kind::Postgres { url, .. } => {
                Arc::new(PostgresStore::connect(url, 8).await.expect("open postgres"))
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Kind::Postgres {
            admin_url, name, ..
        } = &self.kind
        else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Its own thread and runtime: drop may run inside (or outside) the test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database: {dropped:?}");
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

#[test]
fn a_url_gets_another_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/test?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}
