//! One connection of a Kafka-mode projection: the transaction that applies some partitions'
//! events of a batch and records their watermarks (see [`super::apply`] for why they dedupe).

use super::apply::{Applied, BatchError, Delivered, Partition};
use crate::exec::{ExecError, Executor};
use crate::runner::describe;
use crate::{Change, Projection, Recorded};
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// A connection (its `search_path` at the projection's schema) and its prepared statements.
pub(crate) struct Lane {
    client: Client,
    executor: Executor,
    changes: Vec<Change>,
    owners: Vec<usize>,
}

impl Lane {
    pub fn new(client: Client) -> Lane {
        Lane {
            client,
            executor: Executor::new(),
            changes: Vec::new(),
            owners: Vec::new(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Applies `mine` (events of this lane's partitions, in message order; `partitions`: the
    /// batch's list they point into), skipping duplicates, in one transaction with their
    /// partitions' watermarks.
    pub async fn apply(
        &mut self,
        projection: &dyn Projection,
        mine: &[&Delivered],
        partitions: &[Partition],
    ) -> Result<Applied, BatchError> {
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
            // The highest, not the last: a batch interleaves partitions, so a later message
            // can carry a lower position.
            done.newest = done
                .newest
                .max(Some((envelope.global_position, envelope.recorded_at)));
            let poison = |error: String| BatchError::Poison {
                position: envelope.global_position,
                event_type: envelope.event_type.clone(),
                error,
            };
            let event = delivered.event.as_ref().map_err(|e| poison(e.clone()))?;
            let before = self.changes.len();
            projection
                .apply(Recorded { envelope, event }, &mut self.changes)
                .map_err(|e| poison(e.to_string()))?;
            self.owners
                .extend(std::iter::repeat_n(i, self.changes.len() - before));
        }
        if done.events == 0 {
            // Only duplicates: nothing to write (the transaction rolls back on drop).
            return Ok(done);
        }
        if let Err(e) = self.executor.run(&tx, &self.changes).await {
            return Err(classify(&self.owners, &e, mine));
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
