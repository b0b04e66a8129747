//! Kafka: the relay that publishes the event log to topics (see ARCHITECTURE.md, "Kafka: relay
//! and topics").
//!
//! - [`message`]: the topic layout, headers and value format, and their decoding for consumers;
//! - [`relay`]: the relay (leadership, at-least-once publication, position in PostgreSQL);
//! - [`metrics`]: its Prometheus collectors (lag in events and seconds);
//! - [`projector`]: the read models that need only each stream's order, fed from the topics
//!   by a consumer group (`mykey-server projector`).
//!
//! `KAFKA_BROKERS` unset means no Kafka at all ([`KafkaSettings::from_lookup`] returns `None`).

mod client;
mod leader;
pub mod message;
pub mod metrics;
pub mod projector;
pub mod relay;

pub use client::check_brokers;
pub use relay::{start, RelayHandle, RelayState};

use std::time::Duration;

/// Topic prefix when `KAFKA_TOPIC_PREFIX` is unset: topics are `mykey.<category>`.
pub const DEFAULT_TOPIC_PREFIX: &str = "mykey";

/// Partitions per topic when `KAFKA_PARTITIONS` is unset: enough for a handful of projector
/// processes per availability zone to share a category.
pub const DEFAULT_PARTITIONS: i32 = 6;

/// Upper bound on `KAFKA_PARTITIONS`: beyond this a typo, not a plan.
pub const MAX_PARTITIONS: i32 = 1_000;

/// Kafka limits topic names to 249 characters; the category takes the rest.
pub const MAX_TOPIC_PREFIX_LEN: usize = 100;

/// How long start-up waits for the brokers' metadata before calling the address bad.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to publish. Built from the environment by [`KafkaSettings::from_lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `KAFKA_BROKERS`: the bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// `KAFKA_TOPIC_PREFIX` (default `mykey`): topics are `<prefix>.<category>`.
    pub topic_prefix: String,
    /// `KAFKA_PARTITIONS` (default 6): partitions of each topic the relay creates.
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR` (default: the broker's own default). Only used when the relay
    /// creates a topic.
    pub replication_factor: Option<i32>,
}

/// A `KAFKA_*` variable that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is not valid: {reason}")]
pub struct KafkaConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl KafkaSettings {
    /// Settings for `brokers` with every other value at its default.
    pub fn new(brokers: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            partitions: DEFAULT_PARTITIONS,
            replication_factor: None,
        }
    }

    /// `None` when `KAFKA_BROKERS` is unset or blank: the deployment runs without Kafka.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<KafkaSettings>, KafkaConfigError> {
        let Some(brokers) = get("KAFKA_BROKERS").filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let bad = |name: &'static str, value: &str, reason: &str| KafkaConfigError {
            name,
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let brokers = brokers.trim().to_owned();
        if brokers
            .split(',')
            .any(|b| b.trim().is_empty() || !b.contains(':'))
        {
            return Err(bad(
                "KAFKA_BROKERS",
                &brokers,
                "expected host:port[,host:port...]",
            ));
        }
        let mut settings = KafkaSettings::new(brokers);
        if let Some(prefix) = get("KAFKA_TOPIC_PREFIX") {
            let ok = !prefix.is_empty()
                && prefix.len() <= MAX_TOPIC_PREFIX_LEN
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(bad(
                    "KAFKA_TOPIC_PREFIX",
                    &prefix,
                    "expected 1 to 100 characters of [A-Za-z0-9._-]",
                ));
            }
            settings.topic_prefix = prefix;
        }
        if let Some(raw) = get("KAFKA_PARTITIONS") {
            settings.partitions = raw
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|p| (1..=MAX_PARTITIONS).contains(p))
                .ok_or_else(|| bad("KAFKA_PARTITIONS", &raw, "expected an integer 1..=1000"))?;
        }
        if let Some(raw) = get("KAFKA_REPLICATION_FACTOR") {
            let factor = raw
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|f| (1..=i32::from(i16::MAX)).contains(f))
                .ok_or_else(|| {
                    bad(
                        "KAFKA_REPLICATION_FACTOR",
                        &raw,
                        "expected a positive integer",
                    )
                })?;
            settings.replication_factor = Some(factor);
        }
        Ok(Some(settings))
    }
}

/// Why the relay cannot start or had to stop publishing (it retries the latter).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("Kafka brokers {brokers:?} did not answer within {timeout:?}: {reason}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        reason: String,
    },
    #[error("Kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("cannot create topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("the broker did not acknowledge position {position}: {reason}")]
    Delivery { position: u64, reason: String },
    #[error("relay position in PostgreSQL: {0}")]
    Database(String),
    #[error("the event log: {0}")]
    Store(#[from] mykey_store::StoreError),
    #[error("registering relay metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> Result<Option<KafkaSettings>, KafkaConfigError> {
        KafkaSettings::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn no_brokers_means_no_kafka() {
        assert_eq!(lookup(&[]), Ok(None));
        assert_eq!(lookup(&[("KAFKA_BROKERS", "  ")]), Ok(None));
    }

    #[test]
    fn defaults_and_overrides() {
        let s = lookup(&[("KAFKA_BROKERS", "k1:9092,k2:9092")]);
        assert_eq!(s, Ok(Some(KafkaSettings::new("k1:9092,k2:9092"))));
        let s = lookup(&[
            ("KAFKA_BROKERS", "k1:9092"),
            ("KAFKA_TOPIC_PREFIX", "test.x-1"),
            ("KAFKA_PARTITIONS", "3"),
            ("KAFKA_REPLICATION_FACTOR", "3"),
        ]);
        let want = KafkaSettings {
            brokers: "k1:9092".into(),
            topic_prefix: "test.x-1".into(),
            partitions: 3,
            replication_factor: Some(3),
        };
        assert_eq!(s, Ok(Some(want)));
    }

    #[test]
    fn each_bad_value_is_refused_by_name() {
        for (vars, name) in [
            (vec![("KAFKA_BROKERS", "k1")], "KAFKA_BROKERS"),
            (vec![("KAFKA_BROKERS", "k1:1,")], "KAFKA_BROKERS"),
            (
                vec![("KAFKA_BROKERS", "k:1"), ("KAFKA_TOPIC_PREFIX", "a/b")],
                "KAFKA_TOPIC_PREFIX",
            ),
            (
                vec![("KAFKA_BROKERS", "k:1"), ("KAFKA_TOPIC_PREFIX", "")],
                "KAFKA_TOPIC_PREFIX",
            ),
            (
                vec![("KAFKA_BROKERS", "k:1"), ("KAFKA_PARTITIONS", "0")],
                "KAFKA_PARTITIONS",
            ),
            (
                vec![("KAFKA_BROKERS", "k:1"), ("KAFKA_PARTITIONS", "many")],
                "KAFKA_PARTITIONS",
            ),
            (
                vec![("KAFKA_BROKERS", "k:1"), ("KAFKA_REPLICATION_FACTOR", "-1")],
                "KAFKA_REPLICATION_FACTOR",
            ),
        ] {
            match lookup(&vars) {
                Err(e) => assert_eq!(e.name, name, "{vars:?}"),
                Ok(s) => panic!("{vars:?} accepted as {s:?}"),
            }
        }
    }
}
