//! The Kafka relay against a real broker (tansu; see `kafka/broker.rs` for where it comes
//! from). Each test has its own database, its own topic prefix and its own consumer group.

pub(crate) mod broker;
pub(crate) mod consumer;

use broker::Broker;
use consumer::{check, consume};
use mykey_projections::kafka::{self, KafkaSettings, RelayError};
use mykey_schemas::{EventMetadata, NewEvent, StreamId};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{AppendRequest, EventStore, ExpectedVersion};
use mykey_tests::{eventually, TestDb};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

/// Partitions of the tests' topics: several, so streams interleave across partitions.
const PARTITIONS: i32 = 3;
/// The categories the load writes (two topics).
const CATEGORIES: [&str; 2] = ["load", "other"];
/// Streams per category the load spreads over.
const STREAMS: usize = 20;
/// Bound on waiting for the relay to catch up or a consumer to see everything.
const CATCH_UP: Duration = Duration::from_secs(60);

fn settings(broker: &Broker) -> KafkaSettings {
    KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: format!("t{}", Uuid::new_v4().simple()),
        partitions: PARTITIONS,
        replication_factor: None,
    }
}

async fn store(db: &TestDb) -> PgEventStore {
    PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("store: {e}"))
}

fn one_event(n: u64) -> AppendRequest {
    let category = CATEGORIES[(n % 2) as usize];
    let stream = StreamId::new(category, (n / 2) % STREAMS as u64)
        .unwrap_or_else(|e| panic!("stream id: {e}"));
    AppendRequest::single(
        stream,
        ExpectedVersion::Any,
        vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "LoadHappened".into(),
            schema_version: 1,
            payload: format!("{{\"n\":{n}, \"note\":\"stored as written\"}}"),
        }],
        EventMetadata {
            actor_id: "kafka-test".into(),
            actor_role: "system".into(),
            command_id: Uuid::now_v7(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            patch_id: None,
            client_addr: None,
        },
    )
}

/// Appends `count` single-event commands from `tasks` concurrent tasks.
async fn append(store: &PgEventStore, tasks: u64, count: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, next) = (store.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                if let Err(e) = store.append(one_event(n)).await {
                    panic!("append: {e}");
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap_or_else(|e| panic!("append task: {e}"));
    }
}

