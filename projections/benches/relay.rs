//! Kafka relay throughput and end-to-end lag against real PostgreSQL and a real broker.
//!
//! `cargo bench -p mykey-projections --bench relay`
//!
//! PostgreSQL: `MYKEY_BENCH_DATABASE_URL`, or its own database on 127.0.0.1:5432 as `postgres`
//! (created, then dropped). Kafka: `MYKEY_BENCH_KAFKA_BROKERS` (or `MYKEY_TEST_KAFKA_BROKERS`),
//! else a tansu started with `scripts/kafka-broker start` and stopped at the end.
//! `MYKEY_BENCH_SECS` (default 10) sets the load's length; `KAFKA_PARTITIONS` (default 6);
//! `MYKEY_BENCH_TASKS` (default 512) sets the appending tasks; `MYKEY_BENCH_RATE` (events/s,
//! default: as fast as the tasks go) offers a fixed load
//! instead, so the lag is measured below saturation (at saturation it is only queueing: the
//! generator, PostgreSQL, tansu, the relay and the projector share the same cores).
//!
//! The load is the append benchmark's single-event phase: tasks appending one-event commands
//! (each a `PpidIssued` of a new PPID, so a real read model can apply it). The relay runs in
//! this process and publishes to a fresh topic; a plain consumer reads it, and a Kafka
//! projector (`kafka::projector`, its own consumer group) applies it to a Kafka-mode read
//! model: the real `ppids` read model, under a name of the bench's. Prints appended events/s,
//! relay events/s during the load, how long the relay needed to drain after the load stopped,
//! the lag append (the event's `recorded_at`) → consumed, and append → committed in the
//! Kafka-mode read model: p50 and p99 from the projector's own
//! `mykey_projector_commit_delay_seconds` histogram (taken after the batch's commit;
//! interpolated within its buckets, which are fine around 500 ms), and the share of events
//! committed within 500 ms.
//!
//! It also prints the CPU each part spent per appended event during the load (this process,
//! PostgreSQL, the broker; `relay/cpu.rs`): on 2 shared cores their sum bounds what the whole
//! path can carry.
//!
//! Then the relay's own capacity: a backlog of `MYKEY_BENCH_BACKLOG` (default 500,000) events
//! is appended without a relay for it, and a relay with a fresh topic prefix publishes the
//! whole log from position 1 with nothing else running; prints events/s acknowledged by the
//! broker. (The live phase cannot show the relay's limit: there the generator is the limit.)
//! Last, the projector's own capacity: a projector in a fresh group applies everything that
//! relay published to a fresh Kafka-mode schema, with nothing else running.

use mykey_domain::ppid::{PpidAggregate, PpidEvent};
use mykey_domain::{Aggregate, Ppid, RelyingPartyId, SubjectId};
use mykey_projections::kafka::projector::{self, ProjectorOptions};
use mykey_projections::kafka::{self, KafkaSettings, DEFAULT_PARTITIONS};
use mykey_projections::models::ppids::Ppids;
use mykey_projections::{ApplyError, Change, KafkaMode, Projection, Recorded};
use mykey_schemas::{EventCodec, EventMetadata, NewEvent, StreamId};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{AppendRequest, EventStore, ExpectedVersion};
use rand::{Rng, SeedableRng};
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

#[path = "relay/capacity.rs"]
mod capacity;
#[path = "relay/cpu.rs"]
mod cpu;
#[path = "relay/lag.rs"]
mod lag;

/// Concurrent appending tasks by default (`MYKEY_BENCH_TASKS` overrides). The append benchmark
/// reaches its single-event rate with 64; here an append waits longer (the relay, the broker
/// and the projector share the cores), and 64 tasks one append each in flight offered only
/// about 13,000 events/s: the load, not the path, was the limit.
const TASKS: usize = 512;
/// The one category (topic) of the load.
const CATEGORY: &str = PpidAggregate::CATEGORY;
/// The consumer's longest fetch wait (librdkafka's default is 500 ms).
const FETCH_WAIT_MS: &str = "10";
/// How long the relay gets to publish the tail after the load stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// The real `ppids` read model in Kafka mode, under `name` (each phase fills a schema of its
/// own); every event of the load inserts one `ppid` row.
struct BenchPpids {
    name: &'static str,
}

impl BenchPpids {
    fn new(name: &'static str) -> BenchPpids {
        BenchPpids { name }
    }
}

impl Projection for BenchPpids {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        Ppids.migrations()
    }
    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        Ppids.apply(e, out)
    }
    fn categories(&self) -> &'static [&'static str] {
        &[CATEGORY]
    }
    fn kafka_mode(&self) -> KafkaMode {
        KafkaMode::PerStream
    }
}

