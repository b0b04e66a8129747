//! A consumer of the relay's topics, as a projector would read them: every partition from the
//! beginning, deduplicated by position per partition, checked against the log.

use super::{CATCH_UP, CATEGORIES};
use mykey_projections::kafka::{message, KafkaSettings};
use mykey_schemas::EventEnvelope;
use mykey_store::verify::ChainChecker;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// One message as a consumer received it.
#[derive(Debug)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    key: String,
    headers: HashMap<String, String>,
    pub event: EventEnvelope,
}

/// Reads every partition of the tests' topics from the beginning until `head` distinct
/// positions have arrived, then drains what else is already there (duplicates).
pub async fn consume(settings: &KafkaSettings, head: u64) -> Vec<Received> {
    let topics: Vec<String> = CATEGORIES
        .iter()
        .map(|c| message::topic(&settings.topic_prefix, c))
        .collect();
    consume_topics(settings, &topics, head).await
}

/// [`consume`] of `topics`, until `head` distinct positions have arrived.
pub async fn consume_topics(
    settings: &KafkaSettings,
    topics: &[String],
    head: u64,
) -> Vec<Received> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("g{}", Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        for p in 0..settings.partitions {
            partitions
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap_or_else(|e| panic!("assign: {e}"));
        }
    }
    consumer
        .assign(&partitions)
        .unwrap_or_else(|e| panic!("assign: {e}"));
    let mut received = Vec::new();
    let mut distinct = HashSet::new();
    let deadline = Instant::now() + CATCH_UP;
    loop {
        // Once everything arrived, a quiet second means nothing more is coming.
        let wait = if distinct.len() as u64 >= head {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let m = match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("consume: {e}"),
            Err(_) if distinct.len() as u64 >= head => return received,
            Err(_) => panic!(
                "only {} of {head} positions arrived within {CATCH_UP:?}",
                distinct.len()
            ),
        };
        let event = message::decode(m.payload()).unwrap_or_else(|e| panic!("decode: {e}"));
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        distinct.insert(event.global_position);
        received.push(Received {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            headers,
            event,
        });
    }
}

/// Checks what a consumer received against the log `1..=head`: every position, correct
/// topic/key/headers, per-stream order after deduplication, and the hash chain recomputed
/// from the values. Returns the positions that arrived more than once.
pub fn check(received: &[Received], settings: &KafkaSettings, head: u64) -> Vec<u64> {
    for r in received {
        let e = &r.event;
        assert_eq!(
            r.topic,
            message::topic(&settings.topic_prefix, e.stream_id.category())
        );
        assert_eq!(r.key, e.stream_id.as_str());
        for (name, value) in message::headers(e) {
            assert_eq!(
                r.headers.get(name),
                Some(&value),
                "header {name} at {}",
                e.global_position
            );
        }
    }
    // A consumer's deduplication: per partition, in offset order, skip every position not above
    // the highest already applied; streams must then advance one version at a time.
    let mut by_partition: BTreeMap<(&str, i32), Vec<&Received>> = BTreeMap::new();
    for r in received {
        by_partition
            .entry((&r.topic, r.partition))
            .or_default()
            .push(r);
    }
    let mut applied: BTreeMap<u64, &EventEnvelope> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for (_, mut messages) in by_partition {
        messages.sort_by_key(|r| r.offset);
        let mut highest = 0;
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for r in messages {
            let e = &r.event;
            if e.global_position <= highest {
                duplicates.push(e.global_position);
                continue;
            }
            highest = e.global_position;
            let last = versions.entry(e.stream_id.as_str()).or_insert(0);
            assert_eq!(
                e.stream_version,
                *last + 1,
                "stream {} out of order at position {}",
                e.stream_id,
                e.global_position
            );
            *last = e.stream_version;
            assert!(
                applied.insert(e.global_position, e).is_none(),
                "position in two partitions"
            );
        }
    }
    let positions: Vec<u64> = applied.keys().copied().collect();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "positions missing"
    );
    let mut chain = ChainChecker::new(1);
    for e in applied.values() {
        assert_eq!(
            chain.check(e),
            None,
            "hash chain broken at {}",
            e.global_position
        );
    }
    assert_eq!(chain.finish(head), None);
    duplicates.sort_unstable();
    duplicates
}
