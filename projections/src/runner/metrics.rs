//! The runner's Prometheus metrics, one series per projection (label `projection`).

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Buckets of the commit delay (seconds from an event's append to its projection's commit):
/// fine below the 200 ms lag target, coarse above it.
const DELAY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0,
];

/// Every collector of the runner, registered once per registry.
#[derive(Debug, Clone)]
pub struct RunnerMetrics {
    position: IntGaugeVec,
    lag_events: IntGaugeVec,
    lag_seconds: GaugeVec,
    failed: IntGaugeVec,
    applied: IntCounterVec,
    delay: HistogramVec,
}

/// One projection's series.
#[derive(Debug, Clone)]
pub struct ProjectionMetrics {
    pub position: IntGauge,
    pub lag_events: IntGauge,
    pub lag_seconds: Gauge,
    pub failed: IntGauge,
    pub applied: IntCounter,
    pub delay: Histogram,
}

impl RunnerMetrics {
    pub fn register(registry: &Registry) -> Result<RunnerMetrics, prometheus::Error> {
        let label = &["projection"];
        let m = RunnerMetrics {
            position: IntGaugeVec::new(
                Opts::new(
                    "mykey_projection_position",
                    "Last log position committed into the projection's schema",
                ),
                label,
            )?,
            lag_events: IntGaugeVec::new(
                Opts::new(
                    "mykey_projection_lag_events",
                    "Events between the log's head and the projection's position",
                ),
                label,
            )?,
            lag_seconds: GaugeVec::new(
                Opts::new(
                    "mykey_projection_lag_seconds",
                    "Age of the oldest event not yet applied (0 when caught up)",
                ),
                label,
            )?,
            failed: IntGaugeVec::new(
                Opts::new(
                    "mykey_projection_failed",
                    "1 while the projection is stopped on an event it cannot apply",
                ),
                label,
            )?,
            applied: IntCounterVec::new(
                Opts::new(
                    "mykey_projection_events_total",
                    "Events committed into the projection (including ones it ignores)",
                ),
                label,
            )?,
            delay: HistogramVec::new(
                HistogramOpts::new(
                    "mykey_projection_commit_delay_seconds",
                    "From an event's append to the commit of its projection's batch",
                )
                .buckets(DELAY_BUCKETS.to_vec()),
                label,
            )?,
        };
        registry.register(Box::new(m.position.clone()))?;
        registry.register(Box::new(m.lag_events.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.delay.clone()))?;
        Ok(m)
    }

    pub fn for_projection(&self, name: &str) -> ProjectionMetrics {
        ProjectionMetrics {
            position: self.position.with_label_values(&[name]),
            lag_events: self.lag_events.with_label_values(&[name]),
            lag_seconds: self.lag_seconds.with_label_values(&[name]),
            failed: self.failed.with_label_values(&[name]),
            applied: self.applied.with_label_values(&[name]),
            delay: self.delay.with_label_values(&[name]),
        }
    }
}
