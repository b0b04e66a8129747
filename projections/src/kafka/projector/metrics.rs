//! The projector's Prometheus collectors and per-projection status (what `/metrics` and
//! `/readyz` of `mykey-server projector` show).

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
};
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// The projector's collectors. Cloning shares them.
#[derive(Debug, Clone)]
pub struct ProjectorMetrics {
    /// `mykey_projector_events_total`: events applied (summed over the projections).
    pub applied: IntCounter,
    /// `mykey_projector_duplicates_total`: events skipped as already applied.
    pub duplicates: IntCounter,
    /// `mykey_projector_batches_total`: batches applied whose offsets were then handed to
    /// the consumer for an (asynchronous) commit.
    pub batches: IntCounter,
    /// `mykey_projector_offset_commit_failures_total`: asynchronous offset commits the broker
    /// refused or lost (each only means redelivery, skipped as duplicates).
    pub commit_failures: IntCounter,
    /// `mykey_projector_commit_delay_seconds`: append (`recorded_at`) to committed in every
    /// running Kafka-mode schema, per event.
    pub commit_delay: Histogram,
    /// `mykey_projector_batch_apply_seconds`: one batch's apply, all projections' transactions
    /// (run concurrently) until the last committed.
    pub apply_seconds: Histogram,
    /// `mykey_projector_failed`: 1 once the projector as a whole stopped (a message that is
    /// not a relayed event); one projection's failure is `mykey_projector_projection_failed`.
    pub failed: IntGauge,
    /// `mykey_projector_position{projection}`: the highest global position applied.
    pub position: IntGaugeVec,
    /// `mykey_projector_lag_events{projection}`: messages of the projection's topics behind
    /// the partitions' ends, from the committed offsets (librdkafka's `consumer_lag`, or the
    /// whole partition when nothing is committed yet; summed
    /// over the partitions this member holds).
    pub lag_events: IntGaugeVec,
    /// `mykey_projector_lag_seconds{projection}`: append → committed of the newest event in
    /// the last batch the projection applied.
    pub lag_seconds: GaugeVec,
    /// `mykey_projector_projection_failed{projection}`: 1 while the projection is stopped on
    /// an event it cannot apply.
    pub projection_failed: IntGaugeVec,
    /// `mykey_projector_assigned_partitions`: partitions this member holds now.
    pub assigned: IntGauge,
}

impl ProjectorMetrics {
    pub fn register(registry: &Registry) -> Result<ProjectorMetrics, prometheus::Error> {
        let label = &["projection"];
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
            commit_failures: IntCounter::new(
                "mykey_projector_offset_commit_failures_total",
                "Offset commits that failed (redelivery follows; duplicates are skipped)",
            )?,
            commit_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "mykey_projector_commit_delay_seconds",
                    "Append to committed in every Kafka-mode read model, per event",
                )
                // Fine around the 500 ms target: the relay bench reads its p50 and p99 here.
                .buckets(vec![
                    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
                    0.75, 1.0, 2.0, 5.0, 10.0, 30.0,
                ]),
            )?,
            apply_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "mykey_projector_batch_apply_seconds",
                    "One batch's apply in every Kafka-mode read model, until the last commit",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            failed: IntGauge::new(
                "mykey_projector_failed",
                "1 when the Kafka projector stopped on a message that is not a relayed event",
            )?,
            position: IntGaugeVec::new(
                Opts::new(
                    "mykey_projector_position",
                    "Highest global position the Kafka-mode projection applied",
                ),
                label,
            )?,
            lag_events: IntGaugeVec::new(
                Opts::new(
                    "mykey_projector_lag_events",
                    "Messages of the projection's topics not yet committed (partitions held here)",
                ),
                label,
            )?,
            lag_seconds: GaugeVec::new(
                Opts::new(
                    "mykey_projector_lag_seconds",
                    "Append to committed of the newest event of the projection's last batch",
                ),
                label,
            )?,
            projection_failed: IntGaugeVec::new(
                Opts::new(
                    "mykey_projector_projection_failed",
                    "1 while the Kafka-mode projection is stopped on an event it cannot apply",
                ),
                label,
            )?,
            assigned: IntGauge::new(
                "mykey_projector_assigned_partitions",
                "Partitions the consumer group assigned to this projector",
            )?,
        };
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.commit_failures.clone()))?;
        registry.register(Box::new(m.commit_delay.clone()))?;
        registry.register(Box::new(m.apply_seconds.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.position.clone()))?;
        registry.register(Box::new(m.lag_events.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.projection_failed.clone()))?;
        registry.register(Box::new(m.assigned.clone()))?;
        Ok(m)
    }

    /// Creates every per-projection series at 0, so each projection shows from the start.
    pub(crate) fn init(&self, name: &str) {
        self.position.with_label_values(&[name]).set(0);
        self.lag_events.with_label_values(&[name]).set(0);
        self.lag_seconds.with_label_values(&[name]).set(0.0);
        self.projection_failed.with_label_values(&[name]).set(0);
    }
}

/// One Kafka-mode projection's state, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KafkaProjectionStatus {
    pub name: &'static str,
    pub version: u32,
    /// Highest global position applied by this process.
    pub position: u64,
    #[serde(flatten)]
    pub state: KafkaRunState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KafkaRunState {
    Running,
    /// Stopped on the event at `position`; the others go on.
    Failed {
        failed_at: u64,
        event_type: String,
        error: String,
    },
}

/// The statuses of a projector's projections, shared between its task and its handle.
pub(crate) type Statuses = Arc<Mutex<Vec<KafkaProjectionStatus>>>;
