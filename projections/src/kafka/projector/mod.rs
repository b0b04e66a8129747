//! The Kafka projector (`mykey-server projector`): the read models that need only each
//! stream's order ([`KafkaMode::PerStream`]) consume the relay's topics as one consumer group.
//!
//! - **Sharing**: every projector process of a deployment joins one group (by default
//!   `<prefix>.projector.<hash of the projections' names and versions>`, so a new version is
//!   a new group that reads the topics from the start into its new schema); Kafka splits the
//!   partitions between them and moves them when one leaves or dies.
//! - **A batch** is what the consumer has ready (up to [`ProjectorOptions::batch_max`]
//!   messages). Each projection applies it in one transaction of its own schema
//!   ([`schema_name`]: the same tables as in PostgreSQL mode, plus [`APPLIED_TABLE`]),
//!   skipping every event whose position is not above its stream's applied one; the batch's
//!   offsets are committed to Kafka only after every projection's transaction committed.
//!   Delivery is at least once; deduplication makes it effectively once.
//! - **Faults**: a database error that a retry may resolve is retried with back-off (the
//!   projections that committed skip the batch's events as duplicates the next time); an
//!   event a projection cannot apply, or a message that is not a relayed event, stops the
//!   projector with the position (offsets stay uncommitted, so nothing is lost).

mod apply;

pub use apply::{schema_name, APPLIED_TABLE};

use super::client::{base_config, check_brokers, ensure_topic};
use super::{message, KafkaSettings, RelayError};
use crate::{KafkaMode, Projection};
use apply::{BatchError, KafkaFollower};
use futures_util::FutureExt;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Messages per batch at most.
pub const DEFAULT_BATCH_MAX: usize = 2_000;

/// The consumer's longest fetch wait (librdkafka's default of 500 ms would be all lag).
const FETCH_WAIT_MS: &str = "10";

/// Back-off after a failed batch: doubles from the first to the second.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// Tuning of the projector.
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// The consumer group; `None`: [`default_group_id`].
    pub group_id: Option<String>,
    pub batch_max: usize,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            group_id: None,
            batch_max: DEFAULT_BATCH_MAX,
        }
    }
}

/// Why the projector cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("none of the projections can run from Kafka (all need the global order)")]
    NothingToRun,
    #[error(transparent)]
    Broker(#[from] RelayError),
    #[error("Kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("read-model database: {0}")]
    Database(String),
    #[error("{topic}[{partition}] offset {offset} is not a relayed event: {reason}")]
    Message {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("projection {projection} stopped at position {position} ({event_type}): {error}")]
    Failed {
        projection: &'static str,
        position: u64,
        event_type: String,
        error: String,
    },
    #[error("registering projector metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl From<tokio_postgres::Error> for ProjectorError {
    fn from(e: tokio_postgres::Error) -> Self {
        ProjectorError::Database(crate::runner::describe(&e))
    }
}

/// The projector's collectors. Cloning shares them.
#[derive(Debug, Clone)]
pub struct ProjectorMetrics {
    /// `mykey_projector_events_total`: events applied (summed over the projections).
    pub applied: IntCounter,
    /// `mykey_projector_duplicates_total`: events skipped as already applied.
    pub duplicates: IntCounter,
    /// `mykey_projector_batches_total`: batches whose offsets were committed.
    pub batches: IntCounter,
    /// `mykey_projector_commit_delay_seconds`: append (`recorded_at`) to committed in every
    /// Kafka-mode schema, per event.
    pub commit_delay: Histogram,
    /// `mykey_projector_failed`: 1 once the projector stopped on an event or message.
    pub failed: IntGauge,
}

impl ProjectorMetrics {
    pub fn register(registry: &Registry) -> Result<ProjectorMetrics, prometheus::Error> {
        let m = ProjectorMetrics {
            applied: IntCounter::new(
                "mykey_projector_events_total",
                "Events the Kafka projector applied, summed over its projections",
            )?,
            duplicates: IntCounter::new(
                "mykey_projector_duplicates_total",
                "Events the Kafka projector skipped as already applied, summed over projections",
            )?,
            batches: IntCounter::new(
                "mykey_projector_batches_total",
                "Batches applied by the Kafka projector whose offsets it then committed",
            )?,
            commit_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "mykey_projector_commit_delay_seconds",
                    "Append to committed in every Kafka-mode read model, per event",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
            failed: IntGauge::new(
                "mykey_projector_failed",
                "1 when the Kafka projector stopped on an event it cannot apply",
            )?,
        };
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.commit_delay.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        Ok(m)
    }
}

