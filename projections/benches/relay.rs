//! Kafka relay throughput and end-to-end lag against real PostgreSQL and a real broker.
//!
//! `cargo bench -p mykey-projections --bench relay`
//!
//! PostgreSQL: `MYKEY_BENCH_DATABASE_URL`, or its own database on 127.0.0.1:5432 as `postgres`
//! (created, then dropped). Kafka: `MYKEY_BENCH_KAFKA_BROKERS` (or `MYKEY_TEST_KAFKA_BROKERS`),
//! else a tansu started with `scripts/kafka-broker start` and stopped at the end.
//! `MYKEY_BENCH_SECS` (default 10) sets the load's length; `KAFKA_PARTITIONS` (default 6).
//!
//! The load is the append benchmark's single-event phase: 64 tasks appending one-event commands
//! to random streams. The relay runs in this process and publishes to a fresh topic; a consumer
//! reads it. Prints appended events/s, relay events/s during the load, how long the relay
//! needed to drain after the load stopped, and the lag append (the event's `recorded_at`) →
//! consumed, p50/p99/max.

use mykey_projections::kafka::{self, message, KafkaSettings, DEFAULT_PARTITIONS};
use mykey_schemas::{EventMetadata, NewEvent, StreamId};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{AppendRequest, EventStore, ExpectedVersion};
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Concurrent appending tasks, as in `store/benches/append.rs`.
const TASKS: usize = 64;
/// Distinct streams the tasks pick from.
const STREAMS: u32 = 10_000;
/// The one category (topic) of the load.
const CATEGORY: &str = "bench";
/// The consumer's longest fetch wait (librdkafka's default is 500 ms).
const FETCH_WAIT_MS: &str = "10";
/// How long the relay gets to publish the tail after the load stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

fn request(rng: &mut impl Rng) -> Result<AppendRequest, String> {
    let stream = StreamId::new(CATEGORY, rng.gen_range(0..STREAMS)).map_err(|e| e.to_string())?;
    Ok(AppendRequest::single(
        stream,
        ExpectedVersion::Any,
        vec![NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "BenchHappened".into(),
            schema_version: 1,
            payload: format!(
                "{{\"ppid\":\"{}\",\"rp\":\"131016\"}}",
                uuid::Uuid::new_v4()
            ),
        }],
        EventMetadata {
            actor_id: "bench".into(),
            actor_role: "system".into(),
            command_id: uuid::Uuid::now_v7(),
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: uuid::Uuid::new_v4(),
            patch_id: None,
            client_addr: None,
        },
    ))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)])
}

/// Reads the topic from the beginning until told to stop; returns each message's lag in ms.
async fn consume(
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
        let event = message::decode(m.payload()).map_err(|e| e.to_string())?;
        let lag = (chrono::Utc::now() - event.recorded_at).num_milliseconds();
        lags.push(u32::try_from(lag.max(0)).unwrap_or(u32::MAX));
        consumed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(lags)
}

