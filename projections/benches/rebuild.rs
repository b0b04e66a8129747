//! Projection benchmarks against a real PostgreSQL (a database of its own, dropped at the end).
//!
//! ```text
//! cargo bench -p mykey-projections --bench rebuild            # rebuild rate per projection
//! cargo bench -p mykey-projections --bench rebuild -- lag     # lag while appends run
//! ```
//! - **rebuild**: appends `MYKEY_BENCH_EVENTS` events (default 1,000,000; 100 per append), then
//!   rebuilds each projection of `models::all()` (a counting test projection when that is
//!   empty) from position 1 and prints events/s. Target: ≥ 50,000 events/s per projection.
//! - **lag**: runs the projections while single-event appends run for `MYKEY_BENCH_SECONDS`
//!   (default 30) from `MYKEY_BENCH_WRITERS` tasks (default 256), and samples the time from the
//!   newest append's acknowledgement to its visibility in each projection (`wait_for`); prints the
//!   append rate and lag p50/p99. Target: p99 ≤ 200 ms at ≥ 20,000 appends/s.
//!
//! - `-- noop` (with either): a projection that reads no category, i.e. the runner's own ceiling
//!   (reading the log, committing checkpoints).
//!
//! `MYKEY_BENCH_DATABASE_URL` says where PostgreSQL is (default 127.0.0.1:5432 as postgres).

use mykey_domain::ids::{Ppid, RelyingPartyId, SubjectId};
use mykey_domain::maintenance::{Maintenance, MaintenanceEvent};
use mykey_domain::ppid::{PpidAggregate, PpidEvent, RevokedBy};
use mykey_domain::Aggregate;
use mykey_projections::runner::{self, RunnerOptions};
use mykey_projections::{ApplyError, Change, Projection, Projections, Recorded};
use mykey_schemas::{EventCodec, EventMetadata, NewEvent, StreamId};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{AppendRequest, EventStore, ExpectedVersion, StreamAppend};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_EVENTS: u64 = 1_000_000;
const DEFAULT_SECONDS: u64 = 30;
const DEFAULT_WRITERS: usize = 256;
/// Events per append while generating (the log's fastest append size).
const APPEND_SIZE: u64 = 100;
/// Concurrent appenders while generating.
const GENERATORS: u64 = 8;
/// How often the lag sampler takes a sample.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// A sample that takes longer than this counts as this (and says the target is missed).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let lag = std::env::args().skip(1).any(|a| a == "lag");
    let admin = tokio_postgres::Config::from_str(
        &std::env::var("MYKEY_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into()),
    )?;
    let name = format!("mykey_bench_{}", Uuid::new_v4().simple());
    execute(&admin, &format!("CREATE DATABASE {name}")).await?;
    let mut config = admin.clone();
    config.dbname(&name);
    let result = if lag {
        lag_bench(&config).await
    } else {
        rebuild_bench(&config).await
    };
    execute(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await?;
    result
}

async fn execute(config: &tokio_postgres::Config, sql: &str) -> Result<(), BoxError> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.batch_execute(sql).await?;
    Ok(())
}

fn projections() -> Vec<Arc<dyn Projection>> {
    if std::env::args().skip(1).any(|a| a == "noop") {
        // The runner's own ceiling: reading the log and advancing the checkpoint.
        return vec![Arc::new(Noop)];
    }
    let all = mykey_projections::models::all();
    if all.is_empty() {
        vec![Arc::new(BenchCounts)]
    } else {
        all
    }
}

async fn rebuild_bench(config: &tokio_postgres::Config) -> Result<(), BoxError> {
    let events = env_or("MYKEY_BENCH_EVENTS", DEFAULT_EVENTS);
    let store = PgEventStore::connect(config.clone(), PgStoreOptions::default()).await?;
    let started = Instant::now();
    generate(&store, events).await?;
    println!(
        "generated {events} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let options = RunnerOptions {
        retire_grace: Duration::ZERO,
        ..RunnerOptions::default()
    };
    for projection in projections() {
        let name = projection.name();
        let report = runner::rebuild(&store, config, projection, &options, |_| {}).await?;
        let rate = report.events_per_second();
        println!(
            "rebuild {name}: {} events in {:.2}s = {rate:.0} events/s (target >= 50000: {})",
            report.position,
            report.elapsed.as_secs_f64(),
            if rate >= 50_000.0 { "met" } else { "MISSED" }
        );
    }
    Ok(())
}

