//! The Kafka clients the relay uses: their configuration, the start-up probe, topic creation.

use super::{KafkaSettings, RelayError, STARTUP_TIMEOUT};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// How long the producer keeps retrying one message before reporting it undeliverable
/// (`message.timeout.ms`); the relay then starts a new term from its stored position.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on creating one topic.
pub const TOPIC_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the producer waits to batch messages: small against the 500 ms lag target, long
/// enough that a steady load goes out as a few large produce requests rather than many small
/// ones (each costs the broker about as much as its messages: at 7,000 events/s, 20 ms
/// instead of 5 ms halved tansu's CPU, docs/BENCHMARKS.md).
const LINGER_MS: &str = "20";

/// Messages librdkafka may queue: never the limit, `relay::MAX_IN_FLIGHT` is.
const QUEUE_MESSAGES: usize = 2 * super::relay::MAX_IN_FLIGHT;

pub(super) fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "mykey-relay");
    config
}

pub(super) fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = base_config(settings);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // A message that fails for good stops the producer (a fatal error, which ends the
        // relay's term) instead of leaving a gap behind later messages of its partition:
        // consumers rely on positions growing within a partition but for re-sent tails.
        .set("enable.gapless.guarantee", "true")
        .set("linger.ms", LINGER_MS)
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set("queue.buffering.max.messages", QUEUE_MESSAGES.to_string());
    config
}

/// Asks the brokers for their metadata, bounded by [`STARTUP_TIMEOUT`]: a bad address is an
/// error within seconds, not a relay that waits forever.
pub async fn check_brokers(settings: &KafkaSettings) -> Result<(), RelayError> {
    let config = base_config(settings);
    let unreachable = |reason: String| RelayError::Unreachable {
        brokers: settings.brokers.clone(),
        timeout: STARTUP_TIMEOUT,
        reason,
    };
    // librdkafka's metadata call blocks its thread.
    let answer = tokio::task::spawn_blocking(move || {
        let probe: BaseProducer = config.create()?;
        probe
            .client()
            .fetch_metadata(None, STARTUP_TIMEOUT)
            .map(|m| m.brokers().len())
    })
    .await
    .map_err(|e| unreachable(e.to_string()))?;
    match answer {
        Ok(0) => Err(unreachable("no broker in the metadata".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(unreachable(e.to_string())),
    }
}

/// Creates `topic` with the configured partitions; one that already exists is fine (its
/// partition count is left as it is).
pub(super) async fn ensure_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    settings: &KafkaSettings,
) -> Result<(), RelayError> {
    // -1: the broker's default replication factor.
    let replication = TopicReplication::Fixed(settings.replication_factor.unwrap_or(-1));
    let new = NewTopic::new(topic, settings.partitions, replication);
    let options = AdminOptions::new()
        .request_timeout(Some(TOPIC_TIMEOUT))
        .operation_timeout(Some(TOPIC_TIMEOUT));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(RelayError::Topic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}
