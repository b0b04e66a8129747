//! One batch: decode, apply, and commit the read-model changes with the checkpoint.
//!
//! A batch is one transaction sent as one pipeline —
//! `BEGIN`, `set_config('search_path', <schema>, true)` (i.e. `SET LOCAL search_path`, with
//! `synchronous_commit` off), the
//! changes of every event in order, [`ADVANCE_CHECKPOINT`], `COMMIT` — so it costs one round
//! trip, and the read model and its checkpoint commit together or not at all.

use super::registry::{position_param, ADVANCE_CHECKPOINT, CHECKPOINT_MOVED};
use crate::exec::{ExecError, Executor};
use crate::{Change, Param, Projection, Recorded};
use mykey_schemas::{decode_any, EventEnvelope};
use mykey_store::{StoreError, Subscription};
use serde::Serialize;
use std::sync::Arc;
use tokio_postgres::{Client, NoTls};

/// Changes before the projection's own: `BEGIN` and the `search_path`.
const PROLOGUE: usize = 2;

/// Where and why a projection stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The event that could not be applied (the checkpoint stays just before it).
    pub position: u64,
    pub event_type: String,
    pub error: String,
}

/// Why a batch did not commit.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// The projection cannot apply this event: stop there.
    Poison(Failure),
    /// The checkpoint moved under us or the schema was retired: look at the registry again.
    Moved,
    /// The database or the log is unreachable, or a conflict that a retry resolves.
    Transient(String),
}

/// A database error's message and SQLSTATE (the plain `Display` of tokio-postgres hides them).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Opens a connection for the runner (`application_name` says which projection it serves).
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
    role: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = pg.clone();
    config.application_name(format!("mykey-projection-{role}"));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "projection connection closed");
        }
    });
    Ok(client)
}

/// Fills one schema of one projection from its checkpoint.
pub(crate) struct Follower {
    projection: Arc<dyn Projection>,
    pub(crate) client: Client,
    executor: Executor,
    pub(crate) schema: String,
    /// The checkpoint: last position committed into `schema`.
    pub(crate) position: u64,
    changes: Vec<Change>,
    owners: Vec<usize>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("projection", &self.projection.name())
            .field("schema", &self.schema)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// Points the connection's session `search_path` at `schema` too: statements are prepared
    /// outside the batch's transaction and must resolve the projection's tables.
    pub(crate) async fn new(
        client: Client,
        projection: Arc<dyn Projection>,
        schema: String,
        position: u64,
    ) -> Result<Follower, tokio_postgres::Error> {
        client
            .batch_execute(&format!("SET search_path TO {schema}"))
            .await?;
        Ok(Follower {
            projection,
            client,
            executor: Executor::new(),
            schema,
            position,
            changes: Vec::new(),
            owners: Vec::new(),
        })
    }

