//! The projector's loop: collect a batch (bounded in size and in time), apply it to every
//! running projection, then hand its offsets to an asynchronous commit.

use super::apply::{BatchError, Delivered, KafkaFollower, Partition};
use super::context::ProjectorContext;
use super::metrics::{KafkaRunState, ProjectorMetrics};
use super::{message, open_follower, ProjectorError, ProjectorOptions, ProjectorStatus};
use super::{RETRY_MAX, RETRY_MIN};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One projection in the projector: its follower, its topics, whether it stopped.
pub(super) struct Member {
    pub follower: KafkaFollower,
    pub topics: BTreeSet<String>,
    pub failed: bool,
}

pub(super) struct Projector {
    pub pg: tokio_postgres::Config,
    pub consumer: Arc<StreamConsumer<ProjectorContext>>,
    pub followers: Vec<Member>,
    /// Topics whose offsets this process no longer commits: a stopped projection reads them.
    pub frozen: BTreeSet<String>,
    pub options: ProjectorOptions,
    pub metrics: ProjectorMetrics,
    pub status: ProjectorStatus,
    pub stop: watch::Receiver<bool>,
}

/// The messages of one batch: events in message order, each pointing at its partition in
/// `partitions`, and per partition the next offset (what the commit hands to Kafka).
#[derive(Default)]
struct Batch {
    events: Vec<Delivered>,
    partitions: Vec<Partition>,
    next_offsets: Vec<i64>,
}

impl Batch {
    fn push(&mut self, m: &impl Message) -> Result<(), ProjectorError> {
        let envelope = message::decode(m.payload()).map_err(|e| ProjectorError::Message {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            reason: e.to_string(),
        })?;
        // A batch holds a handful of partitions: a scan beats a map.
        let partition = match self
            .partitions
            .iter()
            .position(|(t, p)| *p == m.partition() && t == m.topic())
        {
            Some(i) => i,
            None => {
                self.partitions.push((m.topic().to_owned(), m.partition()));
                self.next_offsets.push(0);
                self.partitions.len() - 1
            }
        };
        if let Some(next) = self.next_offsets.get_mut(partition) {
            *next = (*next).max(m.offset() + 1);
        }
        self.events.push(Delivered::new(envelope, partition));
        Ok(())
    }
}

/// What collecting a batch ended with.
enum Collected {
    Batch(Batch),
    /// A stop was requested.
    Stop,
    /// The consumer reported an error before any message (librdkafka reconnects itself).
    Retry,
}

impl Projector {
    pub async fn run(mut self) -> Result<(), ProjectorError> {
        let result = self.consume().await;
        self.status.running.store(false, Ordering::Relaxed);
        if let Err(e) = &result {
            self.metrics.failed.set(1);
            tracing::error!(error = %e, "Kafka projector stopped");
        }
        result
    }

