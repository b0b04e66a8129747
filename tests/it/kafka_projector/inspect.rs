//! What the topics and the Kafka-mode schemas hold, for the projector's tests: every message
//! of the topics, the committed offsets, the watermarks, the tables' rows.

use super::{kafka_mode, Setup};
use crate::kafka::consumer::consume_topics;
use mykey_projections::kafka::projector::{schema_name, APPLIED_TABLE};
use mykey_projections::kafka::{message, KafkaSettings};
use mykey_projections::Projection;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Per topic partition, the watermark `p`'s Kafka-mode schema holds.
pub(super) async fn applied(client: &tokio_postgres::Client, p: &dyn Projection) -> Watermarks {
    client
        .query(
            &format!(
                "SELECT topic, partition, position FROM {}.{APPLIED_TABLE}",
                schema_name(p)
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("watermarks: {e}"))
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

/// Per topic partition, a position (the last applied, or the last there).
pub(super) type Watermarks = BTreeMap<(String, i32), i64>;

/// The topics `p` reads.
pub(super) fn topics_of(s: &Setup, p: &dyn Projection) -> Vec<String> {
    p.categories()
        .iter()
        .map(|c| message::topic(&s.settings.topic_prefix, c))
        .collect()
}

/// Per partition of `p`'s topics, the last position in `all` (every message there).
pub(super) fn last_positions(s: &Setup, p: &dyn Projection, all: &Messages) -> Watermarks {
    let topics = topics_of(s, p);
    let mut out = Watermarks::new();
    for ((topic, partition, _), (_, position)) in all {
        if topics.contains(topic) {
            let last = out.entry((topic.clone(), *partition)).or_insert(0);
            *last = (*last).max(*position);
        }
    }
    out
}

/// The committed offsets of `group` on `topics` (fetched without joining the group).
pub(super) fn committed(
    settings: &KafkaSettings,
    group: &str,
    topics: &[String],
) -> BTreeMap<(String, i32), i64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut list = TopicPartitionList::new();
    for t in topics {
        for p in 0..settings.partitions {
            list.add_partition(t, p);
        }
    }
    let got = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("committed offsets: {e}"));
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

/// Messages by (topic, partition, offset): (stream, position).
pub(super) type Messages = HashMap<(String, i32, i64), (String, i64)>;

/// The messages of `topics` from their start until `count` distinct positions arrived, and the
/// repeats already there (a re-sent tail repeats positions).
pub(super) async fn messages(
    settings: &KafkaSettings,
    topics: &[String],
    count: usize,
) -> Messages {
    consume_topics(settings, topics, count as u64)
        .await
        .into_iter()
        .map(|r| {
            let e = r.event;
            (
                (r.topic, r.partition, r.offset),
                (e.stream_id.to_string(), e.global_position as i64),
            )
        })
        .collect()
}

/// Every topic a Kafka-mode projection reads.
pub(super) fn all_topics(s: &Setup) -> Vec<String> {
    let mut t: Vec<String> = kafka_mode()
        .iter()
        .flat_map(|p| topics_of(s, &**p))
        .collect();
    t.sort();
    t.dedup();
    t
}

/// Events up to `head` that land in the Kafka-mode projections' topics.
pub(super) async fn count_in(client: &tokio_postgres::Client, head: u64) -> usize {
    let categories: Vec<String> = kafka_mode()
        .iter()
        .flat_map(|p| p.categories().iter())
        .map(|c| c.to_string())
        .collect();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE global_position <= $1 \
             AND split_part(stream_id, '-', 1) = ANY($2)",
            &[&(head as i64), &categories],
        )
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("count: {e}"));
    usize::try_from(n).unwrap_or(0)
}
