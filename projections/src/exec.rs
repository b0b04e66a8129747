//! Running a projection's changes against PostgreSQL: creating its schema and executing the
//! statements `apply` described. The one place SQL from [`Change`]s is executed, so the runner,
//! rebuilds, replays and fixture tests all write rows the same way.
//!
//! Statements are prepared once per connection and then **pipelined**: tokio-postgres sends a
//! request when its future is first polled, and the futures are first polled in order, so
//! PostgreSQL receives (and runs) them in order while the client waits for one round trip per
//! window of [`PIPELINE_DEPTH`] statements instead of one per statement.

use crate::{Change, Projection};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Statement};

/// Statements in flight at once on one connection: enough to hide the round trip, bounded so
/// a huge batch does not queue thousands of requests in the client.
pub const PIPELINE_DEPTH: usize = 256;

/// The statement at `index` (in the order given) failed; the ones after it did not run.
#[derive(Debug, thiserror::Error)]
#[error("statement {index} failed: {source}")]
pub struct ExecError {
    pub index: usize,
    #[source]
    pub source: tokio_postgres::Error,
}

/// Prepared statements of one connection, by SQL text. Statements name tables unqualified, so
/// a cache belongs to one connection whose `search_path` names the projection's schema when
/// they are prepared; [`Executor::clear`] it when that changes.
#[derive(Debug, Default)]
pub struct Executor {
    prepared: HashMap<&'static str, Statement>,
}

impl Executor {
    pub fn new() -> Executor {
        Executor::default()
    }

    /// Forgets every prepared statement (after the connection's `search_path` changed).
    pub fn clear(&mut self) {
        self.prepared.clear();
    }

    /// Executes `changes` in order, pipelined. On error, reports the first failing statement;
    /// inside a transaction, the caller rolls back (later statements were not all sent).
    pub async fn run<C: GenericClient + Sync>(
        &mut self,
        client: &C,
        changes: &[Change],
    ) -> Result<(), ExecError> {
        let mut statements = Vec::with_capacity(changes.len());
        for (index, change) in changes.iter().enumerate() {
            let statement = match self.prepared.get(change.sql) {
                Some(s) => s.clone(),
                None => {
                    let s = client
                        .prepare(change.sql)
                        .await
                        .map_err(|source| ExecError { index, source })?;
                    self.prepared.insert(change.sql, s.clone());
                    s
                }
            };
            statements.push(statement);
        }
        // Each new future is polled once, in order, before the oldest is awaited: that first
        // poll is what sends the request, so PostgreSQL receives the statements in order.
        let mut in_flight = FuturesOrdered::new();
        let mut pending = changes.iter().zip(statements).enumerate();
        loop {
            while in_flight.len() < PIPELINE_DEPTH {
                let Some((index, (change, statement))) = pending.next() else {
                    break;
                };
                in_flight.push_back(execute_one(client, statement, &change.params, index));
            }
            match in_flight.next().await {
                Some(result) => result?,
                None => break,
            }
        }
        Ok(())
    }
}

async fn execute_one<C: GenericClient + Sync>(
    client: &C,
    statement: Statement,
    params: &[crate::Param],
    index: usize,
) -> Result<(), ExecError> {
    let params: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    client
        .execute(&statement, &params)
        .await
        .map(drop)
        .map_err(|source| ExecError { index, source })
}

/// Executes `changes` in order on `client` (normally inside the batch's transaction, with
/// `search_path` already set to the projection's schema), pipelined.
pub async fn run_changes<C: GenericClient + Sync>(
    client: &C,
    changes: &[Change],
) -> Result<(), tokio_postgres::Error> {
    Executor::new()
        .run(client, changes)
        .await
        .map_err(|e| e.source)
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
