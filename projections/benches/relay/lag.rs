//! How late events arrive: the relay bench's lag reader (a plain consumer of the topic) and
//! quantiles of the projector's commit-delay histogram.

use super::{CATEGORY, FETCH_WAIT_MS};
use mykey_projections::kafka::{message, KafkaSettings};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A histogram's cumulative buckets, for quantiles as Prometheus' `histogram_quantile` gives
/// them (linear within the bucket).
pub(super) struct Delays {
    /// (upper bound in seconds, events at or below it).
    buckets: Vec<(f64, u64)>,
    count: u64,
}

impl Delays {
    pub(super) fn of(h: &prometheus::Histogram) -> Delays {
        use prometheus::core::Collector;
        let families = h.collect();
        let histogram = families
            .first()
            .and_then(|f| f.get_metric().first())
            .map(|m| m.get_histogram().clone())
            .unwrap_or_default();
        Delays {
            buckets: histogram
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect(),
            count: histogram.get_sample_count(),
        }
    }

    pub(super) fn quantile(&self, q: f64) -> f64 {
        let rank = q * self.count as f64;
        let mut below = (0.0, 0u64);
        for &(bound, cumulative) in &self.buckets {
            if cumulative as f64 >= rank {
                let within = (cumulative - below.1).max(1) as f64;
                return below.0 + (bound - below.0) * (rank - below.1 as f64) / within;
            }
            below = (bound, cumulative);
        }
        f64::INFINITY
    }

    pub(super) fn share_within(&self, bound: f64) -> f64 {
        let at = self
            .buckets
            .iter()
            .find(|(b, _)| (*b - bound).abs() < 1e-9)
            .map_or(0, |(_, c)| *c);
        at as f64 / self.count.max(1) as f64
    }
}

pub(super) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)])
}

/// The one field of a relayed envelope the lag needs.
#[derive(serde::Deserialize)]
struct Stamp {
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Reads the topic from the beginning until told to stop; returns each message's lag in ms.
pub(super) async fn consume(
    settings: KafkaSettings,
    stop: Arc<AtomicBool>,
    consumed: Arc<AtomicU64>,
) -> Result<Vec<u32>, String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set(
            "group.id",
            format!("bench-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        // librdkafka waits up to 500 ms for a fetch to fill by default: that is lag, not load.
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .map_err(|e| e.to_string())?;
    let topic = message::topic(&settings.topic_prefix, CATEGORY);
    let mut partitions = TopicPartitionList::new();
    for p in 0..settings.partitions {
        partitions
            .add_partition_offset(&topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&partitions).map_err(|e| e.to_string())?;
    let mut lags = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let m = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Err(_) => continue,
            Ok(m) => m.map_err(|e| e.to_string())?,
        };
        // Only the append time: this reader measures the relay's lag and should cost the
        // cores the path under test shares as little as it can (no hash check, no payload).
        let stamp: Stamp = m
            .payload()
            .ok_or("a message without a value")
            .and_then(|v| serde_json::from_slice(v).map_err(|_| "a value that is not an event"))?;
        let lag = (chrono::Utc::now() - stamp.recorded_at).num_milliseconds();
        lags.push(u32::try_from(lag.max(0)).unwrap_or(u32::MAX));
        consumed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(lags)
}
