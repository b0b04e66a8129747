//! One Kafka-mode projection's side of a batch: its own schema, its applied positions, and
//! the transaction that applies the new events and records them.
//!
//! The schema is `rk_<name>_v<version>` with the projection's own tables (its `migrations`,
//! exactly as in PostgreSQL mode) plus [`APPLIED_TABLE`]: per stream, the global position of
//! the last event applied. A batch is one transaction: lock the batch's streams' existing
//! rows (in stream-id order), skip every event at or below its stream's applied position (a
//! duplicate: the relay re-sent it, or another projector applied it before a rebalance),
//! apply the rest in message order, record the new positions (inserting the rows of new
//! streams; one another projector inserted meanwhile sends the batch back to be retried),
//! commit — with
//! `synchronous_commit` on, since the Kafka offsets are committed right after and a lost
//! transaction would otherwise be a lost event.

use crate::exec::{create_schema, ExecError, Executor};
use crate::runner::describe;
use crate::{Change, Projection, Recorded};
use mykey_schemas::{decode_any, EventEnvelope};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_postgres::Client;

/// Per stream, the last position applied (created in every Kafka-mode schema).
pub const APPLIED_TABLE: &str = "kafka_applied";

const APPLIED_DDL: &str = "CREATE TABLE kafka_applied (
        stream_id text PRIMARY KEY,
        position  bigint NOT NULL
    )";

/// Serialises schema creation between projector processes starting together.
const SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('mykey-kafka-projector-schema'))";

/// The schema a Kafka-mode projection fills: its own, beside the runner's `rm_…` ones.
pub fn schema_name(p: &dyn Projection) -> String {
    format!("rk_{}_v{}", p.name(), p.version())
}

/// Why a projection's batch did not commit.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// The projection cannot apply this event (a retry fails the same way).
    Poison {
        position: u64,
        event_type: String,
        error: String,
    },
    /// The database is unreachable, or a conflict a retry resolves.
    Transient(String),
}

/// What one batch did for one projection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Applied {
    pub events: u64,
    pub duplicates: u64,
    /// The position and append time of the last event applied.
    pub newest: Option<(u64, chrono::DateTime<chrono::Utc>)>,
}

/// Fills one Kafka-mode schema.
pub(crate) struct KafkaFollower {
    pub projection: Arc<dyn Projection>,
    client: Client,
    executor: Executor,
    changes: Vec<Change>,
    owners: Vec<usize>,
}

