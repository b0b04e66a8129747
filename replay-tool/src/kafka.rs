//! Reading the relay's topics for `verify --kafka` (the layout is `mykey_projections::kafka::
//! message`'s: one topic `<prefix>.<category>` per category, several partitions, the value the
//! stored envelope).
//!
//! [`open`] finds every category topic under the prefix, takes each partition's watermarks at
//! the start (to skip empty partitions and size the progress bar) and reads each non-empty
//! partition from its low watermark **to its end** — the consumer's end-of-partition signal —
//! through its own librdkafka queue ([`KafkaPartition`]), one record at a time. Not to the high
//! watermark taken at the start: tansu (the tests' broker) was seen to report, for a partition
//! written in batches, a high watermark below its last offset, so that figure cannot bound the
//! read. Events the relay publishes while the verification runs may therefore be checked too
//! (the report counts what was). The merge into global order is `crate::verify_kafka`'s.
//!
//! Memory: librdkafka prefetches per partition queue at most about
//! [`PREFETCH_KBYTES_PER_PARTITION`] (or [`PREFETCH_MESSAGES_PER_PARTITION`] messages, whichever
//! comes first) plus one fetch of [`FETCH_BYTES_PER_PARTITION`]; the merge holds one decoded
//! event per partition. So the bound is about `partitions × 1.3 MB`, independent of the log's
//! length (6 categories × 6 partitions ≈ 47 MB).

use crate::ToolError;
use mykey_projections::kafka::message;
use mykey_schemas::EventEnvelope;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on the brokers' metadata and watermark answers.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition that yields neither a record nor its end within this is a broker that stopped
/// answering: verification ends with an error.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(30);

/// One wait on a partition queue; between waits the consumer's own queue is served.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// librdkafka `queued.max.messages.kbytes`: with split partition queues it applies per
/// partition. Enough to keep a fetch in flight while the merge drains the previous one.
pub const PREFETCH_KBYTES_PER_PARTITION: u32 = 1024;

/// librdkafka `queued.min.messages` (default 100,000 per partition: far too many here).
pub const PREFETCH_MESSAGES_PER_PARTITION: u32 = 2_000;

/// librdkafka `fetch.message.max.bytes`: the first bytes asked per partition per fetch (a
/// larger single record is still returned whole).
pub const FETCH_BYTES_PER_PARTITION: u32 = 256 * 1024;

/// Where a record is: `topic[partition]@offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}

/// A relayed event and where it was read.
#[derive(Debug, Clone)]
pub struct Record {
    pub event: EventEnvelope,
    pub at: Location,
}

/// Why reading a partition stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A record whose value is not an event envelope: the topic was written by something else
    /// than the relay (or altered). Reported as a verification failure, with its location.
    #[error("{at}: not a relayed event: {reason}")]
    Undecodable { at: Location, reason: String },
    /// The broker: unreachable, a record that never came, a fetch error.
    #[error("Kafka: {0}")]
    Broker(String),
}

impl From<ReadError> for ToolError {
    fn from(e: ReadError) -> ToolError {
        ToolError::Kafka(e.to_string())
    }
}

/// Records of one partition in offset order (the merge's input).
pub trait PartitionSource {
    /// The next record, `None` at the end.
    fn next_record(&mut self) -> Result<Option<Record>, ReadError>;
}

/// The category topics found under a prefix, ready to read.
#[derive(Debug)]
pub struct TopicsReader {
    pub topics: Vec<String>,
    pub partitions: Vec<KafkaPartition>,
    /// Records below the high watermarks at the start (the progress bar's estimate).
    pub records: u64,
}

/// One partition, read from its own queue up to the high watermark taken at the start.
pub struct KafkaPartition {
    consumer: Arc<BaseConsumer>,
    queue: PartitionQueue<DefaultConsumerContext>,
    topic: String,
    partition: i32,
    /// The high watermark at the start (for messages only: the end is the broker's signal).
    end: i64,
    done: bool,
}

impl std::fmt::Debug for KafkaPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPartition")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("end", &self.end)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// `true` for a topic `<prefix>.<category>` (a category: `[a-z][a-z0-9_]*`, as in stream ids).
pub fn is_category_topic(prefix: &str, topic: &str) -> bool {
    let Some(category) = topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return false;
    };
    let mut chars = category.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn broker(what: &str, e: impl std::fmt::Display) -> ReadError {
    ReadError::Broker(format!("{what}: {e}"))
}

