//! Scratch schemas: where `replay` builds a projection, apart from the live read models.
//!
//! A scratch schema is marked with a comment ([`Marker`]) saying which projection it holds
//! and up to which position; `diff` reads the marker to find the live schema to compare with,
//! and `drop` refuses any schema without it, so neither can be pointed at live tables by a
//! typo. Names are refused when PostgreSQL, the runner (`rm_*`, `read_models`) or the event
//! log own them.

use crate::{emit, Outcome, ToolError};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;
use tokio_postgres::{Client, GenericClient, NoTls};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_SCHEMA_LEN: usize = 63;

/// Prefix of the default scratch schema name.
pub const DEFAULT_PREFIX: &str = "replay_";

/// The `tool` field of a scratch schema's marker.
const TOOL: &str = "mykey-replay";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema names (or prefixes) a scratch schema may never take.
const RESERVED: &[&str] = &["public", "information_schema", "read_models"];
const RESERVED_PREFIXES: &[&str] = &["pg_", "rm_"];

/// What the comment on a scratch schema says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub tool: String,
    pub projection: String,
    pub version: u32,
    /// Last global position applied.
    pub position: u64,
    /// False while the replay runs (or when it died): the tables are partial.
    pub complete: bool,
    pub source: String,
    pub created_at: DateTime<Utc>,
}

impl Marker {
    pub fn new(projection: &str, version: u32, source: &str) -> Marker {
        Marker {
            tool: TOOL.into(),
            projection: projection.into(),
            version,
            position: 0,
            complete: false,
            source: source.into(),
            created_at: Utc::now(),
        }
    }
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> ToolError {
    match e.as_db_error() {
        Some(d) => ToolError::Db(format!("{} (SQLSTATE {})", d.message(), d.code().code())),
        None => ToolError::Db(e.to_string()),
    }
}

/// A writable session (the scratch schema is written; `db::Db` stays read-only).
pub async fn connect(url: &str) -> Result<Client, ToolError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| ToolError::Usage(format!("--database-url: {e}")))?;
    config.application_name("mykey-replay");
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, connection) = config.connect(NoTls).await.map_err(pg_err)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `replay_<projection>_<UTC yyyymmdd_hhmmss>`: at most 63 bytes for a projection name of at
/// most [`mykey_projections::runner::MAX_NAME_LEN`].
pub fn default_name(projection: &str, now: DateTime<Utc>) -> String {
    format!(
        "{DEFAULT_PREFIX}{projection}_{}",
        now.format("%Y%m%d_%H%M%S")
    )
}

/// A plain lower-case identifier outside the names PostgreSQL and the runner own.
pub fn check_name(schema: &str) -> Result<(), ToolError> {
    let mut chars = schema.chars();
    let plain = schema.len() <= MAX_SCHEMA_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return Err(ToolError::Usage(format!(
            "--schema {schema:?}: a scratch schema name is [a-z_][a-z0-9_]*, at most {MAX_SCHEMA_LEN} bytes"
        )));
    }
    if RESERVED.contains(&schema) || RESERVED_PREFIXES.iter().any(|p| schema.starts_with(p)) {
        return Err(ToolError::Usage(format!(
            "--schema {schema}: that name belongs to PostgreSQL or to the live read models; \
             a replay never writes there"
        )));
    }
    Ok(())
}

/// Refuses a schema the runner registered or one that exists already.
pub async fn check_free<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
) -> Result<(), ToolError> {
    check_name(schema)?;
    let registry = client
        .query_one("SELECT to_regclass('read_models.schemas') IS NOT NULL", &[])
        .await
        .map_err(pg_err)?
        .try_get::<_, bool>(0)
        .map_err(pg_err)?;
    if registry
        && client
            .query_opt(
                "SELECT 1 FROM read_models.schemas WHERE schema_name = $1",
                &[&schema],
            )
            .await
            .map_err(pg_err)?
            .is_some()
    {
        return Err(ToolError::Usage(format!(
            "--schema {schema}: a live read-model schema (registered by the runner)"
        )));
    }
    if client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(pg_err)?
        .is_some()
    {
        return Err(ToolError::Usage(format!(
            "--schema {schema}: exists already (`mykey-replay drop --schema {schema}` removes a replay's)"
        )));
    }
    Ok(())
}

