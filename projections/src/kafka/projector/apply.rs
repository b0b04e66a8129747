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

use super::lane::Lane;
use crate::exec::create_schema;
use crate::Projection;
use mykey_schemas::{decode_any, AnyEvent, EventEnvelope};
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

/// One message of a batch: the event (decoded once for every projection that reads it; a
/// payload its schema cannot read is each such projection's poison) and the index of its
/// partition in the batch's list.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub envelope: EventEnvelope,
    pub event: Result<AnyEvent, String>,
    pub partition: usize,
}

impl Delivered {
    pub fn new(envelope: EventEnvelope, partition: usize) -> Delivered {
        let event = decode_any(&envelope).map_err(|e| e.to_string());
        Delivered {
            envelope,
            event,
            partition,
        }
    }
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
    /// The position and append time of the highest event applied.
    pub newest: Option<(u64, chrono::DateTime<chrono::Utc>)>,
}

/// Fills one Kafka-mode schema, over several connections ([`Lane`]s): a batch's partitions
/// are split between them by partition number and applied at once, each lane's share in its own
/// transaction with its partitions' watermarks. A row changes only by one stream's events (what
/// [`crate::KafkaMode::PerStream`] promises) and a stream lives in one partition, so the lanes'
/// transactions touch disjoint rows; a single connection made PostgreSQL's one backend the
/// projector's limit (about 22,000 events/s on 2 cores, docs/BENCHMARKS.md).
pub(crate) struct KafkaFollower {
    pub projection: Arc<dyn Projection>,
    lanes: Vec<Lane>,
    /// Per lane, the events of the batch at hand (reused between batches).
    shares: Vec<Vec<usize>>,
}

impl KafkaFollower {
    /// Creates the schema when it does not exist yet (on the first connection), and points
    /// every connection's `search_path` at it (statements are prepared outside the batch's
    /// transaction). One lane per connection; at least one is needed.
    pub async fn open(
        mut clients: Vec<Client>,
        projection: Arc<dyn Projection>,
    ) -> Result<KafkaFollower, tokio_postgres::Error> {
        let schema = schema_name(&*projection);
        if let Some(first) = clients.first_mut() {
            let tx = first.transaction().await?;
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
        }
        let mut lanes = Vec::with_capacity(clients.len());
        for client in clients {
            client
                .batch_execute(&format!("SET search_path TO {schema}"))
                .await?;
            lanes.push(Lane::new(client));
        }
        Ok(KafkaFollower {
            projection,
            shares: vec![Vec::new(); lanes.len()],
            lanes,
        })
    }

    /// Whether a connection is gone (the projector then opens the follower again).
    pub fn is_closed(&self) -> bool {
        self.lanes.iter().any(Lane::is_closed)
    }

    /// Applies the events of `batch` this projection reads (`partitions`: the batch's list
    /// its events point into), skipping duplicates: each lane its partitions' share, at once.
    /// Returns what the lanes that committed applied, and the failure of any other: a lane
    /// that fails leaves the others' commits in place (their events are duplicates when the
    /// batch comes again); a poison event wins over a transient failure.
    pub async fn apply(
        &mut self,
        batch: &[Delivered],
        partitions: &[Partition],
    ) -> (Applied, Result<(), BatchError>) {
        let categories = self.projection.categories();
        let lanes = self.lanes.len().max(1);
        for share in &mut self.shares {
            share.clear();
        }
        for (i, d) in batch.iter().enumerate() {
            if !categories.contains(&d.envelope.stream_id.category()) {
                continue;
            }
            let number = partitions.get(d.partition).map_or(0, |(_, p)| *p);
            let lane = usize::try_from(number).unwrap_or(0) % lanes;
            if let Some(share) = self.shares.get_mut(lane) {
                share.push(i);
            }
        }
        let projection = &*self.projection;
        let results = futures_util::future::join_all(
            self.lanes
                .iter_mut()
                .zip(&self.shares)
                .filter(|(_, share)| !share.is_empty())
                .map(|(lane, share)| async move {
                    let mine: Vec<&Delivered> =
                        share.iter().filter_map(|i| batch.get(*i)).collect();
                    lane.apply(projection, &mine, partitions).await
                }),
        )
        .await;
        let mut done = Applied::default();
        let mut failure: Option<BatchError> = None;
        for result in results {
            match result {
                Ok(applied) => {
                    done.events += applied.events;
                    done.duplicates += applied.duplicates;
                    done.newest = done.newest.max(applied.newest);
                }
                Err(e @ BatchError::Poison { .. }) => failure = Some(e),
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
            }
        }
        (done, failure.map_or(Ok(()), Err))
    }
}
