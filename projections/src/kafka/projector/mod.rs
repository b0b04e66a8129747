//! The Kafka projector (`mykey-server projector`): the read models that need only each
//! stream's order ([`KafkaMode::PerStream`]) consume the relay's topics as one consumer group.
//!
//! - **Sharing**: every projector process of a deployment joins one group (by default
//!   `<prefix>.projector.<hash of the projections' names and versions>`, so a new version is
//!   a new group that reads the topics from the start into its new schema); Kafka splits the
//!   partitions between them and moves them when one leaves or dies. Every assignment is
//!   logged (`projector assigned`) and counted (`mykey_projector_assigned_partitions`).
//! - **A batch** closes at [`ProjectorOptions::batch_max`] messages or
//!   [`ProjectorOptions::batch_window`] after its first message, whichever comes first, so
//!   an event waits at most the window for company. Each projection applies it in one
//!   transaction of its own schema ([`schema_name`]: the same tables as in PostgreSQL mode,
//!   plus [`APPLIED_TABLE`]), skipping every event whose position is not above its
//!   partition's watermark; the batch's offsets are handed to Kafka (an asynchronous commit) only after
//!   every running projection's transaction committed. A lost or failed offset commit only
//!   means redelivery, which the watermarks turn into skipped duplicates: delivery is
//!   at least once, deduplication makes it effectively once.
//! - **Faults**: a database error that a retry may resolve is retried with back-off (the
//!   projections that committed skip the batch's events as duplicates the next time). An
//!   event a projection cannot apply stops that projection only (log, metric
//!   `mykey_projector_projection_failed`, [`ProjectorHandle::statuses`]); the others go on.
//!   From then on this process commits no offset of the stopped projection's topics, so a
//!   restart (or the member that takes those partitions over) delivers the poison event
//!   again and nothing after it is lost to that projection; the other projections skip the
//!   redelivered events as duplicates. A message that is not a relayed event stops the
//!   whole projector with its offset (not committed, so nothing is lost).

mod apply;
mod context;
mod lane;
mod metrics;
mod run;

pub use apply::{schema_name, APPLIED_TABLE};
pub use context::{Assignment, STATS_INTERVAL_MS};
pub use metrics::{KafkaProjectionStatus, KafkaRunState, ProjectorMetrics};

use super::client::{base_config, check_brokers, ensure_topic};
use super::{message, KafkaSettings, RelayError};
use crate::{KafkaMode, Projection};
use apply::KafkaFollower;
use context::ProjectorContext;
use prometheus::Registry;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Messages per batch at most: large enough that a projector behind (catching up, or under
/// a burst) pays the transaction and fsync per batch rarely; small enough that one batch's
/// apply stays well under the lag target (a few tens of ms on 2 cores).
pub const DEFAULT_BATCH_MAX: usize = 1_000;

/// How long a batch stays open after its first message: the most an event waits for
/// company. Short against the 500 ms lag target, long enough that a steady stream of
/// thousands of events a second becomes batches of tens to hundreds rather than one
/// transaction (and one fsync) per event.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(5);

/// Connections (and concurrent transactions) per projection: a batch's partitions are split
/// between them. Two let PostgreSQL apply on both cores of a small machine; more pay off only
/// with more cores (each is a connection per projection per projector process).
pub const DEFAULT_LANES: usize = 2;

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
    /// A batch closes at this many messages ([`DEFAULT_BATCH_MAX`]) ...
    pub batch_max: usize,
    /// ... or this long after its first message ([`DEFAULT_BATCH_WINDOW`]).
    pub batch_window: Duration,
    /// Connections per projection ([`DEFAULT_LANES`]; at least 1).
    pub lanes: usize,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            group_id: None,
            batch_max: DEFAULT_BATCH_MAX,
            batch_window: DEFAULT_BATCH_WINDOW,
            lanes: DEFAULT_LANES,
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
    #[error("registering projector metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl From<tokio_postgres::Error> for ProjectorError {
    fn from(e: tokio_postgres::Error) -> Self {
        ProjectorError::Database(crate::runner::describe(&e))
    }
}

