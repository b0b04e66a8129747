//! Running a projection's changes against PostgreSQL: creating its schema and executing the
//! statements `apply` described. The one place SQL from [`Change`]s is executed, so the runner,
//! rebuilds, replays and fixture tests all write rows the same way.

use crate::{Change, Projection};
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

/// Executes `changes` in order on `client` (normally inside the batch's transaction, with
/// `search_path` already set to the projection's schema).
pub async fn run_changes<C: GenericClient + Sync>(
    client: &C,
    changes: &[Change],
) -> Result<(), tokio_postgres::Error> {
    for change in changes {
        let params: Vec<&(dyn ToSql + Sync)> = change
            .params
            .iter()
            .map(|p| p as &(dyn ToSql + Sync))
            .collect();
        client.execute(change.sql, &params).await?;
    }
    Ok(())
}

/// Creates `schema` and the projection's tables in it, and leaves `search_path` pointing at it
/// for the rest of the transaction. `schema` must be a plain identifier (the runner builds it
/// from the projection's name and version).
pub async fn create_schema<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
    projection: &dyn Projection,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET LOCAL search_path TO {schema}"
        ))
        .await?;
    for ddl in projection.migrations() {
        client.batch_execute(ddl).await?;
    }
    Ok(())
}
