//! The projection runner: one task per projection follows the log from its checkpoint and
//! commits each batch's read-model changes together with the checkpoint.
//!
//! - **Schemas.** Each projection lives in its own PostgreSQL schema,
//!   `rm_<name>_v<version>_g<generation>`, created by its own `migrations`. The registry
//!   (`read_models`, [`registry`]) records every schema's checkpoint and which one serves.
//! - **Batches** ([`follow`]): woken by the log's subscription; a batch is what is ready, up to
//!   [`RunnerOptions::batch_max`] events, one transaction, one round trip.
//! - **Failure isolation.** A projection that cannot apply an event (decode error, `ApplyError`,
//!   SQL error) stops at that position and says so ([`ProjectionStatus`], metric
//!   `mykey_projection_failed`); the other tasks go on.
//! - **Zero-downtime rebuild.** When the serving schema has another version than the code, the
//!   task builds the code's version from position 1 in a fresh schema while the old one keeps
//!   serving, switches readers in one transaction once caught up, and drops the old schema
//!   after [`RunnerOptions::retire_grace`]. [`rebuild`] does the same by hand.

pub mod cli;
mod follow;
pub mod metrics;
pub mod rebuild;
pub mod registry;
mod task;

pub use follow::Failure;
/// For the Kafka projector: the same connections and error descriptions as the runner's.
pub(crate) use follow::{connect, describe};
pub use rebuild::{rebuild, RebuildProgress, RebuildReport};

use crate::Projection;
use metrics::RunnerMetrics;
use mykey_store::EventStore;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events per batch (one transaction) at most.
pub const DEFAULT_BATCH_MAX: usize = 2_000;
/// How long a retired schema stays after a switch, for readers that resolved it just before.
pub const DEFAULT_RETIRE_GRACE: Duration = Duration::from_secs(10);
/// How often the registry and the log's head are read (switches by other processes, lag).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between retries after the database or the log was unreachable.
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// A projection name is part of a schema name (at most 63 bytes with its prefix and suffix).
pub const MAX_NAME_LEN: usize = 40;

/// Tuning of the runner.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub batch_max: usize,
    pub retire_grace: Duration,
    pub poll_interval: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            batch_max: DEFAULT_BATCH_MAX,
            retire_grace: DEFAULT_RETIRE_GRACE,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("projection name {0:?} must be [a-z][a-z0-9_]* and at most {MAX_NAME_LEN} bytes")]
    BadName(String),
    #[error("projection {0} is registered twice")]
    Duplicate(String),
    #[error("no projection named {0}")]
    Unknown(String),
    #[error("read-model database: {0}")]
    Db(String),
    #[error("event log: {0}")]
    Store(#[from] mykey_store::StoreError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("projection stopped at position {} ({}): {}", .0.position, .0.event_type, .0.error)]
    Failed(Failure),
    #[error("another rebuild switched {0} first; this one was abandoned")]
    Superseded(String),
}

impl From<tokio_postgres::Error> for RunnerError {
    fn from(e: tokio_postgres::Error) -> Self {
        RunnerError::Db(follow::describe(&e))
    }
}

/// Checks that `name` can be part of a schema name.
pub fn check_name(name: &str) -> Result<(), RunnerError> {
    let mut chars = name.chars();
    let ok = name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(RunnerError::BadName(name.to_owned()))
    }
}

/// What readers see of one projection: its serving schema and that schema's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Serving {
    pub schema: Option<Arc<str>>,
    pub position: u64,
    /// Set when the projection stopped on the event at this position.
    pub failed_at: Option<u64>,
}

/// What a projection's task is doing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    Starting,
    /// Following the log into the serving schema.
    Following,
    /// Another process runs this projection; this one shows its progress and takes over when
    /// that one stops.
    Standby,
    /// Building `schema` (this code's version) while the old schema serves.
    Rebuilding {
        schema: String,
        position: u64,
    },
    /// The database or the log is unreachable; retrying.
    Retrying {
        error: String,
    },
    /// Stopped on an event it cannot apply; the others go on.
    Failed(Failure),
    Stopped,
}

/// One projection, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub version: u32,
    pub schema: Option<String>,
    /// The serving schema's checkpoint.
    pub position: u64,
    /// Events between the log's head and the position of the schema being filled.
    pub lag_events: u64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub lag_seconds: f64,
    #[serde(flatten)]
    pub state: RunState,
}

/// Per projection, shared by its task, the poller and readers.
struct Slot {
    projection: Arc<dyn Projection>,
    serving: watch::Sender<Serving>,
    state: Mutex<RunState>,
    /// Checkpoint of the schema being filled (the serving one, or the one being rebuilt).
    filled: std::sync::atomic::AtomicU64,
    lag: Mutex<(u64, f64)>,
    metrics: metrics::ProjectionMetrics,
}