/// Appends continuously (a few tasks) until stopped: commands keep arriving during faults.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    fn start(store: &PgEventStore, tasks: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let tasks = (0..tasks)
            .map(|_| {
                let (store, stop, next) = (store.clone(), stop.clone(), next.clone());
                tokio::spawn(async move {
                    let mut done = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = store.append(one_event(n)).await {
                            panic!("append during the test: {e}");
                        }
                        done += 1;
                        // Keep the load moderate: the point is a steady stream, not a benchmark.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    done
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops appending; returns how many commands were accepted.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for t in self.tasks {
            total += t.await.unwrap_or_else(|e| panic!("load task: {e}"));
        }
        total
    }
}

async fn relay_position(db: &TestDb, prefix: &str) -> u64 {
    let row = db
        .client()
        .await
        .query_opt(
            "SELECT position FROM relay_position WHERE topic_prefix = $1",
            &[&prefix],
        )
        .await
        .unwrap_or_else(|e| panic!("relay_position: {e}"));
    row.map_or(0, |r| r.get::<_, i64>(0) as u64)
}

/// Waits until the relay's stored position reaches the log's head.
async fn caught_up(db: &TestDb, store: &PgEventStore, prefix: &str) -> u64 {
    let head = store.head().await.unwrap_or_else(|e| panic!("head: {e}"));
    eventually("the relay to catch up", CATCH_UP, || async {
        (relay_position(db, prefix).await >= head).then_some(())
    })
    .await;
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_kafka_once_in_stream_order_with_headers_and_chain() {
    let broker = Broker::shared().await;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let settings = settings(&broker);
    let registry = prometheus::Registry::new();
    let relay = kafka::start(store.clone(), db.config(), settings.clone(), &registry)
        .await
        .unwrap_or_else(|e| panic!("relay: {e}"));
    append(&store, 16, 2_000).await;
    let head = caught_up(&db, &store, &settings.topic_prefix).await;
    assert_eq!(head, 2_000);
    let received = consume(&settings, head).await;
    let duplicates = check(&received, &settings, head);
    assert!(
        duplicates.is_empty(),
        "no fault, yet duplicates: {duplicates:?}"
    );
    // The lag gauges are recomputed periodically: they reach 0 soon after the relay caught up.
    eventually("no lag", CATCH_UP, || async {
        (relay.metrics().lag_events.get() == 0 && relay.metrics().lag_seconds.get() == 0)
            .then_some(())
    })
    .await;
    relay.stop().await;
}

/// The test relay process; returns it and a reader of its state lines.
fn spawn_relay(
    db: &TestDb,
    settings: &KafkaSettings,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kafka_relay"))
        .env("DATABASE_URL", db.url())
        .env("KAFKA_BROKERS", &settings.brokers)
        .env("KAFKA_TOPIC_PREFIX", &settings.topic_prefix)
        .env("KAFKA_PARTITIONS", settings.partitions.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn kafka_relay: {e}"));
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("kafka_relay has no stdout"));
    (child, tokio::io::BufReader::new(stdout).lines())
}

/// Waits for the relay process to print `want`.
async fn expect_state(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    want: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) if line == want => return,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the relay process ended before printing {want}"),
            Ok(Err(e)) => panic!("reading the relay process: {e}"),
            Err(_) => panic!("the relay process did not print {want} within {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_flight_resumes_with_only_the_unacknowledged_tail_repeated() {
    let broker = Broker::shared().await;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let settings = settings(&broker);
    let (mut first, mut lines) = spawn_relay(&db, &settings);
    expect_state(&mut lines, "leading", CATCH_UP).await;
    let load = Load::start(&store, 8);
    eventually("the relay to publish a first part", CATCH_UP, || async {
        (relay_position(&db, &settings.topic_prefix).await >= 300).then_some(())
    })
    .await;
    first.start_kill().unwrap_or_else(|e| panic!("kill: {e}"));
    first.wait().await.unwrap_or_else(|e| panic!("wait: {e}"));
    let at_kill = relay_position(&db, &settings.topic_prefix).await;
    let head_at_kill = store.head().await.unwrap_or_else(|e| panic!("head: {e}"));
    assert!(head_at_kill > at_kill, "the kill should land mid-flight");
    // Commands go on while no relay runs.
    eventually("more appends", CATCH_UP, || async {
        (store.head().await.unwrap_or(0) >= head_at_kill + 200).then_some(())
    })
    .await;
    let (_second, mut lines) = spawn_relay(&db, &settings);
    expect_state(&mut lines, "leading", CATCH_UP).await;
    load.stop().await;
    let head = caught_up(&db, &store, &settings.topic_prefix).await;
    let received = consume(&settings, head).await;
    let duplicates = check(&received, &settings, head);
    assert!(
        duplicates.iter().all(|&p| p > at_kill),
        "a position acknowledged before the kill ({at_kill}) was sent again: {duplicates:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_one_at_a_time_and_the_second_takes_over() {
    let broker = Broker::shared().await;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let settings = settings(&broker);
    let (mut a, mut a_lines) = spawn_relay(&db, &settings);
    expect_state(&mut a_lines, "leading", CATCH_UP).await;
    let (_b, mut b_lines) = spawn_relay(&db, &settings);
    expect_state(&mut b_lines, "standby", CATCH_UP).await;
    append(&store, 8, 500).await;
    caught_up(&db, &store, &settings.topic_prefix).await;
    // B stayed in standby all along: it printed nothing since.
    let quiet = tokio::time::timeout(Duration::from_millis(200), b_lines.next_line()).await;
    assert!(quiet.is_err(), "the standby relay changed state: {quiet:?}");

    a.start_kill().unwrap_or_else(|e| panic!("kill: {e}"));
    a.wait().await.unwrap_or_else(|e| panic!("wait: {e}"));
    expect_state(&mut b_lines, "leading", CATCH_UP).await;
    append(&store, 8, 500).await;
    let head = caught_up(&db, &store, &settings.topic_prefix).await;
    assert_eq!(head, 1_000);
    let received = consume(&settings, head).await;
    check(&received, &settings, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_loses_its_database_connection_backs_off_and_resumes() {
    let broker = Broker::shared().await;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let settings = settings(&broker);
    let registry = prometheus::Registry::new();
    let relay = kafka::start(store.clone(), db.config(), settings.clone(), &registry)
        .await
        .unwrap_or_else(|e| panic!("relay: {e}"));
    append(&store, 4, 200).await;
    caught_up(&db, &store, &settings.topic_prefix).await;
    // The connection holding the lock and writing the position goes away.
    let killed: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'mykey-relay' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("terminate: {e}"))
        .get(0);
    assert_eq!(killed, 1);
    eventually("the relay to notice", CATCH_UP, || async {
        (relay.metrics().failures.get() >= 1).then_some(())
    })
    .await;
    append(&store, 4, 200).await;
    let head = caught_up(&db, &store, &settings.topic_prefix).await;
    assert_eq!(head, 400);
    let received = consume(&settings, head).await;
    check(&received, &settings, head);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_under_load_records_everything_it_sent() {
    let broker = Broker::shared().await;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let settings = settings(&broker);
    let registry = prometheus::Registry::new();
    let relay = kafka::start(store.clone(), db.config(), settings.clone(), &registry)
        .await
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let load = Load::start(&store, 8);
    eventually("a first publication", CATCH_UP, || async {
        (relay_position(&db, &settings.topic_prefix).await >= 200).then_some(())
    })
    .await;
    relay.stop().await;
    load.stop().await;
    let recorded = relay_position(&db, &settings.topic_prefix).await;
    // Nothing past the recorded position reached Kafka: a successor re-sends nothing.
    let received = consume(&settings, recorded).await;
    let highest = received.iter().map(|r| r.event.global_position).max();
    assert_eq!(highest, Some(recorded));
    check(&received, &settings, recorded);
}

/// A gauge's value as the registry exposes it (text format).
fn gauge(registry: &prometheus::Registry, name: &str) -> i64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| panic!("metrics: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// How long the broker stays frozen.
const FREEZE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_loses_nothing_and_the_lag_rises_then_falls() {
    let broker = Broker::private().await;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let settings = settings(&broker);
    let registry = prometheus::Registry::new();
    let relay = kafka::start(store.clone(), db.config(), settings.clone(), &registry)
        .await
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let load = Load::start(&store, 4);
    eventually("a first publication", CATCH_UP, || async {
        (relay_position(&db, &settings.topic_prefix).await >= 100).then_some(())
    })
    .await;

    broker.signal("-STOP");
    let frozen_at = Instant::now();
    let head_before = store.head().await.unwrap_or_else(|e| panic!("head: {e}"));
    let (mut max_events, mut max_seconds) = (0, 0);
    while frozen_at.elapsed() < FREEZE {
        max_events = max_events.max(gauge(&registry, "mykey_relay_lag_events"));
        max_seconds = max_seconds.max(gauge(&registry, "mykey_relay_lag_seconds"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head_frozen = store.head().await.unwrap_or_else(|e| panic!("head: {e}"));
    broker.signal("-CONT");
    assert!(
        head_frozen > head_before + 100,
        "commands were not accepted while the broker was frozen"
    );
    assert!(max_events > 100, "lag in events did not rise: {max_events}");
    assert!(
        max_seconds >= 5,
        "lag in seconds did not rise: {max_seconds}"
    );

    load.stop().await;
    let head = caught_up(&db, &store, &settings.topic_prefix).await;
    eventually("the lag to fall", CATCH_UP, || async {
        (gauge(&registry, "mykey_relay_lag_events") == 0
            && gauge(&registry, "mykey_relay_lag_seconds") == 0)
            .then_some(())
    })
    .await;
    let received = consume(&settings, head).await;
    check(&received, &settings, head);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_kafka_brokers_runs_the_relay_and_one_without_does_not() {
    let broker = Broker::shared().await;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let kafka = settings(&broker);
    let server = |with_kafka: bool| {
        let kafka = kafka.clone();
        mykey_api::config::Settings::from_lookup(move |k| match k {
            "MYKEY_LISTEN" => Some("127.0.0.1:0".to_owned()),
            "KAFKA_BROKERS" if with_kafka => Some(kafka.brokers.clone()),
            "KAFKA_TOPIC_PREFIX" if with_kafka => Some(kafka.topic_prefix.clone()),
            "KAFKA_PARTITIONS" if with_kafka => Some(kafka.partitions.to_string()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let without = server(false);
    assert!(without.kafka.is_none());
    let _plain = mykey_api::startup::Application::build(&without, db.config())
        .await
        .unwrap_or_else(|e| panic!("server without Kafka: {e}"));
    append(&store, 4, 50).await;
    // Only a relay writes relay_position: the server without Kafka has none.
    let quiet_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet_until {
        assert_eq!(relay_position(&db, &kafka.topic_prefix).await, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _app = mykey_api::startup::Application::build(&server(true), db.config())
        .await
        .unwrap_or_else(|e| panic!("server with Kafka: {e}"));
    append(&store, 4, 50).await;
    let head = caught_up(&db, &store, &kafka.topic_prefix).await;
    let received = consume(&kafka, head).await;
    assert!(check(&received, &kafka, head).is_empty());
}

/// A bad broker address is a start-up error within seconds.
const BAD_ADDRESS_BOUND: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_bad_broker_address_is_a_startup_error_within_seconds() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    // A port nobody listens on (bound, then released), and a name that does not resolve.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    for brokers in [closed.to_string(), "no-such-broker.invalid:9092".to_owned()] {
        let started = Instant::now();
        let registry = prometheus::Registry::new();
        let result = kafka::start(
            store.clone(),
            db.config(),
            KafkaSettings::new(brokers.clone()),
            &registry,
        )
        .await;
        assert!(
            matches!(result, Err(RelayError::Unreachable { .. })),
            "{brokers}: {result:?}"
        );
        assert!(
            started.elapsed() < BAD_ADDRESS_BOUND,
            "{brokers}: took {:?}",
            started.elapsed()
        );
    }

    let settings = mykey_api::config::Settings::from_lookup(|k| match k {
        "MYKEY_LISTEN" => Some("127.0.0.1:0".to_owned()),
        "KAFKA_BROKERS" => Some(closed.to_string()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let result = mykey_api::startup::Application::build(&settings, db.config()).await;
    assert!(
        matches!(result, Err(mykey_api::startup::StartupError::Kafka(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < BAD_ADDRESS_BOUND);
}