/// A usage error unless `schema` exists.
pub async fn check_exists<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
) -> Result<(), ToolError> {
    match client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(pg_err)?
    {
        Some(_) => Ok(()),
        None => Err(ToolError::Usage(format!("no schema named {schema:?}"))),
    }
}

/// Writes `marker` as the schema's comment.
pub async fn mark<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
    marker: &Marker,
) -> Result<(), ToolError> {
    let json = serde_json::to_string(marker).map_err(|e| ToolError::Db(e.to_string()))?;
    // COMMENT takes no bind parameters: a string literal, quotes doubled.
    client
        .batch_execute(&format!(
            "COMMENT ON SCHEMA {schema} IS '{}'",
            json.replace('\'', "''")
        ))
        .await
        .map_err(pg_err)
}

/// The marker of `schema`; a usage error when the schema is missing or not a replay's.
pub async fn marker<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
) -> Result<Marker, ToolError> {
    check_name(schema)?;
    let row = client
        .query_opt(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .map_err(pg_err)?
        .ok_or_else(|| ToolError::Usage(format!("--schema {schema}: no such schema")))?;
    let comment: Option<String> = row.try_get(0).map_err(pg_err)?;
    comment
        .and_then(|c| serde_json::from_str::<Marker>(&c).ok())
        .filter(|m| m.tool == TOOL)
        .ok_or_else(|| {
            ToolError::Usage(format!(
                "--schema {schema}: not a scratch schema made by `mykey-replay replay`"
            ))
        })
}

/// Drops a scratch schema and everything in it.
pub async fn drop_schema<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
) -> Result<(), ToolError> {
    check_name(schema)?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .map_err(pg_err)
}

/// One table of a schema and its row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCount {
    pub table: String,
    pub rows: i64,
}

/// A table name as an SQL identifier (names come from the catalog; quoting keeps any name safe).
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tables of `schema`, by name.
pub async fn tables<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
) -> Result<Vec<String>, ToolError> {
    client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[&schema],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| r.try_get(0).map_err(pg_err))
        .collect()
}

/// Every table of `schema` with its row count.
pub async fn counts<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
) -> Result<Vec<TableCount>, ToolError> {
    let mut out = Vec::new();
    for table in tables(client, schema).await? {
        let rows: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {}.{}", ident(schema), ident(&table)),
                &[],
            )
            .await
            .map_err(pg_err)?
            .try_get(0)
            .map_err(pg_err)?;
        out.push(TableCount { table, rows });
    }
    Ok(out)
}

#[derive(Debug, Clone, Args)]
pub struct DropArgs {
    /// The database holding the scratch schema.
    #[arg(long)]
    pub database_url: String,
    /// The scratch schema a replay made (any other schema is refused).
    #[arg(long)]
    pub schema: String,
}

/// `mykey-replay drop`: removes a replay's scratch schema, nothing else.
pub async fn run_drop(args: &DropArgs, out: &mut dyn Write) -> Result<Outcome, ToolError> {
    check_name(&args.schema)?;
    let client = connect(&args.database_url).await?;
    let m = marker(&client, &args.schema).await?;
    drop_schema(&client, &args.schema).await?;
    emit(
        out,
        format!(
            "dropped {} (replay of {} to position {})",
            args.schema, m.projection, m.position
        ),
    )?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_system_names_are_refused() {
        for bad in [
            "rm_ppids_v1_g1",
            "read_models",
            "public",
            "pg_catalog",
            "information_schema",
            "Replay",
            "1x",
            "a-b",
            "x; DROP TABLE events",
            "",
        ] {
            assert!(
                matches!(check_name(bad), Err(ToolError::Usage(_))),
                "{bad:?}"
            );
        }
        let longest = "a".repeat(mykey_projections::runner::MAX_NAME_LEN);
        let name = default_name(&longest, Utc::now());
        assert!(check_name(&name).is_ok(), "{name}");
        assert!(check_name(&"a".repeat(MAX_SCHEMA_LEN + 1)).is_err());
    }
}
