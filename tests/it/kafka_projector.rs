//! The Kafka projector against a real broker (tansu): the Kafka-mode read models end identical
//! to the PostgreSQL-mode ones over the same log — with two projectors sharing a consumer group
//! and one killed midway, and with the relay re-sending a tail (duplicates skipped); offsets
//! are committed only for what is in the read models. Each test has its own database, topic
//! prefix and consumer group.

mod inspect;

use crate::kafka::broker::Broker;
use crate::projections::fixtures::Counts;
use inspect::{all_topics, applied, committed, count_in, last_positions, messages, topics_of};
use mykey_projections::kafka::projector::{
    self, schema_name, ProjectorHandle, ProjectorOptions, APPLIED_TABLE,
};
use mykey_projections::kafka::{self, KafkaSettings, RelayHandle};
use mykey_projections::{models, KafkaMode, Projection, Projections, RunnerOptions};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::EventStore;
use mykey_tests::{dump_tables, eventually, TestDb};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Partitions per topic: several, so streams interleave and two projectors can share them.
const PARTITIONS: i32 = 3;
/// Bound on any wait (catching up, rebalancing): finite so a bug fails the test.
const WAIT: Duration = Duration::from_secs(90);

/// A test's own database, store, topic prefix and consumer group, on the shared broker.
pub(crate) struct Setup {
    pub db: TestDb,
    pub store: PgEventStore,
    pub settings: KafkaSettings,
    pub group: String,
    _broker: Broker,
}

pub(crate) async fn setup() -> Setup {
    let broker = Broker::shared().await;
    let db = TestDb::create().await;
    let store = PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("store: {e}"));
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: format!("p{}", Uuid::new_v4().simple()),
        partitions: PARTITIONS,
        replication_factor: None,
    };
    Setup {
        db,
        store,
        settings,
        group: format!("g{}", Uuid::new_v4().simple()),
        _broker: broker,
    }
}

impl Setup {
    pub async fn relay(&self) -> RelayHandle {
        kafka::start(
            self.store.clone(),
            self.db.config(),
            self.settings.clone(),
            &prometheus::Registry::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("relay: {e}"))
    }

    async fn projector(&self) -> ProjectorHandle {
        let options = ProjectorOptions {
            group_id: Some(self.group.clone()),
            batch_max: 200,
            ..Default::default()
        };
        projector::start(
            self.db.config(),
            self.settings.clone(),
            &models::all(),
            options,
            &prometheus::Registry::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("projector: {e}"))
    }

