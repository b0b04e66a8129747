//! Helpers for the integration tests: each test gets its own PostgreSQL database, dropped
//! when the test ends (also when it fails).

pub mod workload;

use std::str::FromStr;
use tokio_postgres::NoTls;

/// Where the tests' PostgreSQL server is: `MYKEY_TEST_DATABASE_URL`, by default the machine's
/// cluster on 127.0.0.1:5432 as `postgres` (trust authentication).
pub fn admin_config() -> tokio_postgres::Config {
    let url = std::env::var("MYKEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    match tokio_postgres::Config::from_str(&url) {
        Ok(c) => c,
        Err(e) => panic!("MYKEY_TEST_DATABASE_URL is not a valid connection string: {e}"),
    }
}

/// A database of its own for one test. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    config: tokio_postgres::Config,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!("mykey_test_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(&admin_config()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
        let mut config = admin_config();
        config.dbname(&name);
        TestDb { name, config }
    }

    /// Connection settings for this test's database.
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// A plain client (superuser on the test server: used to tamper with rows on purpose).
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.config).await
    }

    /// A connection URL for child processes.
    pub fn url(&self) -> String {
        let c = &self.config;
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "127.0.0.1".to_owned(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().unwrap_or("postgres");
        format!("host={host} port={port} user={user} dbname={}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a fresh thread with its own runtime can block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = connect(&admin_config()).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: test database {} was not dropped", self.name);
        }
    }
}

pub async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
    tokio::spawn(connection);
    client
}

/// Polls `check` until it returns `Some`, failing the test (naming `what`) after `within`:
/// the bounded wait every asynchronous effect in these tests is awaited with.
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every table of `schema` but those named in `except`, each as its rows in JSON, sorted:
/// equal dumps mean equal tables (how read models built two ways are compared).
pub async fn dump_tables(
    client: &tokio_postgres::Client,
    schema: &str,
    except: &[&str],
) -> std::collections::BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap_or_else(|e| panic!("list tables of {schema}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|t| !except.contains(&t.as_str()))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for table in tables {
        let mut rows: Vec<String> = client
            .query(
                &format!("SELECT to_jsonb(t)::text FROM {schema}.{table} t"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("dump {schema}.{table}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// The one `bigint` that `sql` answers.
pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
