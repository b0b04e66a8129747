//! Filling a scratch schema the way the runner fills a live one: `exec::create_schema`, the
//! projection's pure `apply`, and the runner's [`Executor`], one pipelined transaction per
//! batch. (The runner's own `Follower` also commits a registry checkpoint with every batch; a
//! scratch schema has no registry row, its position is in its [`Marker`].)

use crate::scratch::{self, pg_err, Marker};
use crate::ToolError;
use mykey_projections::exec::{create_schema, Executor};
use mykey_projections::{Change, Projection, Recorded};
use mykey_schemas::{decode_any, EventEnvelope};
use std::sync::Arc;
use tokio_postgres::Client;

/// Fills the scratch schema: the runner's executor, one transaction per batch.
pub(crate) struct Applier {
    pub(crate) client: Client,
    executor: Executor,
    pub(crate) projection: Arc<dyn Projection>,
    schema: String,
    pub(crate) marker: Marker,
    changes: Vec<Change>,
    /// For each change, the position of the event it came from (error reports).
    owners: Vec<u64>,
    pub(crate) position: u64,
    pub(crate) read: u64,
    pub(crate) applied: u64,
}

impl Applier {
    /// Creates the schema and its tables and marks it as a replay's (incomplete yet).
    pub(crate) async fn create(
        mut client: Client,
        projection: Arc<dyn Projection>,
        schema: String,
        source: &str,
    ) -> Result<Applier, ToolError> {
        let marker = Marker::new(projection.name(), projection.version(), source);
        let tx = client.transaction().await.map_err(pg_err)?;
        create_schema(&tx, &schema, &*projection)
            .await
            .map_err(pg_err)?;
        scratch::mark(&tx, &schema, &marker).await?;
        tx.commit().await.map_err(pg_err)?;
        // Statements are prepared outside the batch transactions and name tables unqualified.
        client
            .batch_execute(&format!("SET search_path TO {schema}"))
            .await
            .map_err(pg_err)?;
        Ok(Applier {
            client,
            executor: Executor::new(),
            projection,
            schema,
            marker,
            changes: Vec::new(),
            owners: Vec::new(),
            position: 0,
            read: 0,
            applied: 0,
        })
    }

    /// Applies consecutive events (the next after `position`) in one transaction.
    pub(crate) async fn apply(&mut self, events: &[EventEnvelope]) -> Result<(), ToolError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        self.changes.clear();
        self.owners.clear();
        self.changes.push(Change::new("BEGIN", vec![]));
        let categories = self.projection.categories();
        let mut applied = 0;
        for (i, envelope) in events.iter().enumerate() {
            if envelope.global_position != self.position + 1 + i as u64 {
                return Err(ToolError::Db(format!(
                    "the source skipped from position {} to {}",
                    self.position + i as u64,
                    envelope.global_position
                )));
            }
            if !categories.contains(&envelope.stream_id.category()) {
                continue;
            }
            let poison = |error: String| {
                ToolError::Apply(format!(
                    "{} cannot apply the event at position {} ({}): {error}",
                    self.projection.name(),
                    envelope.global_position,
                    envelope.event_type
                ))
            };
            let event = decode_any(envelope).map_err(|e| poison(e.to_string()))?;
            self.projection
                .apply(
                    Recorded {
                        envelope,
                        event: &event,
                    },
                    &mut self.changes,
                )
                .map_err(|e| poison(e.to_string()))?;
            applied += 1;
            let owned = self.changes.len() - 1 - self.owners.len();
            self.owners
                .extend(std::iter::repeat_n(envelope.global_position, owned));
        }
        self.changes.push(Change::new("COMMIT", vec![]));
        if let Err(e) = self.executor.run(&self.client, &self.changes).await {
            // The pipeline stopped at the error: COMMIT may not have been sent.
            let _ = self.client.batch_execute("ROLLBACK").await;
            let at = e
                .index
                .checked_sub(1)
                .and_then(|i| self.owners.get(i))
                .map(|p| format!(" at position {p}"))
                .unwrap_or_default();
            return Err(ToolError::Apply(format!(
                "{}{at}: {}",
                self.projection.name(),
                pg_err(e.source)
            )));
        }
        self.position = last.global_position;
        self.read += events.len() as u64;
        self.applied += applied;
        Ok(())
    }

    /// Best effort: a failed replay leaves no half-filled schema behind.
    pub(crate) async fn abandon(&self) {
        let _ = self.client.batch_execute("ROLLBACK").await;
        let _ = scratch::drop_schema(&self.client, &self.schema).await;
    }
}
