//! One Kafka-mode projection's side of a batch: its own schema, its watermarks, and the
//! transaction that applies the new events and records them.
//!
//! The schema is [`schema_name`] with the projection's own tables (its `migrations`, exactly as
//! in PostgreSQL mode) plus [`APPLIED_TABLE`]: per topic partition, the global position of the
//! last event applied from it (its watermark). Within one partition, positions only grow except
//! where the relay re-sends a tail it had not seen acknowledged (see [`super::super::message`];
//! the producer's gapless guarantee makes each relay term's messages in a partition a gap-free
//! prefix of what it sent), so an event at or below its partition's watermark has been applied
//! before: a duplicate. Per partition, not per stream: a batch locks and writes a handful of
//! rows whatever its size, where per-stream rows cost an index insert per new stream.
//!
//! A batch is one transaction: lock the batch's partitions' existing rows (in one order),
//! skip every event at or below its partition's watermark (the relay re-sent it, or another
//! projector applied it before a rebalance), apply the rest in message order, record the new
//! watermarks (inserting the rows of new partitions; one another projector inserted meanwhile
//! sends the batch back to be retried), commit — with `synchronous_commit` on, since the Kafka
//! offsets are committed right after and a lost transaction would otherwise be a lost event.

use crate::exec::{create_schema, ExecError, Executor};
use crate::runner::describe;
use crate::{Change, Projection, Recorded};
use mykey_schemas::{decode_any, EventEnvelope};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_postgres::Client;

/// Per topic partition, the last position applied (created in every Kafka-mode schema).
pub const APPLIED_TABLE: &str = "kafka_applied";

const APPLIED_DDL: &str = "CREATE TABLE kafka_applied (
        topic     text    NOT NULL,
        partition integer NOT NULL,
        position  bigint  NOT NULL,
        PRIMARY KEY (topic, partition)
    )";

/// Serialises schema creation between projector processes starting together.
const SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('mykey-kafka-projector-schema'))";

/// The layout of the Kafka-mode schemas, in their names and in the default consumer group:
/// a new layout is a new schema *and* a new group, so it is filled from the topics' start
/// (never a fresh schema behind a group's old offsets). 2: per-partition watermarks.
pub(crate) const LAYOUT: &str = "rk2";

/// The schema a Kafka-mode projection fills: its own, beside the runner's `rm_…` ones.
pub fn schema_name(p: &dyn Projection) -> String {
    format!("{LAYOUT}_{}_v{}", p.name(), p.version())
}

/// A topic partition, as the batch numbers them.
pub(crate) type Partition = (String, i32);