async fn run(config: tokio_postgres::Config, brokers: String) -> Result<(), String> {
    let secs: u64 = std::env::var("MYKEY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let partitions = std::env::var("KAFKA_PARTITIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_PARTITIONS);
    let settings = KafkaSettings {
        brokers,
        topic_prefix: format!("bench{}", uuid::Uuid::new_v4().simple()),
        partitions,
        replication_factor: None,
    };
    let store = PgEventStore::connect(config.clone(), PgStoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let registry = prometheus::Registry::new();
    let relay = kafka::start(store.clone(), config, settings.clone(), &registry)
        .await
        .map_err(|e| e.to_string())?;
    // The topic exists once the relay published the first event.
    store
        .append(request(&mut rand::rngs::StdRng::seed_from_u64(0))?)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + DRAIN_LIMIT;
    while relay.metrics().acknowledged_position.get() < 1 {
        if Instant::now() > deadline {
            return Err("the relay published nothing".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let consumer = tokio::spawn(consume(
        settings.clone(),
        stop_consumer.clone(),
        consumed.clone(),
    ));

    say!("== relay: {TASKS} tasks appending single-event commands for {secs} s, {partitions} partitions");
    let published_before = relay.metrics().published.get();
    let written = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let load_end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, written) = (store.clone(), written.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64 + 1);
            while Instant::now() < load_end {
                store
                    .append(request(&mut rng)?)
                    .await
                    .map_err(|e| e.to_string())?;
                written.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    let progress = {
        let (written, metrics, consumed) =
            (written.clone(), relay.metrics().clone(), consumed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            loop {
                tick.tick().await;
                say!(
                    "  {:>3.0}s  appended {:>9}  published {:>9}  consumed {:>9}  lag {:>7} events",
                    start.elapsed().as_secs_f64(),
                    written.load(Ordering::Relaxed),
                    metrics.published.get(),
                    consumed.load(Ordering::Relaxed),
                    metrics.lag_events.get()
                );
            }
        })
    };
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let load_secs = start.elapsed().as_secs_f64();
    let published_during = relay.metrics().published.get() - published_before;
    let head = store.head().await.map_err(|e| e.to_string())?;
    let drain_start = Instant::now();
    let deadline = drain_start + DRAIN_LIMIT;
    while relay.metrics().acknowledged_position.get() < i64::try_from(head).unwrap_or(i64::MAX) {
        if Instant::now() > deadline {
            return Err(format!("the relay did not catch up within {DRAIN_LIMIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = drain_start.elapsed();
    while consumed.load(Ordering::Relaxed) < head {
        if Instant::now() > deadline {
            return Err("the consumer did not see every event".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    progress.abort();
    stop_consumer.store(true, Ordering::Relaxed);
    let mut lags = consumer.await.map_err(|e| e.to_string())??;
    lags.sort_unstable();
    let appended = written.load(Ordering::Relaxed);
    let total_secs = load_secs + drain.as_secs_f64();
    say!(
        "RESULT relay: appended {:.0} events/s; relay published {:.0} events/s during the load, \
         {:.0} events/s overall ({} events, drained {:.2} s after the load); \
         lag append -> consumed p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        appended as f64 / load_secs,
        published_during as f64 / load_secs,
        head as f64 / total_secs,
        head,
        drain.as_secs_f64(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
    );
    relay.stop().await;
    Ok(())
}

async fn admin() -> Result<tokio_postgres::Client, String> {
    let config = tokio_postgres::Config::from_str("host=127.0.0.1 port=5432 user=postgres")
        .map_err(|e| e.to_string())?;
    let (client, conn) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

/// A broker address, and the pid of the broker this benchmark started (to stop at the end).
fn broker() -> Result<(String, Option<String>), String> {
    for var in ["MYKEY_BENCH_KAFKA_BROKERS", "MYKEY_TEST_KAFKA_BROKERS"] {
        if let Some(b) = std::env::var(var).ok().filter(|b| !b.trim().is_empty()) {
            return Ok((b, None));
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-broker");
    let out = std::process::Command::new(script)
        .arg("start")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{script}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("export {name}="))
                .map(str::to_owned)
        })
    };
    match (
        value("MYKEY_TEST_KAFKA_BROKERS"),
        value("MYKEY_KAFKA_BROKER_PID"),
    ) {
        (Some(b), pid) if out.status.success() => Ok((b, pid)),
        _ => Err(format!("{script} start did not start a broker")),
    }
}

async fn with_database(brokers: String) -> Result<(), String> {
    if let Ok(url) = std::env::var("MYKEY_BENCH_DATABASE_URL") {
        let config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| format!("MYKEY_BENCH_DATABASE_URL: {e}"))?;
        return run(config, brokers).await;
    }
    let name = format!("mykey_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = admin()
        .await
        .map_err(|e| format!("cannot reach 127.0.0.1:5432 as postgres: {e}"))?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| format!("create {name}: {e}"))?;
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(5432)
        .user("postgres")
        .dbname(&name);
    let result = run(config, brokers).await;
    if let Err(e) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("warning: could not drop {name}: {e}");
    }
    result
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match broker() {
        Err(e) => Err(e),
        Ok((brokers, pid)) => {
            let r = with_database(brokers).await;
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill").arg(&pid).status();
            }
            r
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