impl Slot {
    fn set_state(&self, state: RunState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

/// Why [`Projections::wait_for`] returned without reaching the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("no projection named {0}")]
    Unknown(String),
    #[error("projection still at {reached} after the timeout")]
    Timeout { reached: u64 },
    #[error("projection stopped on the event at {failed_at}")]
    Failed { failed_at: u64 },
    #[error("the runner has stopped")]
    Stopped,
}

struct Inner {
    slots: BTreeMap<&'static str, Arc<Slot>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The running projections: status, serving schemas and read-your-writes for readers.
/// Cloning shares them.
#[derive(Clone)]
pub struct Projections {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections")
            .field("projections", &self.inner.slots.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Projections {
    /// Creates the registry if needed and starts one task per projection (plus one that reads
    /// the registry and the log's head every `poll_interval`). Metrics go into `metrics`.
    pub async fn start<S>(
        store: S,
        pg: tokio_postgres::Config,
        projections: Vec<Arc<dyn Projection>>,
        metrics: &prometheus::Registry,
        options: RunnerOptions,
    ) -> Result<Projections, RunnerError>
    where
        S: EventStore + Clone + Send + Sync + 'static,
    {
        let mut slots = BTreeMap::new();
        let runner_metrics = RunnerMetrics::register(metrics)?;
        for p in projections {
            check_name(p.name())?;
            let slot = Arc::new(Slot {
                serving: watch::channel(Serving::default()).0,
                state: Mutex::new(RunState::Starting),
                filled: Default::default(),
                lag: Mutex::new((0, 0.0)),
                metrics: runner_metrics.for_projection(p.name()),
                projection: p.clone(),
            });
            if slots.insert(p.name(), slot).is_some() {
                return Err(RunnerError::Duplicate(p.name().to_owned()));
            }
        }
        let mut client = follow::connect(&pg, "registry").await?;
        registry::ensure(&mut client).await?;
        // Readers get the serving schemas at once, before any task has attached.
        for (name, row) in registry::all_active(&client).await? {
            if let Some(slot) = slots.get(name.as_str()) {
                slot.serving.send_replace(Serving {
                    schema: Some(row.schema.into()),
                    position: row.position,
                    failed_at: None,
                });
            }
        }
        let (shutdown, _) = watch::channel(false);
        let (registry_tx, registry_rx) = watch::channel(BTreeMap::new());
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(task::poll(
            client,
            store.clone(),
            slots.values().cloned().collect(),
            registry_tx,
            shutdown.subscribe(),
            options.poll_interval,
        )));
        for slot in slots.values() {
            tasks.push(tokio::spawn(task::run(task::Ctx {
                store: store.clone(),
                pg: pg.clone(),
                slot: slot.clone(),
                options: options.clone(),
                shutdown: shutdown.subscribe(),
                registry: registry_rx.clone(),
            })));
        }
        Ok(Projections {
            inner: Arc::new(Inner {
                slots,
                shutdown,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// The schema serving `name` now (it changes at a switch; resolve it per request).
    pub fn active_schema(&self, name: &str) -> Option<Arc<str>> {
        self.inner.slots.get(name)?.serving.borrow().schema.clone()
    }

    /// Waits until `name`'s serving schema holds every event up to `position` (read your
    /// writes), at most `timeout`. Returns the position reached.
    pub async fn wait_for(
        &self,
        name: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<u64, WaitError> {
        let slot = self
            .inner
            .slots
            .get(name)
            .ok_or_else(|| WaitError::Unknown(name.to_owned()))?;
        let mut rx = slot.serving.subscribe();
        let reached = async {
            rx.wait_for(|s| s.position >= position || s.failed_at.is_some_and(|f| f <= position))
                .await
                .map(|s| s.clone())
        };
        match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(s)) if s.position >= position => Ok(s.position),
            Ok(Ok(s)) => Err(WaitError::Failed {
                failed_at: s.failed_at.unwrap_or(0),
            }),
            Ok(Err(_)) => Err(WaitError::Stopped),
            Err(_) => Err(WaitError::Timeout {
                reached: slot.serving.borrow().position,
            }),
        }
    }

    /// Every projection's status, by name.
    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        self.inner
            .slots
            .values()
            .map(|slot| {
                let serving = slot.serving.borrow().clone();
                let (lag_events, lag_seconds) = *slot.lag.lock().unwrap_or_else(|p| p.into_inner());
                ProjectionStatus {
                    name: slot.projection.name(),
                    version: slot.projection.version(),
                    schema: serving.schema.map(|s| s.to_string()),
                    position: serving.position,
                    lag_events,
                    lag_seconds,
                    state: slot.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                }
            })
            .collect()
    }

    /// Stops every task at its next batch boundary and waits for them.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "projection task ended abnormally");
            }
        }
    }
}
