//! The relay: publishes every event of the log to Kafka, in global order, at least once.
//!
//! - **Leadership**: among all relay processes on one database, the one holding the relay's
//!   advisory lock publishes; the others poll for it every [`LEADER_POLL_INTERVAL`]. The lock
//!   goes with the holder's connection, so a killed relay hands over by itself.
//! - **Position**: the leader reads `relay_position`, follows the log from the next position
//!   ([`EventStore::subscribe`]: gap-free, in order) and moves the position forward only to a
//!   position up to which the broker acknowledged *every* message (`acks=all`, idempotent
//!   producer), at most every [`POSITION_COMMIT_INTERVAL`]. After a crash the next leader
//!   re-sends what came after: duplicates, never gaps.
//! - **Faults**: the producer queues while the broker is away (60 s per message, then it reports
//!   the message undeliverable); any error (delivery, topic creation, database) ends the term:
//!   the relay drops its connection and producer, waits a growing back-off, and starts again
//!   from the stored position. Appends never wait for the relay.

use super::client::{base_config, check_brokers, ensure_topic, producer_config};
use super::leader::LeaderConn;
use super::message;
use super::metrics::track_lag;
use super::metrics::RelayMetrics;
use super::{KafkaSettings, RelayError};
use mykey_store::{EventStore, StoreError};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Messages handed to the producer but not yet acknowledged: bounds memory while the broker
/// is away (the relay then stops reading the log, and the lag grows instead).
pub const MAX_IN_FLIGHT: usize = 50_000;

/// How often the leader writes its acknowledged position to PostgreSQL: the most a crash
/// makes it re-send is what was acknowledged within this window plus what was in flight.
pub const POSITION_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// On a graceful stop, how long the leader waits for acknowledgements of what is in flight.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How often a standby relay tries to take the lock: the longest a dead leader goes unreplaced.
pub const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Back-off after a failed term: doubles from the first to the second.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What a relay process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    /// Waiting for the lock (another relay publishes), or backing off after an error.
    Standby,
    /// Holding the lock and publishing.
    Leading,
    /// Stopped by [`RelayHandle::stop`].
    Stopped,
}

/// A running relay. Dropping it aborts the relay (the lock is released with its connection);
/// [`RelayHandle::stop`] stops it after recording the acknowledged position.
#[derive(Debug)]
pub struct RelayHandle {
    state: watch::Receiver<RelayState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    metrics: RelayMetrics,
}

impl RelayHandle {
    /// Follows the relay's state (e.g. to report when it becomes the leader).
    pub fn state(&self) -> watch::Receiver<RelayState> {
        self.state.clone()
    }

    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// Stops publishing, records the acknowledged position and releases the lock.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the relay task failed");
            }
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Checks the brokers, registers the metrics into `registry` and starts the relay as a task.
/// `pg` is the event log's database (the relay opens its own connection there for the lock).
pub async fn start<S>(
    store: S,
    pg: tokio_postgres::Config,
    settings: KafkaSettings,
    registry: &prometheus::Registry,
) -> Result<RelayHandle, RelayError>
where
    S: EventStore + Clone + 'static,
{
    check_brokers(&settings).await?;
    let metrics = RelayMetrics::register(registry)?;
    let (state_tx, state) = watch::channel(RelayState::Standby);
    let (stop, stop_rx) = watch::channel(false);
    let relay = Relay {
        store,
        pg,
        settings,
        metrics: metrics.clone(),
        state: state_tx,
        stop: stop_rx,
        acked: Arc::new(AtomicU64::new(0)),
        reports_lag: Arc::new(AtomicBool::new(false)),
        term_start: u64::MAX,
    };
    let task = tokio::spawn(relay.run());
    Ok(RelayHandle {
        state,
        stop,
        task: Some(task),
        metrics,
    })
}