async fn lag_bench(config: &tokio_postgres::Config) -> Result<(), BoxError> {
    let seconds = env_or("MYKEY_BENCH_SECONDS", DEFAULT_SECONDS);
    let writers = env_or("MYKEY_BENCH_WRITERS", DEFAULT_WRITERS);
    let store = PgEventStore::connect(config.clone(), PgStoreOptions::default()).await?;
    let running = Projections::start(
        store.clone(),
        config.clone(),
        projections(),
        &prometheus::Registry::new(),
        RunnerOptions::default(),
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    // The newest acknowledged position and when it was acknowledged: lag is measured from there.
    let acknowledged = Arc::new(Mutex::new((0u64, Instant::now())));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, stop, appended, acknowledged) = (
            store.clone(),
            stop.clone(),
            appended.clone(),
            acknowledged.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w as u64;
            while !stop.load(Ordering::Relaxed) {
                let outcome = store.append(request(i, 1)?).await?;
                appended.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let mut newest = acknowledged.lock().unwrap_or_else(|p| p.into_inner());
                if outcome.last_position > newest.0 {
                    *newest = (outcome.last_position, now);
                }
                i += writers as u64;
            }
            Ok::<(), BoxError>(())
        }));
    }
    let names: Vec<&'static str> = projections().iter().map(|p| p.name()).collect();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let (position, acked_at) = *acknowledged.lock().unwrap_or_else(|p| p.into_inner());
        if position > 0 {
            for (k, name) in names.iter().enumerate() {
                let _ = running.wait_for(name, position, SAMPLE_TIMEOUT).await;
                samples[k].push(acked_at.elapsed());
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        t.await??;
    }
    let rate = appended.load(Ordering::Relaxed) as f64 / elapsed;
    println!("single-event appends: {rate:.0}/s over {elapsed:.1}s with {writers} writers (target >= 20000)");
    for (name, mut s) in names.into_iter().zip(samples) {
        s.sort();
        let pct = |p: f64| {
            s.get(((s.len() as f64 * p) as usize).min(s.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "lag {name}: p50 {:.1} ms, p99 {:.1} ms over {} samples (target p99 <= 200 ms: {})",
            pct(0.50),
            pct(0.99),
            s.len(),
            if pct(0.99) <= 200.0 { "met" } else { "MISSED" }
        );
    }
    running.shutdown().await;
    Ok(())
}

/// Appends `count` events, [`APPEND_SIZE`] per append, from [`GENERATORS`] tasks.
async fn generate(store: &PgEventStore, count: u64) -> Result<(), BoxError> {
    let appends = count.div_ceil(APPEND_SIZE);
    let mut tasks = Vec::new();
    for g in 0..GENERATORS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut a = g;
            while a < appends {
                let first = a * APPEND_SIZE;
                let size = APPEND_SIZE.min(count - first);
                store.append(request(first, size)?).await?;
                a += GENERATORS;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Events `first..first + size` of the workload in one append. Each group of four is one
/// PPID's life (issued, then revoked by either party or invalidated by a patch) and a
/// cancelled maintenance notice.
fn request(first: u64, size: u64) -> Result<AppendRequest, BoxError> {
    let mut streams: Vec<StreamAppend> = Vec::new();
    for i in first..first + size {
        let ppid = Ppid::from_uuid(Uuid::from_u128(u128::from(i / 4) + 1));
        let (category, id, encoded) = match i % 4 {
            0 => (
                PpidAggregate::CATEGORY,
                ppid.to_string(),
                PpidAggregate::encode(&PpidEvent::Issued {
                    ppid: ppid.clone(),
                    subject: SubjectId(Uuid::from_u128(u128::from(i % 1_000) + 1)),
                    relying_party: RelyingPartyId::parse(&format!("bench-rp-{}", i % 16))?,
                })?,
            ),
            1 => (
                PpidAggregate::CATEGORY,
                ppid.to_string(),
                PpidAggregate::encode(&PpidEvent::Revoked {
                    by: if i % 8 == 1 {
                        RevokedBy::Citizen
                    } else {
                        RevokedBy::RelyingParty
                    },
                })?,
            ),
            2 => (
                PpidAggregate::CATEGORY,
                format!("{ppid}x"),
                PpidAggregate::encode(&PpidEvent::Invalidated {
                    patch_id: Uuid::from_u128(u128::from(i)),
                    reason: "bench".into(),
                })?,
            ),
            _ => (
                Maintenance::CATEGORY,
                format!("bench{}", i / 4),
                Maintenance::encode(&MaintenanceEvent::Cancelled {
                    reason: "bench".into(),
                })?,
            ),
        };
        let stream = StreamId::new(category, id)?;
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: encoded.event_type.to_owned(),
            schema_version: encoded.schema_version,
            payload: encoded.payload,
        };
        match streams.iter_mut().find(|s| s.stream == stream) {
            Some(s) => s.events.push(event),
            None => streams.push(StreamAppend {
                stream,
                expected: ExpectedVersion::Any,
                events: vec![event],
            }),
        }
    }
    let id = Uuid::new_v4();
    Ok(AppendRequest {
        metadata: EventMetadata {
            actor_id: "bench".into(),
            actor_role: "system".into(),
            command_id: id,
            correlation_id: id,
            causation_id: id,
            patch_id: None,
            client_addr: None,
        },
        streams,
    })
}

/// Stands in when `models::all()` is empty: one row per event, like most read models (one row
/// per entity, written by key).
#[derive(Debug)]
struct BenchCounts;

impl Projection for BenchCounts {
    fn name(&self) -> &'static str {
        "bench_rows"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        &["CREATE TABLE seen (position bigint PRIMARY KEY, event_type text NOT NULL)"]
    }
    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        let position = i64::try_from(e.envelope.global_position).unwrap_or(i64::MAX);
        out.push(Change::new(
            "INSERT INTO seen VALUES ($1, $2)",
            vec![position.into(), e.envelope.event_type.as_str().into()],
        ));
        Ok(())
    }
}

/// Reads no category: measures everything but the projection's own statements.
#[derive(Debug)]
struct Noop;

impl Projection for Noop {
    fn name(&self) -> &'static str {
        "bench_noop"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        &[]
    }
    fn categories(&self) -> &'static [&'static str] {
        &[]
    }
    fn apply(&self, _: Recorded<'_>, _: &mut Vec<Change>) -> Result<(), ApplyError> {
        Ok(())
    }
}
