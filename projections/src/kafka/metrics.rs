//! The relay's Prometheus collectors, registered into a registry the caller owns (tests run
//! several relays in one process, so never the global default registry).

use mykey_store::EventStore;
use prometheus::{IntCounter, IntGauge, Registry};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the lag metrics are recomputed from the log's head.
pub const METRICS_INTERVAL: Duration = Duration::from_millis(250);

/// The relay's collectors. Cloning shares them.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    /// `mykey_relay_lag_events`: log head minus the acknowledged position. The lag gauges are
    /// reported by the leader (also while it backs off after an error); a standby reports 0.
    pub lag_events: IntGauge,
    /// `mykey_relay_lag_seconds`: age of the oldest event not yet acknowledged by the broker
    /// (0 when caught up).
    pub lag_seconds: IntGauge,
    /// `mykey_relay_acknowledged_position`: every event up to it is in Kafka.
    pub acknowledged_position: IntGauge,
    /// `mykey_relay_leader`: 1 while this process is the one publishing.
    pub leader: IntGauge,
    /// `mykey_relay_events_published_total`: acknowledged messages (re-sends count again).
    pub published: IntCounter,
    /// `mykey_relay_failures_total`: publishing interrupted (broker or database trouble),
    /// each followed by a back-off and a retry.
    pub failures: IntCounter,
}

impl RelayMetrics {
    pub fn register(registry: &Registry) -> Result<RelayMetrics, prometheus::Error> {
        let metrics = RelayMetrics {
            lag_events: IntGauge::new(
                "mykey_relay_lag_events",
                "Events in the log not yet acknowledged by Kafka",
            )?,
            lag_seconds: IntGauge::new(
                "mykey_relay_lag_seconds",
                "Age in seconds of the oldest event not yet acknowledged by Kafka",
            )?,
            acknowledged_position: IntGauge::new(
                "mykey_relay_acknowledged_position",
                "Global position up to which Kafka acknowledged every event",
            )?,
            leader: IntGauge::new(
                "mykey_relay_leader",
                "1 while this process holds the relay lock and publishes",
            )?,
            published: IntCounter::new(
                "mykey_relay_events_published_total",
                "Events acknowledged by Kafka (re-sent events count again)",
            )?,
            failures: IntCounter::new(
                "mykey_relay_failures_total",
                "Times publishing stopped on an error and was retried after a back-off",
            )?,
        };
        registry.register(Box::new(metrics.lag_events.clone()))?;
        registry.register(Box::new(metrics.lag_seconds.clone()))?;
        registry.register(Box::new(metrics.acknowledged_position.clone()))?;
        registry.register(Box::new(metrics.leader.clone()))?;
        registry.register(Box::new(metrics.published.clone()))?;
        registry.register(Box::new(metrics.failures.clone()))?;
        Ok(metrics)
    }
}

/// Keeps the lag gauges current while this process reports the lag: events between the log's
/// head and the acknowledged position, and the age of the oldest of them.
pub(super) async fn track_lag<S: EventStore>(
    store: S,
    acked: Arc<AtomicU64>,
    reports_lag: Arc<AtomicBool>,
    metrics: RelayMetrics,
) {
    let mut tick = tokio::time::interval(METRICS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !reports_lag.load(Ordering::Relaxed) {
            metrics.lag_events.set(0);
            metrics.lag_seconds.set(0);
            continue;
        }
        let acked = acked.load(Ordering::Relaxed);
        let head = match store.head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "relay lag: cannot read the log head");
                continue;
            }
        };
        metrics
            .lag_events
            .set(super::relay::gauge_value(head.saturating_sub(acked)));
        let age = if head > acked {
            match store.read_all(acked + 1, 1).await {
                Ok(page) => page.first().map_or(0, |e| {
                    (chrono::Utc::now() - e.recorded_at).num_seconds().max(0)
                }),
                Err(_) => continue,
            }
        } else {
            0
        };
        metrics.lag_seconds.set(age);
    }
}
