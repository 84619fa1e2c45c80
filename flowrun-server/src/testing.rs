//! Test support shared by the server's integration tests and the CLI's end-to-end tests:
//! scratch PostgreSQL databases, one per test, made on the server `FLOWRUN_TEST_POSTGRES_URL`
//! names and dropped when the test ends (even on a panic), so tests run in parallel; without
//! the variable, a test says loudly that it is skipped. Not for production use.

/// The environment variable naming the PostgreSQL server tests use.
pub const POSTGRES_ENV: &str = "FLOWRUN_TEST_POSTGRES_URL";

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

/// `url` pointing at database `name` instead of its own (its query kept).
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

/// A database of its own for one test, dropped with this value.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// A fresh database named `prefix_…` on the server `admin_url` names (its user may create
    /// databases). Panics when it cannot be made: a test cannot go on without it.
    pub async fn create(admin_url: &str, prefix: &str) -> ScratchDatabase {
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            flowrun_core::new_id().replace('-', "")
        );
        let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the PostgreSQL server of {POSTGRES_ENV}: {e}"));
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        drop(client);
        let _ = driver.await;
        ScratchDatabase {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
        }
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Its own thread and runtime: drop may run inside (or outside) a test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
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
            eprintln!(
                "could not drop the test database {}: {dropped:?}",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