struct Relay<S> {
    store: S,
    pg: tokio_postgres::Config,
    settings: KafkaSettings,
    metrics: RelayMetrics,
    state: watch::Sender<RelayState>,
    stop: watch::Receiver<bool>,
    /// Shared with the lag task: the position the broker acknowledged everything up to.
    acked: Arc<AtomicU64>,
    /// Whether this process reports the lag: from when it leads until another relay holds the
    /// lock (so the lag stays visible while a failed leader backs off and retries).
    reports_lag: Arc<AtomicBool>,
    /// The stored position this term started from (`u64::MAX` until it leads): a term that
    /// moved past it made progress, and the back-off starts over.
    term_start: u64,
}

/// One message handed to the producer.
struct InFlight {
    position: u64,
    delivery: DeliveryFuture,
}

/// Aborts a task when dropped (the lag task lives as long as the relay's own task).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl<S: EventStore + Clone + 'static> Relay<S> {
    async fn run(mut self) {
        let _lag = AbortOnDrop(tokio::spawn(track_lag(
            self.store.clone(),
            self.acked.clone(),
            self.reports_lag.clone(),
            self.metrics.clone(),
        )));
        let mut backoff = BACKOFF_MIN;
        while !*self.stop.borrow() {
            let result = self.term().await;
            self.metrics.leader.set(0);
            match result {
                Ok(()) => break,
                Err(e) => {
                    self.set_state(RelayState::Standby);
                    self.metrics.failures.inc();
                    if self.acked.load(Ordering::Relaxed) > self.term_start {
                        backoff = BACKOFF_MIN;
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "relay interrupted");
                    if self.wait_or_stop(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.reports_lag.store(false, Ordering::Relaxed);
        self.set_state(RelayState::Stopped);
    }

    /// Publishes `state` to watchers only when it changed.
    fn set_state(&self, state: RelayState) {
        self.state.send_if_modified(|now| {
            let changed = *now != state;
            *now = state;
            changed
        });
    }

    /// Sleeps `d`; true when a stop was requested meanwhile (or the handle is gone).
    async fn wait_or_stop(&mut self, d: Duration) -> bool {
        if *self.stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stop.changed() => true,
        }
    }

    /// Takes the lock (waiting while another relay holds it), then publishes until stopped
    /// (`Ok`) or an error. Dropping the connection at the end releases the lock.
    async fn term(&mut self) -> Result<(), RelayError> {
        self.term_start = u64::MAX;
        let conn = LeaderConn::open(&self.pg, &self.settings.topic_prefix).await?;
        self.set_state(RelayState::Standby);
        while !conn.try_lead().await? {
            // Another relay leads: its lag is its to report.
            self.reports_lag.store(false, Ordering::Relaxed);
            if self.wait_or_stop(LEADER_POLL_INTERVAL).await {
                return Ok(());
            }
        }
        let from = conn.position().await?;
        self.term_start = from;
        self.acked.store(from, Ordering::Relaxed);
        self.metrics.acknowledged_position.set(gauge_value(from));
        self.reports_lag.store(true, Ordering::Relaxed);
        self.metrics.leader.set(1);
        self.set_state(RelayState::Leading);
        tracing::info!(
            from = from + 1,
            prefix = %self.settings.topic_prefix,
            "relay leading: publishing the log to Kafka"
        );
        self.publish(&conn, from).await
    }

    async fn publish(&mut self, conn: &LeaderConn, from: u64) -> Result<(), RelayError> {
        let producer: FutureProducer = producer_config(&self.settings).create()?;
        let admin: AdminClient<DefaultClientContext> = base_config(&self.settings).create()?;
        let mut topics: HashSet<String> = HashSet::new();
        let mut log = self.store.subscribe(from + 1);
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let (mut acked, mut committed) = (from, from);
        let mut commit = tokio::time::interval(POSITION_COMMIT_INTERVAL);
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                _ = commit.tick() => {
                    if !conn.holds_connection() {
                        return Err(RelayError::Database(
                            "the connection holding the relay lock closed".into(),
                        ));
                    }
                    if acked > committed {
                        conn.advance(acked).await?;
                        committed = acked;
                    }
                }
                delivered = oldest(&mut in_flight) => {
                    let Some(sent) = in_flight.pop_front() else { continue };
                    match delivered {
                        Some(Ok(_)) => {
                            acked = sent.position;
                            self.acked.store(acked, Ordering::Relaxed);
                            self.metrics.acknowledged_position.set(gauge_value(acked));
                            self.metrics.published.inc();
                        }
                        Some(Err((e, _))) => {
                            return Err(RelayError::Delivery {
                                position: sent.position,
                                reason: e.to_string(),
                            })
                        }
                        None => {
                            return Err(RelayError::Delivery {
                                position: sent.position,
                                reason: "the producer dropped the message".into(),
                            })
                        }
                    }
                }
                next = log.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                    let event = match next {
                        Some(r) => r?,
                        None => {
                            return Err(RelayError::Store(StoreError::Unavailable(
                                "the log subscription ended".into(),
                            )))
                        }
                    };
                    let topic = message::topic(&self.settings.topic_prefix, event.stream_id.category());
                    if !topics.contains(&topic) {
                        ensure_topic(&admin, &topic, &self.settings).await?;
                        topics.insert(topic.clone());
                    }
                    let value = message::encode(&event).map_err(|e| RelayError::Delivery {
                        position: event.global_position,
                        reason: format!("cannot encode: {e}"),
                    })?;
                    let headers = message::headers(&event).iter().fold(
                        OwnedHeaders::new_with_capacity(6),
                        |h, (key, value)| h.insert(Header { key, value: Some(value.as_bytes()) }),
                    );
                    let record = FutureRecord::to(&topic)
                        .key(event.stream_id.as_str())
                        .payload(&value)
                        .headers(headers);
                    let delivery = producer.send_result(record).map_err(|(e, _)| RelayError::Delivery {
                        position: event.global_position,
                        reason: e.to_string(),
                    })?;
                    in_flight.push_back(InFlight { position: event.global_position, delivery });
                }
            }
        }
        // Stopping: what the broker acknowledges within a short grace need not be re-sent by
        // the next leader (a rolling restart then repeats little or nothing).
        let grace = tokio::time::Instant::now() + STOP_GRACE;
        while !in_flight.is_empty() {
            match tokio::time::timeout_at(grace, oldest(&mut in_flight)).await {
                Ok(Some(Ok(_))) => {
                    if let Some(sent) = in_flight.pop_front() {
                        acked = sent.position;
                    }
                }
                _ => break,
            }
        }
        if acked > committed {
            conn.advance(acked).await?;
        }
        Ok(())
    }
}

/// The oldest in-flight message's delivery report; never ready when nothing is in flight.
/// `None` when the producer dropped the message without a report.
async fn oldest(in_flight: &mut VecDeque<InFlight>) -> Option<OwnedDeliveryResult> {
    match in_flight.front_mut() {
        Some(sent) => (&mut sent.delivery).await.ok(),
        None => std::future::pending().await,
    }
}

/// `mykey-server relay`: the relay alone, on its own connections, until `shutdown` resolves.
/// Its metrics go to a registry of its own (this mode serves no HTTP).
pub async fn run_standalone(
    pg: tokio_postgres::Config,
    settings: KafkaSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RelayError> {
    let options = mykey_store::pg::PgStoreOptions {
        read_pool_size: STANDALONE_READ_POOL,
        ..Default::default()
    };
    let store = mykey_store::pg::PgEventStore::connect(pg.clone(), options).await?;
    let registry = prometheus::Registry::new();
    let relay = start(store, pg, settings, &registry).await?;
    shutdown.await;
    relay.stop().await;
    Ok(())
}

/// Read connections of a relay-only process: its subscription and the lag probe.
const STANDALONE_READ_POOL: usize = 2;