/// Connects to `brokers`, finds the category topics under `prefix` and assigns every
/// non-empty partition from its low watermark. Blocking (librdkafka): call it off the runtime.
pub fn open(brokers: &str, prefix: &str) -> Result<TopicsReader, ReadError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "mykey-replay")
        // No group membership (partitions are assigned by hand) and nothing committed: the
        // verifier leaves no trace on the cluster.
        .set(
            "group.id",
            format!("mykey-replay-verify-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set(
            "queued.max.messages.kbytes",
            PREFETCH_KBYTES_PER_PARTITION.to_string(),
        )
        .set(
            "queued.min.messages",
            PREFETCH_MESSAGES_PER_PARTITION.to_string(),
        )
        .set(
            "fetch.message.max.bytes",
            FETCH_BYTES_PER_PARTITION.to_string(),
        )
        .create()
        .map_err(|e| broker("cannot create a consumer", e))?;
    let consumer = Arc::new(consumer);
    let metadata = consumer
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| broker(&format!("brokers {brokers:?} did not answer"), e))?;
    let mut found: Vec<(String, Vec<i32>)> = metadata
        .topics()
        .iter()
        .filter(|t| is_category_topic(prefix, t.name()))
        .map(|t| {
            (
                t.name().to_owned(),
                t.partitions().iter().map(|p| p.id()).collect(),
            )
        })
        .collect();
    found.sort();
    let mut assignment = TopicPartitionList::new();
    let mut partitions = Vec::new();
    let mut records = 0u64;
    for (topic, ids) in &found {
        for &p in ids {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, METADATA_TIMEOUT)
                .map_err(|e| broker(&format!("watermarks of {topic}[{p}]"), e))?;
            if high <= low {
                continue;
            }
            records += u64::try_from(high - low).unwrap_or(0);
            // Split before assigning, so no record of it lands in the consumer's own queue.
            let queue = consumer
                .split_partition_queue(topic, p)
                .ok_or_else(|| broker(&format!("{topic}[{p}]"), "no partition queue"))?;
            assignment
                .add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(|e| broker(&format!("assigning {topic}[{p}]"), e))?;
            partitions.push(KafkaPartition {
                consumer: consumer.clone(),
                queue,
                topic: topic.clone(),
                partition: p,
                end: high,
                done: false,
            });
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|e| broker("assigning the partitions", e))?;
    Ok(TopicsReader {
        topics: found.into_iter().map(|(t, _)| t).collect(),
        partitions,
        records,
    })
}

impl PartitionSource for KafkaPartition {
    fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let deadline = Instant::now() + RECORD_TIMEOUT;
        loop {
            match self.queue.poll(POLL_SLICE) {
                Some(Ok(m)) => {
                    let at = Location {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        offset: m.offset(),
                    };
                    return match message::decode_unchecked(m.payload()) {
                        Ok(event) => Ok(Some(Record { event, at })),
                        Err(e) => Err(ReadError::Undecodable {
                            at,
                            reason: e.to_string(),
                        }),
                    };
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    self.done = true;
                    return Ok(None);
                }
                Some(Err(e)) => {
                    return Err(broker(
                        &format!("reading {}[{}]", self.topic, self.partition),
                        e,
                    ))
                }
                None => {
                    // Serve the consumer's own events (errors, statistics); it holds no
                    // records of a split partition.
                    if let Some(Err(e)) = self.consumer.poll(Duration::ZERO) {
                        if !matches!(e, KafkaError::PartitionEOF(_)) {
                            return Err(broker("the consumer", e));
                        }
                    }
                    if Instant::now() > deadline {
                        return Err(ReadError::Broker(format!(
                            "{}[{}]: neither a record nor the partition's end within \
                             {RECORD_TIMEOUT:?} (its high watermark was {} at the start)",
                            self.topic, self.partition, self.end
                        )));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_category_topics_under_the_prefix_are_read() {
        assert!(is_category_topic("mykey", "mykey.ppid"));
        assert!(is_category_topic("t.x-1", "t.x-1.audit_2"));
        for other in [
            "mykey",
            "mykey.",
            "mykey.Ppid",
            "mykey.x.ppid",
            "mykeyx.ppid",
            "other.ppid",
            "__consumer_offsets",
            "mykey.1ppid",
        ] {
            assert!(!is_category_topic("mykey", other), "{other}");
        }
    }
}
