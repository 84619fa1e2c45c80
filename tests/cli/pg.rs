//! PostgreSQL databases for the tests that run `flowrun serve` on PostgreSQL: one fresh
//! database per test on the server `FLOWRUN_TEST_POSTGRES_URL` names, dropped when the test
//! ends (even on a panic). Without the variable those tests say loudly that they are skipped.

/// The environment variable naming the PostgreSQL server.
pub const POSTGRES_ENV: &str = "FLOWRUN_TEST_POSTGRES_URL";

/// A database of its own for one test; dropped with this value.
pub struct PgDb {
    admin: String,
    name: String,
    /// The URL of this database.
    pub url: String,
}

impl PgDb {
    /// A fresh database, or `None` after printing that `test` is skipped.
    pub async fn new(test: &str) -> Option<PgDb> {
        let Some(admin) = std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty()) else {
            eprintln!(
                "SKIPPED: {test}: {POSTGRES_ENV} not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            return None;
        };
        let name = format!(
            "flowrun_cli_{}_{}",
            std::process::id(),
            flowrun_core::new_id().replace('-', "")
        );
        connect(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(PgDb { admin, name, url })
    }

    /// A connection to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {POSTGRES_ENV}: {e}"));
    tokio::spawn(conn);
    client
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own thread and runtime: drop may run inside (or outside) the test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
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
            eprintln!(
                "could not drop the test database {}: {dropped:?}",
                self.name
            );
        }
    }
}