/// One message of a batch: the event and the index of its partition in the batch's list.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub envelope: EventEnvelope,
    pub partition: usize,
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

    /// Applies the events of `batch` this projection reads (`partitions`: the batch's list
    /// its events point into), skipping duplicates, in one transaction with their partitions'
    /// watermarks.
    pub async fn apply(
        &mut self,
        batch: &[Delivered],
        partitions: &[Partition],
    ) -> Result<Applied, BatchError> {
        let categories = self.projection.categories();
        let mine: Vec<&Delivered> = batch
            .iter()
            .filter(|d| categories.contains(&d.envelope.stream_id.category()))
            .collect();
        if mine.is_empty() {
            return Ok(Applied::default());
        }
        let mut held: Vec<usize> = mine.iter().map(|d| d.partition).collect();
        held.sort_unstable();
        held.dedup();
        let (topics, numbers): (Vec<&str>, Vec<i32>) = held
            .iter()
            .filter_map(|i| partitions.get(*i))
            .map(|(t, p)| (t.as_str(), *p))
            .unzip();
        let transient = |e: tokio_postgres::Error| BatchError::Transient(describe(&e));
        let tx = self.client.transaction().await.map_err(transient)?;
        // The partitions' rows that exist are locked in one order by every projector: two
        // batches of the same partitions (a rebalance moved them) wait for each other instead
        // of both applying. A partition without a row yet is inserted at the end; another
        // projector inserting it meanwhile makes that insert come up short, and the batch is
        // retried (it then sees the row).
        let rows = tx
            .query(
                "SELECT a.topic, a.partition, a.position FROM kafka_applied a \
                 JOIN unnest($1::text[], $2::integer[]) u(t, p) \
                 ON a.topic = u.t AND a.partition = u.p \
                 ORDER BY a.topic, a.partition FOR UPDATE OF a",
                &[&topics, &numbers],
            )
            .await
            .map_err(transient)?;
        let mut known: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for row in rows {
            let topic: String = row.try_get(0).map_err(transient)?;
            let partition: i32 = row.try_get(1).map_err(transient)?;
            let position: i64 = row.try_get(2).map_err(transient)?;
            known.insert((topic, partition), position);
        }
        // Indexed like `partitions`: the batch's watermarks as it applies.
        let mut watermark: Vec<i64> = partitions
            .iter()
            .map(|k| known.get(k).copied().unwrap_or(0))
            .collect();
        self.changes.clear();
        self.owners.clear();
        let mut done = Applied::default();
        for (i, delivered) in mine.iter().enumerate() {
            let envelope = &delivered.envelope;
            let position = i64::try_from(envelope.global_position).unwrap_or(i64::MAX);
            let Some(last) = watermark.get_mut(delivered.partition) else {
                return Err(BatchError::Transient(format!(
                    "position {position}: no partition {} in the batch",
                    delivered.partition
                )));
            };
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
        let (mut new, mut moved) = (Watermarks::default(), Watermarks::default());
        for i in held {
            let (Some(key), Some(position)) = (partitions.get(i), watermark.get(i)) else {
                continue;
            };
            match known.get(key) {
                None => new.push(key, *position),
                Some(before) if before < position => moved.push(key, *position),
                Some(_) => {}
            }
        }
        if !new.topics.is_empty() {
            let inserted = tx
                .execute(
                    "INSERT INTO kafka_applied (topic, partition, position) \
                     SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[]) \
                     ON CONFLICT DO NOTHING",
                    &[&new.topics, &new.partitions, &new.positions],
                )
                .await
                .map_err(transient)?;
            if inserted != new.topics.len() as u64 {
                // Rolled back on drop: nothing of this batch is kept.
                return Err(BatchError::Transient(
                    "another projector started some of the batch's partitions meanwhile".into(),
                ));
            }
        }
        if !moved.topics.is_empty() {
            tx.execute(
                "UPDATE kafka_applied a SET position = u.w \
                 FROM unnest($1::text[], $2::integer[], $3::bigint[]) u(t, p, w) \
                 WHERE a.topic = u.t AND a.partition = u.p AND a.position < u.w",
                &[&moved.topics, &moved.partitions, &moved.positions],
            )
            .await
            .map_err(transient)?;
        }
        tx.commit().await.map_err(transient)?;
        Ok(done)
    }
}

/// Watermarks to write, as the statements' parallel arrays.
#[derive(Default)]
struct Watermarks<'a> {
    topics: Vec<&'a str>,
    partitions: Vec<i32>,
    positions: Vec<i64>,
}

impl<'a> Watermarks<'a> {
    fn push(&mut self, (topic, partition): &'a Partition, position: i64) {
        self.topics.push(topic);
        self.partitions.push(*partition);
        self.positions.push(position);
    }
}

/// A statement's error: the event's fault, or one a retry may resolve. `owners[i]` is the
/// index in `mine` of the event whose change `i` is.
fn classify(owners: &[usize], e: &ExecError, mine: &[&Delivered]) -> BatchError {
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
        Some(Delivered { envelope, .. }) => BatchError::Poison {
            position: envelope.global_position,
            event_type: envelope.event_type.clone(),
            error: describe(&e.source),
        },
        None => BatchError::Transient(describe(&e.source)),
    }
}