    pub(crate) fn projection_name(&self) -> &'static str {
        self.projection.name()
    }

    /// Applies `events` (consecutive, starting at `position + 1`). When one cannot be
    /// applied, the events before it are committed on their own first, so the projection
    /// stops exactly before the poison event, with everything earlier applied.
    pub(crate) async fn apply(&mut self, events: &[EventEnvelope]) -> Result<(), BatchError> {
        match self.apply_batch(events).await {
            Err(BatchError::Poison(failure)) => {
                let first = events.first().map_or(0, |e| e.global_position);
                let before = usize::try_from(failure.position.saturating_sub(first)).unwrap_or(0);
                if before > 0 && before < events.len() {
                    self.apply_batch(&events[..before]).await?;
                }
                Err(BatchError::Poison(failure))
            }
            other => other,
        }
    }

    /// Applies `events` (consecutive, starting at `position + 1`) in one transaction.
    async fn apply_batch(&mut self, events: &[EventEnvelope]) -> Result<(), BatchError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        self.changes.clear();
        self.owners.clear();
        self.changes.push(Change::new("BEGIN", vec![]));
        // The commit need not wait for the WAL flush: a read model lost in a database crash
        // loses its checkpoint with it (same transaction) and is re-applied from the log.
        self.changes.push(Change::new(
            "SELECT set_config('search_path', $1, true), \
             set_config('synchronous_commit', 'off', true)",
            vec![Param::Text(self.schema.clone())],
        ));
        let categories = self.projection.categories();
        for (i, envelope) in events.iter().enumerate() {
            if envelope.global_position != self.position + 1 + i as u64 {
                // Not the continuation of this checkpoint (cannot happen with a subscription
                // started at it): start over from the registry rather than skip or repeat.
                return Err(BatchError::Moved);
            }
            if !categories.contains(&envelope.stream_id.category()) {
                continue;
            }
            let poison = |error: String| {
                BatchError::Poison(Failure {
                    position: envelope.global_position,
                    event_type: envelope.event_type.clone(),
                    error,
                })
            };
            let event = decode_any(envelope).map_err(|e| poison(e.to_string()))?;
            let before = self.changes.len();
            self.projection
                .apply(
                    Recorded {
                        envelope,
                        event: &event,
                    },
                    &mut self.changes,
                )
                .map_err(|e| poison(e.to_string()))?;
            let added = self.changes.len() - before;
            self.owners.extend(std::iter::repeat_n(i, added));
        }
        let checkpoint_index = self.changes.len();
        self.changes.push(Change::new(
            ADVANCE_CHECKPOINT,
            vec![
                Param::Text(self.schema.clone()),
                Param::I64(position_param(last.global_position)),
                Param::I64(position_param(self.position)),
            ],
        ));
        self.changes.push(Change::new("COMMIT", vec![]));
        match self.executor.run(&self.client, &self.changes).await {
            Ok(()) => {
                self.position = last.global_position;
                Ok(())
            }
            Err(e) => {
                // The pipeline stopped at the error: COMMIT may not have been sent.
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(self.classify(&e, checkpoint_index, events))
            }
        }
    }

    fn classify(
        &self,
        e: &ExecError,
        checkpoint_index: usize,
        events: &[EventEnvelope],
    ) -> BatchError {
        let Some(db) = e.source.as_db_error() else {
            return BatchError::Transient(describe(&e.source));
        };
        let code = db.code().code();
        if e.index == checkpoint_index && code == CHECKPOINT_MOVED {
            return BatchError::Moved;
        }
        // Serialization failures, deadlocks, operator intervention, lost connections and
        // exhausted resources pass; anything else from a projection's statement is about the
        // event and will fail the same way again.
        let transient = ["40", "57", "08", "53"]
            .iter()
            .any(|class| code.starts_with(class));
        match e.index.checked_sub(PROLOGUE) {
            Some(i) if !transient && e.index < checkpoint_index => {
                let envelope = &events[self.owners[i]];
                BatchError::Poison(Failure {
                    position: envelope.global_position,
                    event_type: envelope.event_type.clone(),
                    error: describe(&e.source),
                })
            }
            _ => BatchError::Transient(describe(&e.source)),
        }
    }
}

/// Waits for the next event, then takes whatever else is already there, up to `max`: under
/// load batches grow (amortising the commit), while a lone event is committed at once.
pub(crate) async fn next_batch(
    subscription: &mut Subscription,
    max: usize,
) -> Result<Vec<EventEnvelope>, BatchError> {
    let first = subscription
        .recv()
        .await
        .ok_or_else(|| BatchError::Transient("the log subscription ended".into()))?;
    let mut events = vec![feed_item(first)?];
    while events.len() < max.max(1) {
        match subscription.try_recv() {
            Ok(item) => match feed_item(item) {
                Ok(e) => events.push(e),
                // Apply what came before the error; the error comes back on resubscribe.
                Err(_) => break,
            },
            Err(_) => break,
        }
    }
    Ok(events)
}

fn feed_item(item: Result<EventEnvelope, StoreError>) -> Result<EventEnvelope, BatchError> {
    item.map_err(|e| match e {
        StoreError::Corrupt { position, reason } => BatchError::Poison(Failure {
            position,
            event_type: String::new(),
            error: format!("the log is unreadable here: {reason}"),
        }),
        other => BatchError::Transient(other.to_string()),
    })
}
