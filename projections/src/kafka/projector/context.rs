//! The projector's consumer context: logs and records every partition assignment (which
//! member of the group holds what), counts failed asynchronous offset commits, and turns
//! librdkafka's statistics into each projection's lag in messages.

use super::metrics::ProjectorMetrics;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// How often librdkafka reports its statistics (`statistics.interval.ms`), which refresh
/// `mykey_projector_lag_events`: often enough for an operator, rare enough to cost nothing.
pub const STATS_INTERVAL_MS: &str = "1000";

/// The partitions this member holds, as (topic, partition).
pub type Assignment = Arc<Mutex<BTreeSet<(String, i32)>>>;

pub struct ProjectorContext {
    pub(super) metrics: ProjectorMetrics,
    /// Per projection, the topics it reads.
    pub(super) topics_of: Vec<(&'static str, BTreeSet<String>)>,
    pub(super) assignment: Assignment,
    /// The group, for the logs.
    pub(super) group: String,
}

fn pairs(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for ProjectorContext {
    fn stats(&self, statistics: Statistics) {
        let mut lag: BTreeMap<&str, i64> = BTreeMap::new();
        for (name, topic) in &statistics.topics {
            let behind: i64 = topic
                .partitions
                .values()
                // -1: librdkafka's internal partition; `desired`: held by this member.
                .filter(|p| p.partition >= 0 && p.desired)
                .map(|p| {
                    if p.consumer_lag >= 0 {
                        p.consumer_lag
                    } else if p.committed_offset < 0 && p.hi_offset >= 0 && p.lo_offset >= 0 {
                        // Nothing committed yet: the group reads from the start
                        // (`auto.offset.reset=earliest`), so all of it is behind.
                        p.hi_offset - p.lo_offset
                    } else {
                        0
                    }
                })
                .sum();
            lag.insert(name.as_str(), behind);
        }
        for (projection, topics) in &self.topics_of {
            let total: i64 = topics
                .iter()
                .filter_map(|t| lag.get(t.as_str()))
                .copied()
                .sum();
            self.metrics
                .lag_events
                .with_label_values(&[projection])
                .set(total);
        }
    }
}

impl ConsumerContext for ProjectorContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Ok(mut held) = self.assignment.lock() else {
            return;
        };
        match rebalance {
            Rebalance::Assign(list) => {
                let got = pairs(list);
                // The eager protocol hands over the whole new assignment.
                held.clear();
                held.extend(got.iter().cloned());
                tracing::info!(group = %self.group, partitions = ?got, "projector assigned");
            }
            Rebalance::Revoke(list) => {
                let lost = pairs(list);
                for p in &lost {
                    held.remove(p);
                }
                tracing::info!(group = %self.group, partitions = ?lost, "projector revoked");
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "projector rebalance error");
            }
        }
        self.metrics
            .assigned
            .set(i64::try_from(held.len()).unwrap_or(i64::MAX));
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.metrics.commit_failures.inc();
            // Only redelivery follows: the applied positions make it duplicates.
            tracing::warn!(
                error = %e,
                partitions = ?pairs(offsets),
                "offsets not committed (redelivery follows)"
            );
        }
    }
}