/// Polls `reached` until it is at least `target`, at most [`DRAIN_LIMIT`] after `since`;
/// with `progress`, prints it under that label every second.
async fn reach(
    what: &str,
    since: Instant,
    target: u64,
    progress: Option<&str>,
    mut reached: impl FnMut() -> u64,
) -> Result<(), String> {
    let deadline = since + DRAIN_LIMIT;
    let mut next_report = since + Duration::from_secs(1);
    loop {
        let now = reached();
        if now >= target {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: {now} of {target} within {DRAIN_LIMIT:?}"));
        }
        if let Some(label) = progress.filter(|_| Instant::now() >= next_report) {
            say!(
                "  {:>3.0}s  {label} {now:>9}",
                since.elapsed().as_secs_f64()
            );
            next_report += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn request(rng: &mut impl Rng) -> Result<AppendRequest, String> {
    let ppid = Ppid::from_uuid(uuid::Uuid::from_u128(rng.gen()));
    let relying_party = RelyingPartyId::parse("bench-131016").map_err(|e| e.to_string())?;
    let encoded = PpidAggregate::encode(&PpidEvent::Issued {
        ppid: ppid.clone(),
        subject: SubjectId(uuid::Uuid::from_u128(rng.gen())),
        relying_party,
    })
    .map_err(|e| e.to_string())?;
    let stream = StreamId::new(CATEGORY, &ppid).map_err(|e| e.to_string())?;
    Ok(AppendRequest::single(
        stream,
        ExpectedVersion::Any,
        vec![NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: encoded.event_type.to_owned(),
            schema_version: encoded.schema_version,
            payload: encoded.payload,
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

async fn run(config: tokio_postgres::Config, brokers: String) -> Result<(), String> {
    let secs: u64 = std::env::var("MYKEY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rate: Option<f64> = std::env::var("MYKEY_BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|r: &f64| *r > 0.0);
    let tasks_n: usize = std::env::var("MYKEY_BENCH_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(TASKS);
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
    let relay = kafka::start(store.clone(), config.clone(), settings.clone(), &registry)
        .await
        .map_err(|e| e.to_string())?;
    let bench_projection: Arc<dyn Projection> = Arc::new(BenchPpids::new("bench_ppids"));
    let projector = projector::start(
        config.clone(),
        settings.clone(),
        &[bench_projection],
        ProjectorOptions::default(),
        &registry,
    )
    .await
    .map_err(|e| e.to_string())?;
    // The topic exists once the relay published the first event.
    store
        .append(request(&mut rand::rngs::StdRng::seed_from_u64(0))?)
        .await
        .map_err(|e| e.to_string())?;
    let since = Instant::now();
    let acknowledged = || u64::try_from(relay.metrics().acknowledged_position.get()).unwrap_or(0);
    reach("the relay's first event", since, 1, None, acknowledged).await?;
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let consumer = tokio::spawn(lag::consume(
        settings.clone(),
        stop_consumer.clone(),
        consumed.clone(),
    ));
    // Both readers hold their partitions before the load starts: otherwise the first half
    // second of the load waits for the consumer's and the group's start-up, and that is what
    // their p99 would show.
    let metrics = projector.metrics().clone();
    let applied = || metrics.applied.get();
    reach("the projector's first event", since, 1, None, applied).await?;
    reach("the lag reader's first event", since, 1, None, || {
        consumed.load(Ordering::Relaxed)
    })
    .await?;

    say!(
        "== relay: {tasks_n} tasks appending single-event commands for {secs} s, {partitions} \
         partitions, offered rate {}",
        rate.map_or("unlimited".to_owned(), |r| format!("{r:.0} events/s"))
    );
    let published_before = relay.metrics().published.get();
    let written = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu::Cpu::now();
    let start = Instant::now();
    let load_end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..tasks_n {
        let (store, written) = (store.clone(), written.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64 + 1);
            // Each task offers its share of the rate on a fixed grid: a late append skips its
            // missed ticks rather than bunching them, and a tick the timer fires a little late
            // (its resolution is 1 ms) does not shift the ones after it, which took the
            // offered 20,000/s down to 19,200/s.
            let mut pace = rate.map(|r| {
                let mut i = tokio::time::interval(Duration::from_secs_f64(tasks_n as f64 / r));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                i
            });
            while Instant::now() < load_end {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
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
    let cpu_during = cpu::Cpu::now().report(&cpu_before, written.load(Ordering::Relaxed));
    let published_during = relay.metrics().published.get() - published_before;
    let head = store.head().await.map_err(|e| e.to_string())?;
    let drain_start = Instant::now();
    reach(
        "the relay to catch up",
        drain_start,
        head,
        None,
        acknowledged,
    )
    .await?;
    let drain = drain_start.elapsed();
    reach("the lag reader", drain_start, head, None, || {
        consumed.load(Ordering::Relaxed)
    })
    .await?;
    reach("the projector", drain_start, head, None, applied).await?;
    // Stopped before its figures are read: the last batch's delays are observed after the
    // count that says it is applied.
    projector.stop().await.map_err(|e| e.to_string())?;
    let delays = lag::Delays::of(&metrics.commit_delay);
    let batches = metrics.batches.get();
    let applying = metrics.apply_seconds.get_sample_sum();
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
        lag::percentile(&lags, 0.50),
        lag::percentile(&lags, 0.99),
        lag::percentile(&lags, 1.0),
    );
    say!(
        "RESULT projector: append -> committed in the Kafka-mode read model p50 {:.0} ms, \
         p99 {:.0} ms, {:.2} % within 500 ms ({} events in {} batches; {:.2} s applying, \
         {:.1} ms per batch)",
        delays.quantile(0.50) * 1e3,
        delays.quantile(0.99) * 1e3,
        delays.share_within(0.5) * 100.0,
        head,
        batches,
        applying,
        applying * 1e3 / batches.max(1) as f64,
    );
    say!("RESULT load: {cpu_during}");
    relay.stop().await;
    let (published, head) = capacity::capacity(&store, config.clone(), settings).await?;
    capacity::projector_capacity(config, published, head).await
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