    async fn consume(&mut self) -> Result<(), ProjectorError> {
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            let batch = match self.collect().await? {
                Collected::Batch(b) => b,
                Collected::Stop => return Ok(()),
                Collected::Retry => {
                    if self.pause(RETRY_MIN).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            let applying = std::time::Instant::now();
            if !self.apply(&batch).await? {
                return Ok(());
            }
            self.metrics
                .apply_seconds
                .observe(applying.elapsed().as_secs_f64());
            self.commit(&batch);
        }
    }

    /// Waits for a first message, then takes more until the batch is full or its window
    /// (counted from the first message) has passed.
    async fn collect(&mut self) -> Result<Collected, ProjectorError> {
        let consumer = self.consumer.clone();
        let mut batch = Batch::default();
        tokio::select! {
            _ = self.stop.changed() => return Ok(Collected::Stop),
            m = consumer.recv() => match m {
                Ok(m) => batch.push(&m)?,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consumer");
                    return Ok(Collected::Retry);
                }
            },
        }
        let closes = tokio::time::Instant::now() + self.options.batch_window;
        while batch.events.len() < self.options.batch_max.max(1) {
            match tokio::time::timeout_at(closes, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(&m)?,
                // An error after the first message: apply what is there; the next
                // receive reports it again if it lasts.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(Collected::Batch(batch))
    }

    /// Applies `batch` to every running projection, retrying what a retry may resolve; a
    /// projection that cannot apply an event stops alone. False when a stop was requested
    /// before it succeeded (the offsets then stay uncommitted).
    async fn apply(&mut self, batch: &Batch) -> Result<bool, ProjectorError> {
        let mut backoff = RETRY_MIN;
        loop {
            let results = futures_util::future::join_all(
                self.followers
                    .iter_mut()
                    .filter(|m| !m.failed)
                    .map(|m| async {
                        (m.follower.apply(&batch.events, &batch.partitions).await, m)
                    }),
            )
            .await;
            let mut transient = None;
            let mut failures = Vec::new();
            let mut advanced = Vec::new();
            let now = chrono::Utc::now();
            for ((done, result), member) in results {
                let name = member.follower.projection.name();
                // What the lanes that committed applied counts even when another lane failed:
                // the batch comes again, and those events are then duplicates.
                self.metrics.applied.inc_by(done.events);
                self.metrics.duplicates.inc_by(done.duplicates);
                if let Some(newest) = done.newest {
                    // Partitions interleave: the highest position seen, not the last.
                    let gauge = self.metrics.position.with_label_values(&[name]);
                    gauge.set(gauge.get().max(i64::try_from(newest.0).unwrap_or(i64::MAX)));
                    let lag = (now - newest.1).num_microseconds().unwrap_or(0);
                    self.metrics
                        .lag_seconds
                        .with_label_values(&[name])
                        .set(lag.max(0) as f64 / 1e6);
                    advanced.push((name, newest.0));
                }
                match result {
                    Ok(()) => {}
                    Err(BatchError::Poison {
                        position,
                        event_type,
                        error,
                    }) => {
                        member.failed = true;
                        failures.push((name, member.topics.clone(), position, event_type, error));
                    }
                    Err(BatchError::Transient(e)) => {
                        transient = Some(format!("{name}: {e}"));
                    }
                }
            }
            for (name, newest) in advanced {
                self.set_status(name, |s| s.position = s.position.max(newest));
            }
            for (name, topics, position, event_type, error) in failures {
                self.stop_projection(name, topics, position, event_type, error);
            }
            let Some(error) = transient else {
                for d in &batch.events {
                    let delay = (now - d.envelope.recorded_at)
                        .num_microseconds()
                        .unwrap_or(0);
                    self.metrics.commit_delay.observe(delay.max(0) as f64 / 1e6);
                }
                return Ok(true);
            };
            tracing::warn!(%error, retry_in = ?backoff, "Kafka projector batch failed");
            if self.pause(backoff).await {
                return Ok(false);
            }
            backoff = (backoff * 2).min(RETRY_MAX);
            self.reconnect().await;
        }
    }

    /// Stops one projection on the event it cannot apply; the others go on. Its topics'
    /// offsets are no longer committed here, so the event and everything after it are
    /// delivered again after a restart or a rebalance.
    fn stop_projection(
        &mut self,
        name: &'static str,
        topics: BTreeSet<String>,
        position: u64,
        event_type: String,
        error: String,
    ) {
        tracing::error!(
            projection = name,
            position,
            event_type = %event_type,
            error = %error,
            "Kafka-mode projection stopped on an event it cannot apply; the others go on"
        );
        self.metrics
            .projection_failed
            .with_label_values(&[name])
            .set(1);
        self.frozen.extend(topics);
        self.set_status(name, |s| {
            s.state = KafkaRunState::Failed {
                failed_at: position,
                event_type,
                error,
            }
        });
    }

    fn set_status(&self, name: &str, change: impl FnOnce(&mut super::KafkaProjectionStatus)) {
        if let Ok(mut all) = self.status.statuses.lock() {
            if let Some(s) = all.iter_mut().find(|s| s.name == name) {
                change(s);
            }
        }
    }

    /// Replaces the followers whose connection was lost.
    async fn reconnect(&mut self) {
        for member in &mut self.followers {
            let follower = &mut member.follower;
            if follower.is_closed() {
                match open_follower(&self.pg, follower.projection.clone(), self.options.lanes).await
                {
                    Ok(f) => *follower = f,
                    Err(e) => tracing::warn!(
                        projection = follower.projection.name(),
                        error = %crate::runner::describe(&e),
                        "cannot reconnect"
                    ),
                }
            }
        }
    }

    /// Hands the batch's offsets (after every running projection committed the batch) to an
    /// asynchronous commit: the next batch does not wait for the broker. A commit that fails
    /// or is lost (e.g. the partitions moved to another member meanwhile; counted and logged
    /// by the context) only means redelivery, which the applied positions turn into skipped
    /// duplicates. Topics a stopped projection reads are left out.
    fn commit(&self, batch: &Batch) {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in batch.partitions.iter().zip(&batch.next_offsets) {
            if self.frozen.contains(topic) {
                continue;
            }
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(error = %e, topic, partition, "cannot list an offset to commit");
            }
        }
        if list.count() == 0 {
            return;
        }
        match self.consumer.commit(&list, CommitMode::Async) {
            Ok(()) => self.metrics.batches.inc(),
            Err(e) => {
                self.metrics.commit_failures.inc();
                tracing::warn!(error = %e, "offsets not committed (redelivery follows)");
            }
        }
    }

    /// Sleeps `d`; true when a stop was requested meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => *self.stop.borrow(),
            _ = self.stop.changed() => true,
        }
    }
}