/// The group every projector process of this code joins by default: a new projection
/// version (or a new layout of the Kafka-mode schemas) is a new group, which reads the topics
/// from their start into its new schema.
pub fn default_group_id(settings: &KafkaSettings, projections: &[Arc<dyn Projection>]) -> String {
    let mut hash = Sha256::new();
    hash.update(apply::LAYOUT.as_bytes());
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

/// What a running projector shows outside its task (the `/readyz` of `mykey-server
/// projector`). Cloning shares it.
#[derive(Debug, Clone)]
pub struct ProjectorStatus {
    statuses: metrics::Statuses,
    assignment: Assignment,
    running: Arc<AtomicBool>,
}

impl ProjectorStatus {
    /// Each projection's position and state.
    pub fn projections(&self) -> Vec<KafkaProjectionStatus> {
        self.statuses.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The partitions this member holds now.
    pub fn assignment(&self) -> BTreeSet<(String, i32)> {
        self.assignment
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// False once the projector stopped (on a message that is not a relayed event, or asked).
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// A running projector. Dropping it aborts it (uncommitted work is redelivered to whoever
/// takes its partitions); [`ProjectorHandle::stop`] stops it at a batch boundary.
#[derive(Debug)]
pub struct ProjectorHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ProjectorError>>>,
    metrics: ProjectorMetrics,
    status: ProjectorStatus,
    group_id: String,
}

impl ProjectorHandle {
    pub fn metrics(&self) -> &ProjectorMetrics {
        &self.metrics
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Positions, states and the assignment, shareable with an HTTP handler.
    pub fn status(&self) -> ProjectorStatus {
        self.status.clone()
    }

    /// Each projection's position and state.
    pub fn statuses(&self) -> Vec<KafkaProjectionStatus> {
        self.status.projections()
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

/// The topics `p` reads.
fn topics_of(settings: &KafkaSettings, p: &dyn Projection) -> BTreeSet<String> {
    p.categories()
        .iter()
        .map(|c| message::topic(&settings.topic_prefix, c))
        .collect()
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
    let mut statuses = Vec::new();
    for p in &projections {
        followers.push(open_follower(&pg, p.clone(), options.lanes).await?);
        metrics.init(p.name());
        statuses.push(KafkaProjectionStatus {
            name: p.name(),
            version: p.version(),
            position: 0,
            state: KafkaRunState::Running,
        });
    }
    let topics_by_projection: Vec<(&'static str, BTreeSet<String>)> = projections
        .iter()
        .map(|p| (p.name(), topics_of(&settings, &**p)))
        .collect();
    let topics: BTreeSet<String> = topics_by_projection
        .iter()
        .flat_map(|(_, t)| t.iter().cloned())
        .collect();
    let admin: AdminClient<DefaultClientContext> = base_config(&settings).create()?;
    for topic in &topics {
        ensure_topic(&admin, topic, &settings).await?;
    }
    let group_id = options
        .group_id
        .clone()
        .unwrap_or_else(|| default_group_id(&settings, &projections));
    let assignment = Assignment::default();
    let context = ProjectorContext {
        metrics: metrics.clone(),
        topics_of: topics_by_projection.clone(),
        assignment: assignment.clone(),
        group: group_id.clone(),
    };
    let consumer: StreamConsumer<ProjectorContext> = base_config(&settings)
        .set("client.id", "mykey-projector")
        .set("group.id", &group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .set("statistics.interval.ms", STATS_INTERVAL_MS)
        .create_with_context(context)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    tracing::info!(
        group = %group_id,
        projections = ?projections.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "Kafka projector consuming"
    );
    let (stop, stop_rx) = watch::channel(false);
    let status = ProjectorStatus {
        statuses: Arc::new(Mutex::new(statuses)),
        assignment,
        running: Arc::new(AtomicBool::new(true)),
    };
    let projector = run::Projector {
        pg,
        consumer: Arc::new(consumer),
        followers: followers
            .into_iter()
            .zip(topics_by_projection)
            .map(|(f, (_, topics))| run::Member {
                follower: f,
                topics,
                failed: false,
            })
            .collect(),
        frozen: BTreeSet::new(),
        options,
        metrics: metrics.clone(),
        status: status.clone(),
        stop: stop_rx,
    };
    Ok(ProjectorHandle {
        stop,
        task: Some(tokio::spawn(projector.run())),
        metrics,
        status,
        group_id,
    })
}

async fn open_follower(
    pg: &tokio_postgres::Config,
    p: Arc<dyn Projection>,
    lanes: usize,
) -> Result<KafkaFollower, tokio_postgres::Error> {
    let mut clients = Vec::new();
    for lane in 0..lanes.max(1) {
        clients.push(crate::runner::connect(pg, &format!("kafka-{}-{lane}", p.name())).await?);
    }
    KafkaFollower::open(clients, p).await
}