/// The group every projector process of this code joins by default: a new projection
/// version is a new group, which reads the topics from their start into its new schema.
pub fn default_group_id(settings: &KafkaSettings, projections: &[Arc<dyn Projection>]) -> String {
    let mut hash = Sha256::new();
    for p in projections {
        hash.update(format!("{}:{};", p.name(), p.version()).as_bytes());
    }
    let digest = hex::encode(hash.finalize());
    format!("{}.projector.{}", settings.topic_prefix, &digest[..12])
}

/// The projections of `all` that may run from Kafka.
pub fn kafka_projections(all: &[Arc<dyn Projection>]) -> Vec<Arc<dyn Projection>> {
    all.iter()
        .filter(|p| p.kafka_mode() == KafkaMode::PerStream)
        .cloned()
        .collect()
}

/// A running projector. Dropping it aborts it (uncommitted work is redelivered to whoever
/// takes its partitions); [`ProjectorHandle::stop`] stops it at a batch boundary.
#[derive(Debug)]
pub struct ProjectorHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ProjectorError>>>,
    metrics: ProjectorMetrics,
    group_id: String,
}

impl ProjectorHandle {
    pub fn metrics(&self) -> &ProjectorMetrics {
        &self.metrics
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Stops at the next batch boundary; the error that stopped it earlier, if any.
    pub async fn stop(mut self) -> Result<(), ProjectorError> {
        self.stop.send_replace(true);
        self.join().await
    }

    /// Waits until the projector stops by itself (on an error).
    pub async fn join(&mut self) -> Result<(), ProjectorError> {
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| ProjectorError::Database(format!("the projector task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for ProjectorHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Checks the brokers, creates the Kafka-mode schemas and topics that are missing, joins the
/// consumer group and starts consuming as a task. Only the projections of `projections` whose
/// [`Projection::kafka_mode`] is per-stream run; `pg` is the read models' database.
pub async fn start(
    pg: tokio_postgres::Config,
    settings: KafkaSettings,
    projections: &[Arc<dyn Projection>],
    options: ProjectorOptions,
    registry: &Registry,
) -> Result<ProjectorHandle, ProjectorError> {
    let projections = kafka_projections(projections);
    if projections.is_empty() {
        return Err(ProjectorError::NothingToRun);
    }
    check_brokers(&settings).await?;
    let metrics = ProjectorMetrics::register(registry)?;
    let mut followers = Vec::new();
    for p in &projections {
        followers.push(open_follower(&pg, p.clone()).await?);
    }
    let topics: BTreeSet<String> = projections
        .iter()
        .flat_map(|p| p.categories().iter())
        .map(|c| message::topic(&settings.topic_prefix, c))
        .collect();
    let admin: AdminClient<DefaultClientContext> = base_config(&settings).create()?;
    for topic in &topics {
        ensure_topic(&admin, topic, &settings).await?;
    }
    let group_id = options
        .group_id
        .clone()
        .unwrap_or_else(|| default_group_id(&settings, &projections));
    let consumer: StreamConsumer = base_config(&settings)
        .set("client.id", "mykey-projector")
        .set("group.id", &group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    tracing::info!(
        group = %group_id,
        projections = ?projections.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "Kafka projector consuming"
    );
    let (stop, stop_rx) = watch::channel(false);
    let projector = Projector {
        pg,
        consumer: Arc::new(consumer),
        followers,
        options,
        metrics: metrics.clone(),
        stop: stop_rx,
    };
    Ok(ProjectorHandle {
        stop,
        task: Some(tokio::spawn(projector.run())),
        metrics,
        group_id,
    })
}

/// `mykey-server projector`: every Kafka-mode read model of `models::all()`, until
/// `shutdown` completes or the projector stops on an error.
pub async fn run_standalone(
    pg: tokio_postgres::Config,
    settings: KafkaSettings,
    options: ProjectorOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ProjectorError> {
    let registry = Registry::new();
    let mut handle = start(pg, settings, &crate::models::all(), options, &registry).await?;
    tokio::select! {
        _ = shutdown => handle.stop().await,
        r = handle.join() => r,
    }
}

async fn open_follower(
    pg: &tokio_postgres::Config,
    p: Arc<dyn Projection>,
) -> Result<KafkaFollower, tokio_postgres::Error> {
    let client = crate::runner::connect(pg, &format!("kafka-{}", p.name())).await?;
    KafkaFollower::open(client, p).await
}

struct Projector {
    pg: tokio_postgres::Config,
    consumer: Arc<StreamConsumer>,
    followers: Vec<KafkaFollower>,
    options: ProjectorOptions,
    metrics: ProjectorMetrics,
    stop: watch::Receiver<bool>,
}

/// The messages of one batch: events in message order, and the next offset per partition.
#[derive(Default)]
struct Batch {
    events: Vec<mykey_schemas::EventEnvelope>,
    offsets: BTreeMap<(String, i32), i64>,
}

impl Batch {
    fn push(&mut self, m: &impl Message) -> Result<(), ProjectorError> {
        let event = message::decode(m.payload()).map_err(|e| ProjectorError::Message {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            reason: e.to_string(),
        })?;
        self.events.push(event);
        let next = self
            .offsets
            .entry((m.topic().to_owned(), m.partition()))
            .or_insert(0);
        *next = (*next).max(m.offset() + 1);
        Ok(())
    }
}

impl Projector {
    async fn run(mut self) -> Result<(), ProjectorError> {
        let result = self.consume().await;
        if result.is_err() {
            self.metrics.failed.set(1);
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "Kafka projector stopped");
        }
        result
    }

    async fn consume(&mut self) -> Result<(), ProjectorError> {
        let consumer = self.consumer.clone();
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            let mut batch = Batch::default();
            tokio::select! {
                _ = self.stop.changed() => return Ok(()),
                m = consumer.recv() => match m {
                    Ok(m) => batch.push(&m)?,
                    Err(e) => {
                        // Broker trouble: librdkafka reconnects by itself.
                        tracing::warn!(error = %e, "Kafka consumer");
                        if self.pause(RETRY_MIN).await {
                            return Ok(());
                        }
                        continue;
                    }
                },
            }
            while batch.events.len() < self.options.batch_max.max(1) {
                match consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(&m)?,
                    _ => break,
                }
            }
            if !self.apply(&batch).await? {
                return Ok(());
            }
            self.commit(&batch).await;
        }
    }

    /// Applies `batch` to every projection, retrying what a retry may resolve. False when a
    /// stop was requested before it succeeded (the offsets then stay uncommitted).
    async fn apply(&mut self, batch: &Batch) -> Result<bool, ProjectorError> {
        let mut backoff = RETRY_MIN;
        loop {
            let results = futures_util::future::join_all(
                self.followers.iter_mut().map(|f| f.apply(&batch.events)),
            )
            .await;
            let mut transient = None;
            for (follower, result) in self.followers.iter().zip(results) {
                match result {
                    Ok(done) => {
                        self.metrics.applied.inc_by(done.events);
                        self.metrics.duplicates.inc_by(done.duplicates);
                    }
                    Err(BatchError::Poison {
                        position,
                        event_type,
                        error,
                    }) => {
                        return Err(ProjectorError::Failed {
                            projection: follower.projection.name(),
                            position,
                            event_type,
                            error,
                        })
                    }
                    Err(BatchError::Transient(e)) => {
                        transient = Some(format!("{}: {e}", follower.projection.name()));
                    }
                }
            }
            let Some(error) = transient else {
                let now = chrono::Utc::now();
                for e in &batch.events {
                    let delay = (now - e.recorded_at).num_microseconds().unwrap_or(0);
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

    /// Replaces the followers whose connection was lost.
    async fn reconnect(&mut self) {
        for follower in &mut self.followers {
            if follower.is_closed() {
                match open_follower(&self.pg, follower.projection.clone()).await {
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

    /// Commits the batch's offsets (after every projection committed the batch). A failure
    /// (e.g. the partitions moved to another member meanwhile) only means redelivery, which
    /// the applied positions turn into skipped duplicates.
    async fn commit(&self, batch: &Batch) {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &batch.offsets {
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(error = %e, topic, partition, "cannot list an offset to commit");
            }
        }
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) => self.metrics.batches.inc(),
            Ok(Err(e)) => tracing::warn!(error = %e, "offsets not committed (redelivery follows)"),
            Err(e) => tracing::warn!(error = %e, "the offset commit task failed"),
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