    /// The PostgreSQL-mode runner over every read model.
    async fn runner(&self) -> Projections {
        Projections::start(
            self.store.clone(),
            self.db.config(),
            models::all(),
            &prometheus::Registry::new(),
            RunnerOptions {
                poll_interval: Duration::from_millis(100),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("runner: {e}"))
    }

    async fn append_rounds(&self, rounds: std::ops::Range<u64>) -> u64 {
        let mut last = 0;
        let requests = models::workload::batched(rounds).unwrap_or_else(|e| panic!("{e}"));
        for request in requests {
            last = self
                .store
                .append(request)
                .await
                .unwrap_or_else(|e| panic!("append: {e}"))
                .last_position;
        }
        last
    }
}

fn kafka_mode() -> Vec<Arc<dyn Projection>> {
    projector::kafka_projections(&models::all())
}

/// Waits until the PostgreSQL runner and the Kafka-mode schemas hold the whole log, then
/// checks that every Kafka-mode read model equals its PostgreSQL-mode twin.
async fn assert_identical(s: &Setup, runner: &Projections, head: u64) {
    let client = s.db.client().await;
    let all = messages(&s.settings, &all_topics(s), count_in(&client, head).await).await;
    for p in kafka_mode() {
        runner
            .wait_for(p.name(), head, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{} (PostgreSQL mode): {e}", p.name()));
        let want = last_positions(s, &*p, &all);
        eventually(
            &format!("{} (Kafka mode) to apply the log", p.name()),
            WAIT,
            || {
                let (client, p, want) = (&client, &p, &want);
                async move { (applied(client, &**p).await == *want).then_some(()) }
            },
        )
        .await;
        let pg_schema = runner
            .active_schema(p.name())
            .unwrap_or_else(|| panic!("{} has no PostgreSQL-mode schema", p.name()));
        let from_pg = dump_tables(&client, &pg_schema, &[]).await;
        let from_kafka = dump_tables(&client, &schema_name(&*p), &[APPLIED_TABLE]).await;
        assert!(
            from_pg.values().map(Vec::len).sum::<usize>() > 0,
            "{}: the workload wrote no rows",
            p.name()
        );
        assert_eq!(
            from_kafka,
            from_pg,
            "{}: Kafka-mode and PostgreSQL-mode tables differ",
            p.name()
        );
    }
}

#[test]
fn only_the_per_stream_read_models_run_from_kafka() {
    let modes: BTreeMap<&str, KafkaMode> = models::all()
        .iter()
        .map(|p| (p.name(), p.kafka_mode()))
        .collect();
    assert_eq!(modes.get("daily_counters"), Some(&KafkaMode::GlobalOrder));
    // Login's read model serves the login hot path of the server that follows the log itself.
    assert_eq!(modes.get("login_identity"), Some(&KafkaMode::GlobalOrder));
    assert_eq!(modes.get("ppids"), Some(&KafkaMode::PerStream));
    assert_eq!(
        kafka_mode().len(),
        modes.len() - 2,
        "every read model but the counters and login's: {modes:?}"
    );
}

/// Two projectors in one group share the partitions — both hold some and apply events at
/// once, their assignments disjoint; one is killed midway (its task aborted:
/// consumer, connections and any open transaction dropped without a goodbye beyond the
/// client's own); the other takes its partitions over, and the read models end identical to
/// the PostgreSQL-mode ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_one_killed_end_identical_to_postgres_mode() {
    let s = setup().await;
    let relay = s.relay().await;
    let runner = s.runner().await;
    s.append_rounds(0..3).await;
    let first = s.projector().await;
    let second = s.projector().await;
    // Both members consume at once: the group splits the partitions between them (tansu
    // 0.6 was seen to: partitions 0 and 1 of every topic to one, 2 to the other; the
    // projectors' rebalance callbacks log it, "projector assigned"), and each applies events
    // of its own partitions before one is killed.
    let (a, b) = eventually("both projectors to hold partitions", WAIT, || {
        let (a, b) = (first.status().assignment(), second.status().assignment());
        async move { (!a.is_empty() && !b.is_empty()).then_some((a, b)) }
    })
    .await;
    assert!(
        a.is_disjoint(&b),
        "two live members hold the same partitions: {a:?} and {b:?}"
    );
    s.append_rounds(3..6).await;
    eventually("both projectors to apply events", WAIT, || {
        let applied = (
            first.metrics().applied.get(),
            second.metrics().applied.get(),
        );
        async move { (applied.0 > 0 && applied.1 > 0).then_some(()) }
    })
    .await;
    let (victim, survivor) = (first, second);
    // Killed while events keep coming.
    let load = {
        let s_store = s.store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for request in models::workload::batched(6..12).unwrap_or_else(|e| panic!("{e}")) {
                last = s_store
                    .append(request)
                    .await
                    .unwrap_or_else(|e| panic!("append: {e}"))
                    .last_position;
            }
            last
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(victim);
    let head = load.await.unwrap_or_else(|e| panic!("load: {e}"));
    assert_identical(&s, &runner, head).await;
    assert!(survivor.metrics().applied.get() > 0);
    survivor
        .stop()
        .await
        .unwrap_or_else(|e| panic!("projector: {e}"));
    relay.stop().await;
    runner.shutdown().await;
}

/// The relay re-sends a tail (its stored position moved back, as after a crash before it
/// recorded the broker's acknowledgements): the projector skips every re-sent event, and the
/// read models still equal the PostgreSQL-mode ones. Meanwhile, every committed offset only
/// covers events already in the read models (sampled: the offsets are read first, then the
/// applied positions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_events_are_skipped_and_offsets_follow_the_commits() {
    let s = setup().await;
    let relay = s.relay().await;
    let runner = s.runner().await;
    let projector = s.projector().await;
    let topics = all_topics(&s);
    let load = {
        let store = s.store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for request in models::workload::batched(0..8).unwrap_or_else(|e| panic!("{e}")) {
                last = store
                    .append(request)
                    .await
                    .unwrap_or_else(|e| panic!("append: {e}"))
                    .last_position;
            }
            last
        })
    };
    let client = s.db.client().await;
    let mut samples = Vec::new();
    while !load.is_finished() || samples.len() < 3 {
        let offsets = {
            let (settings, group, topics) = (s.settings.clone(), s.group.clone(), topics.clone());
            tokio::task::spawn_blocking(move || committed(&settings, &group, &topics))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let mut positions = BTreeMap::new();
        for p in kafka_mode() {
            positions.insert(p.name(), applied(&client, &*p).await);
        }
        samples.push((offsets, positions));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head = load.await.unwrap_or_else(|e| panic!("load: {e}"));
    assert_identical(&s, &runner, head).await;

    // Every sampled committed offset covers only applied events.
    let all = messages(&s.settings, &topics, count_in(&client, head).await).await;
    let mut checked = 0;
    for (offsets, positions) in &samples {
        for ((topic, partition, offset), (stream, position)) in &all {
            let Some(next) = offsets.get(&(topic.clone(), *partition)) else {
                continue;
            };
            if offset >= next {
                continue;
            }
            checked += 1;
            for p in kafka_mode() {
                if !topics_of(&s, &*p).contains(topic) {
                    continue;
                }
                let done = positions[p.name()]
                    .get(&(topic.clone(), *partition))
                    .copied()
                    .unwrap_or(0);
                assert!(
                    done >= *position,
                    "{topic}[{partition}] offset {offset} ({stream} at {position}) was committed \
                     before {} applied it (its watermark was {done})",
                    p.name()
                );
            }
        }
    }
    assert!(checked > 0, "no committed offset was sampled");

    // The relay re-sends its last 200 events.
    relay.stop().await;
    client
        .execute(
            "UPDATE relay_position SET position = position - 200 WHERE topic_prefix = $1",
            &[&s.settings.topic_prefix],
        )
        .await
        .unwrap_or_else(|e| panic!("move the relay position back: {e}"));
    let duplicates_before = projector.metrics().duplicates.get();
    let relay = s.relay().await;
    let later = s.append_rounds(8..9).await;
    eventually("the re-sent events to be skipped", WAIT, || {
        let d = projector.metrics().duplicates.get();
        async move { (d > duplicates_before).then_some(()) }
    })
    .await;
    assert_identical(&s, &runner, later).await;
    projector
        .stop()
        .await
        .unwrap_or_else(|e| panic!("projector: {e}"));
    relay.stop().await;
    runner.shutdown().await;
}

/// The default group is the deployment's: stable for the same projections and versions, and a
/// new one when any version changes (the new schema is then filled from the topics' start,
/// never behind the old group's offsets).
#[test]
fn a_new_projection_version_is_a_new_default_group() {
    let settings = KafkaSettings {
        brokers: "127.0.0.1:9".into(),
        topic_prefix: "mykey".into(),
        partitions: PARTITIONS,
        replication_factor: None,
    };
    let counts = |version| -> Vec<Arc<dyn Projection>> {
        let mut all = kafka_mode();
        all.push(models::per_stream(Counts { version, weight: 1 }));
        all
    };
    let group = projector::default_group_id(&settings, &counts(1));
    assert!(group.starts_with("mykey.projector."), "{group}");
    assert_eq!(group, projector::default_group_id(&settings, &counts(1)));
    assert_ne!(group, projector::default_group_id(&settings, &counts(2)));
}
