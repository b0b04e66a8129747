//! The relay's Prometheus collectors, registered into a registry the caller owns (tests run
//! several relays in one process, so never the global default registry).

use prometheus::{IntCounter, IntGauge, Registry};

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