impl KafkaFollower {
    /// Creates the schema when it does not exist yet, and points the session's `search_path`
    /// at it (statements are prepared outside the batch's transaction).
    pub async fn open(
        mut client: Client,
        projection: Arc<dyn Projection>,
    ) -> Result<KafkaFollower, tokio_postgres::Error> {
        let schema = schema_name(&*projection);
        let tx = client.transaction().await?;
        tx.batch_execute(SCHEMA_LOCK).await?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&schema.as_str()],
            )
            .await?
            .is_some();
        if !exists {
            create_schema(&tx, &schema, &*projection).await?;
            tx.batch_execute(APPLIED_DDL).await?;
        }
        tx.commit().await?;
        client
            .batch_execute(&format!("SET search_path TO {schema}"))
            .await?;
        Ok(KafkaFollower {
            projection,
            client,
            executor: Executor::new(),
            changes: Vec::new(),
            owners: Vec::new(),
        })
    }

    /// Whether the connection is gone (the projector then opens a new one).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Applies the events of `batch` this projection reads, skipping duplicates, in one
    /// transaction with their streams' applied positions.
    pub async fn apply(&mut self, batch: &[EventEnvelope]) -> Result<Applied, BatchError> {
        let categories = self.projection.categories();
        let mine: Vec<&EventEnvelope> = batch
            .iter()
            .filter(|e| categories.contains(&e.stream_id.category()))
            .collect();
        if mine.is_empty() {
            return Ok(Applied::default());
        }
        let mut streams: Vec<String> = mine.iter().map(|e| e.stream_id.to_string()).collect();
        streams.sort_unstable();
        streams.dedup();
        let transient = |e: tokio_postgres::Error| BatchError::Transient(describe(&e));
        let tx = self.client.transaction().await.map_err(transient)?;
        // The streams' rows that exist are locked in one order by every projector: two
        // batches holding the same streams wait for each other instead of both applying. A
        // stream without a row yet is inserted at the end; another projector inserting it
        // meanwhile makes that insert come up short, and the batch is retried (it then sees
        // the row). New streams are the common case, and cost one write instead of an
        // insert, a lock and an update.
        let rows = tx
            .query(
                "SELECT stream_id, position FROM kafka_applied WHERE stream_id = ANY($1) \
                 ORDER BY stream_id FOR UPDATE",
                &[&streams],
            )
            .await
            .map_err(transient)?;
        let mut known: BTreeMap<String, i64> = BTreeMap::new();
        for row in rows {
            let stream: String = row.try_get(0).map_err(transient)?;
            let position: i64 = row.try_get(1).map_err(transient)?;
            known.insert(stream, position);
        }
        let mut applied = known.clone();
        self.changes.clear();
        self.owners.clear();
        let mut done = Applied::default();
        for (i, envelope) in mine.iter().enumerate() {
            let position = i64::try_from(envelope.global_position).unwrap_or(i64::MAX);
            let last = applied.entry(envelope.stream_id.to_string()).or_insert(0);
            if position <= *last {
                done.duplicates += 1;
                continue;
            }
            *last = position;
            done.events += 1;
            done.newest = Some((envelope.global_position, envelope.recorded_at));
            let poison = |error: String| BatchError::Poison {
                position: envelope.global_position,
                event_type: envelope.event_type.clone(),
                error,
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
            self.owners
                .extend(std::iter::repeat_n(i, self.changes.len() - before));
        }
        if done.events == 0 {
            // Only duplicates: nothing to write (the transaction rolls back on drop).
            return Ok(done);
        }
        if let Err(e) = self.executor.run(&tx, &self.changes).await {
            return Err(classify(&self.owners, &e, &mine));
        }
        let (mut new_ids, mut new_positions) = (Vec::new(), Vec::new());
        let (mut ids, mut positions) = (Vec::new(), Vec::new());
        for (stream, position) in applied {
            match known.get(&stream) {
                None => {
                    new_ids.push(stream);
                    new_positions.push(position);
                }
                Some(before) if *before < position => {
                    ids.push(stream);
                    positions.push(position);
                }
                Some(_) => {}
            }
        }
        if !new_ids.is_empty() {
            let inserted = tx
                .execute(
                    "INSERT INTO kafka_applied (stream_id, position) \
                     SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING",
                    &[&new_ids, &new_positions],
                )
                .await
                .map_err(transient)?;
            if inserted != new_ids.len() as u64 {
                // Rolled back on drop: nothing of this batch is kept.
                return Err(BatchError::Transient(
                    "another projector applied some of the batch's new streams meanwhile".into(),
                ));
            }
        }
        if !ids.is_empty() {
            tx.execute(
                "UPDATE kafka_applied a SET position = u.p \
                 FROM unnest($1::text[], $2::bigint[]) u(s, p) \
                 WHERE a.stream_id = u.s AND a.position < u.p",
                &[&ids, &positions],
            )
            .await
            .map_err(transient)?;
        }
        tx.commit().await.map_err(transient)?;
        Ok(done)
    }
}

/// A statement's error: the event's fault, or one a retry may resolve. `owners[i]` is the
/// index in `mine` of the event whose change `i` is.
fn classify(owners: &[usize], e: &ExecError, mine: &[&EventEnvelope]) -> BatchError {
    let Some(db) = e.source.as_db_error() else {
        return BatchError::Transient(describe(&e.source));
    };
    let code = db.code().code();
    // Serialization failures, deadlocks, operator intervention, lost connections and
    // exhausted resources pass; anything else is about the event.
    if ["40", "57", "08", "53"].iter().any(|c| code.starts_with(c)) {
        return BatchError::Transient(describe(&e.source));
    }
    match owners.get(e.index).and_then(|i| mine.get(*i)) {
        Some(envelope) => BatchError::Poison {
            position: envelope.global_position,
            event_type: envelope.event_type.clone(),
            error: describe(&e.source),
        },
        None => BatchError::Transient(describe(&e.source)),
    }
}
