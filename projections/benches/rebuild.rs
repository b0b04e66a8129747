//! Projection benchmarks against a real PostgreSQL (a database of its own, dropped at the end),
//! over the generated workload of `models::workload` (every event type, consistent with the
//! write model's rules, so the strict read models accept it).
//!
//! ```text
//! cargo bench -p mykey-projections --features workload --bench rebuild         # rebuild rates
//! cargo bench -p mykey-projections --features workload --bench rebuild -- lag  # lag under appends
//! cargo bench -p mykey-projections --features workload --bench rebuild -- lag appends
//! ```
//!
//! - **rebuild**: appends `MYKEY_BENCH_EVENTS` events (default 1,000,000; whole workload
//!   rounds in large appends, `workload::batched`), then rebuilds each projection of
//!   `models::all()` from position 1, `MYKEY_BENCH_RUNS` times (default 1), and prints each
//!   run's events/s (events of the whole log over the rebuild's time), their median, and the
//!   process's peak RSS. Target: ≥ 50,000 events/s per projection.
//! - **lag**: runs every projection while `MYKEY_BENCH_WRITERS` tasks (default 64, as the store's
//!   append bench) append the workload one command at a time (mostly one event per append, the
//!   store append bench's single-event pattern) for `MYKEY_BENCH_SECONDS` (default 30), and
//!   samples the time from the newest append's acknowledgement to its visibility in each
//!   projection's checkpoint (`wait_for`); prints the append rate and lag p50/p99. Target: p99
//!   ≤ 200 ms at ≥ 20,000 events/s.
//! - **lag appends** (`-- lag appends`): the same, but the load is the store append bench's:
//!   `MYKEY_BENCH_WRITERS` tasks append **single-event** commands (`ExpectedVersion::Any`),
//!   prepared before the clock starts from workload rounds (each round's appends split into one
//!   append per event, in order, by the one writer that owns the round, so every projection
//!   has real work and its rules hold). `MYKEY_BENCH_EVENTS` events are prepared (default
//!   `MYKEY_BENCH_SECONDS` × 25,000); a writer that runs out stops, and the run says so.
//! - `-- noop` (with either): a projection that reads no category, i.e. the runner's own ceiling
//!   (reading the log, committing checkpoints).
//! - `-- only=<name>` (with either): that projection alone.
//!
//! `MYKEY_BENCH_DATABASE_URL` says where PostgreSQL is (default 127.0.0.1:5432 as postgres).

use futures_util::future::join_all;
use mykey_projections::models::workload;
use mykey_projections::runner::{self, RunnerOptions};
use mykey_projections::{ApplyError, Change, Projection, Projections, Recorded};
use mykey_schemas::EventMetadata;
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{AppendOutcome, AppendRequest, EventStore, ExpectedVersion};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_EVENTS: u64 = 1_000_000;
const DEFAULT_RUNS: usize = 1;
const DEFAULT_SECONDS: u64 = 30;
const DEFAULT_WRITERS: usize = 64;
/// Workload rounds per generated chunk (each chunk is `workload::batched`, appended in order).
const ROUNDS_PER_CHUNK: u64 = 200;
/// Concurrent appenders while generating (rounds are independent, so chunks may interleave).
const GENERATORS: u64 = 8;
/// Events prepared per second of the run in `lag appends` mode: above what the log appends
/// on this machine, so the writers do not run out.
const PREPARED_PER_SECOND: u64 = 25_000;
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "noop") {
        // The runner's own ceiling: reading the log and advancing the checkpoint.
        return vec![Arc::new(Noop)];
    }
    let only: Vec<&str> = args
        .iter()
        .filter_map(|a| a.strip_prefix("only="))
        .collect();
    mykey_projections::models::all()
        .into_iter()
        .filter(|p| only.is_empty() || only.contains(&p.name()))
        .collect()
}

/// The process's peak resident set (`VmHWM`), in MiB, where /proc says it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) of process `pid` (`self` for this one), in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: state is the 3rd field, utime the 14th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / USER_HZ)
}

/// CPU time spent by this process and by the PostgreSQL backends serving its database while
/// it runs: on a shared machine, events per CPU-second say more than events per second. The
/// backends are sampled every 100 ms (PostgreSQL runs on this machine), so a connection that
/// lives less than that is missed; background writers are not counted.
struct CpuMeter {
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<f64>,
    own: f64,
}

impl CpuMeter {
    async fn start(config: &tokio_postgres::Config) -> Result<CpuMeter, BoxError> {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = tokio::spawn(async move {
            // pid -> (CPU when first seen, CPU when last seen).
            let mut seen: std::collections::HashMap<i32, (f64, f64)> = Default::default();
            let mut first = true;
            let mut mine = None;
            loop {
                let pids: Vec<i32> = client
                    .query(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()",
                        &[],
                    )
                    .await
                    .map(|rows| rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
                    .unwrap_or_default();
                if mine.is_none() {
                    mine = client
                        .query_one("SELECT pg_backend_pid()", &[])
                        .await
                        .ok()
                        .and_then(|r| r.try_get::<_, i32>(0).ok());
                }
                for pid in pids.into_iter().filter(|p| Some(*p) != mine) {
                    if let Some(cpu) = cpu_seconds(&pid.to_string()) {
                        // A backend born after the start spent all its CPU in the measurement.
                        let base = if first { cpu } else { 0.0 };
                        seen.entry(pid).or_insert((base, cpu)).1 = cpu;
                    }
                }
                first = false;
                if flag.load(Ordering::Relaxed) {
                    return seen.values().map(|(a, b)| b - a).sum();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(CpuMeter {
            stop,
            sampler,
            own: cpu_seconds("self").unwrap_or(0.0),
        })
    }

    /// (this process's CPU seconds, the backends' CPU seconds) since `start`.
    async fn stop(self) -> (f64, f64) {
        let own = cpu_seconds("self").unwrap_or(0.0) - self.own;
        self.stop.store(true, Ordering::Relaxed);
        (own, self.sampler.await.unwrap_or(0.0))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

async fn rebuild_bench(config: &tokio_postgres::Config) -> Result<(), BoxError> {
    let events = env_or("MYKEY_BENCH_EVENTS", DEFAULT_EVENTS);
    let runs = env_or("MYKEY_BENCH_RUNS", DEFAULT_RUNS).max(1);
    let store = PgEventStore::connect(config.clone(), PgStoreOptions::default()).await?;
    let started = Instant::now();
    generate(&store, events).await?;
    let head = store.head().await?;
    println!(
        "generated {head} events in {:.1}s; peak RSS {:.0} MiB",
        started.elapsed().as_secs_f64(),
        peak_rss_mib().unwrap_or(0.0)
    );
    let options = RunnerOptions {
        retire_grace: Duration::ZERO,
        ..RunnerOptions::default()
    };
    for projection in projections() {
        let name = projection.name();
        let mut rates = Vec::new();
        for run in 1..=runs {
            let meter = CpuMeter::start(config).await?;
            let report =
                runner::rebuild(&store, config, projection.clone(), &options, |_| {}).await?;
            let (own, backends) = meter.stop().await;
            let rate = report.events_per_second();
            println!(
                "rebuild {name} run {run}/{runs}: {} events in {:.2}s = {rate:.0} events/s; \
                 CPU {own:.2}s here + {backends:.2}s in PostgreSQL = {:.0} events per CPU-second",
                report.position,
                report.elapsed.as_secs_f64(),
                report.position as f64 / (own + backends).max(1e-9),
            );
            rates.push(rate);
        }
        let rate = median(rates);
        println!(
            "rebuild {name}: median {rate:.0} events/s over {runs} run(s) (target >= 50000: {}); \
             peak RSS so far {:.0} MiB",
            if rate >= 50_000.0 { "met" } else { "MISSED" },
            peak_rss_mib().unwrap_or(0.0)
        );
    }
    Ok(())
}

async fn lag_bench(config: &tokio_postgres::Config) -> Result<(), BoxError> {
    let seconds = env_or("MYKEY_BENCH_SECONDS", DEFAULT_SECONDS);
    let writers = env_or("MYKEY_BENCH_WRITERS", DEFAULT_WRITERS).max(1);
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
    let finished = Arc::new(AtomicUsize::new(0));
    // The newest acknowledged position and when it was acknowledged: lag is measured from there.
    let acknowledged = Arc::new(Mutex::new((0u64, Instant::now())));
    let single_events = std::env::args().skip(1).any(|a| a == "appends");
    let mut prepared = if single_events {
        let events = env_or("MYKEY_BENCH_EVENTS", seconds * PREPARED_PER_SECOND);
        let t = Instant::now();
        let p = prepare(writers, events)?;
        println!(
            "prepared {} single-event appends in {:.1}s",
            p.iter().map(Vec::len).sum::<usize>(),
            t.elapsed().as_secs_f64()
        );
        p.into_iter().map(Some).collect()
    } else {
        vec![None; writers]
    };
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, stop, appended, acknowledged, finished) = (
            store.clone(),
            stop.clone(),
            appended.clone(),
            acknowledged.clone(),
            finished.clone(),
        );
        let mine = prepared.get_mut(w).and_then(Option::take);
        tasks.push(tokio::spawn(async move {
            let ack = |outcome: &AppendOutcome, count: u64| {
                appended.fetch_add(count, Ordering::Relaxed);
                let now = Instant::now();
                let mut newest = acknowledged.lock().unwrap_or_else(|p| p.into_inner());
                if outcome.last_position > newest.0 {
                    *newest = (outcome.last_position, now);
                }
            };
            if let Some(requests) = mine {
                for request in requests {
                    if stop.load(Ordering::Relaxed) {
                        return Ok::<(), BoxError>(());
                    }
                    ack(&store.append(request).await?, 1);
                }
                // Ran out before the end.
                finished.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // Writer `w` plays rounds w, w + writers, ...: each round's commands in order.
            let mut r = w as u64;
            while !stop.load(Ordering::Relaxed) {
                for request in workload::round(r)? {
                    let count = request.event_count() as u64;
                    ack(&store.append(request).await?, count);
                }
                r += writers as u64;
            }
            Ok::<(), BoxError>(())
        }));
    }
    let names: Vec<&'static str> = projections().iter().map(|p| p.name()).collect();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut timeouts = vec![0usize; names.len()];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline && finished.load(Ordering::Relaxed) < writers {
        let (position, acked_at) = *acknowledged.lock().unwrap_or_else(|p| p.into_inner());
        if position > 0 {
            // Every projection at once, each timed on its own.
            let waits = names.iter().map(|name| {
                let running = &running;
                async move {
                    let seen = running.wait_for(name, position, SAMPLE_TIMEOUT).await;
                    (seen.is_ok(), acked_at.elapsed())
                }
            });
            for (k, (seen, lag)) in join_all(waits).await.into_iter().enumerate() {
                if !seen {
                    timeouts[k] += 1;
                }
                samples[k].push(lag);
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
    let load = if single_events {
        "single-event appends (prepared workload)"
    } else {
        "appends of one command (mostly one event)"
    };
    println!(
        "{load}: {rate:.0} events/s over {elapsed:.1}s with {writers} writers (target >= 20000)"
    );
    if finished.load(Ordering::Relaxed) > 0 {
        println!(
            "note: {} writers ran out of prepared events before the end (raise MYKEY_BENCH_EVENTS)",
            finished.load(Ordering::Relaxed)
        );
    }
    for ((name, mut s), timeouts) in names.into_iter().zip(samples).zip(timeouts) {
        s.sort();
        let pct = |p: f64| {
            s.get(((s.len() as f64 * p) as usize).min(s.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "lag {name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} samples, {timeouts} \
             timed out (target p99 <= 200 ms: {})",
            pct(0.50),
            pct(0.99),
            pct(1.0),
            s.len(),
            if pct(0.99) <= 200.0 && timeouts == 0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    for status in running.statuses() {
        println!("status {}", serde_json::to_string(&status)?);
    }
    println!("peak RSS {:.0} MiB", peak_rss_mib().unwrap_or(0.0));
    running.shutdown().await;
    Ok(())
}

/// At least `events` events of workload rounds as single-event appends, one list per writer:
/// writer `w` owns rounds w, w + writers, ... and appends each round's events in order, so
/// every stream (and every round's cross-stream order) keeps the order the rules need.
fn prepare(writers: usize, events: u64) -> Result<Vec<Vec<AppendRequest>>, BoxError> {
    let rounds = events.div_ceil(workload::EVENTS_PER_ROUND as u64);
    let mut out: Vec<Vec<AppendRequest>> = vec![Vec::new(); writers];
    for r in 0..rounds {
        let mine = &mut out[(r % writers as u64) as usize];
        for request in workload::round(r)? {
            for s in request.streams {
                for event in s.events {
                    mine.push(AppendRequest::single(
                        s.stream.clone(),
                        ExpectedVersion::Any,
                        vec![event],
                        EventMetadata {
                            // Each append is its own command (idempotency key).
                            command_id: Uuid::now_v7(),
                            ..request.metadata.clone()
                        },
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Appends whole workload rounds until at least `count` events: chunks of
/// [`ROUNDS_PER_CHUNK`] rounds merged into large appends, from [`GENERATORS`] tasks.
async fn generate(store: &PgEventStore, count: u64) -> Result<(), BoxError> {
    let rounds = count.div_ceil(workload::EVENTS_PER_ROUND as u64);
    let chunks = rounds.div_ceil(ROUNDS_PER_CHUNK);
    let mut tasks = Vec::new();
    for g in 0..GENERATORS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = g;
            while c < chunks {
                let first = c * ROUNDS_PER_CHUNK;
                let end = (first + ROUNDS_PER_CHUNK).min(rounds);
                for request in workload::batched(first..end)? {
                    store.append(request).await?;
                }
                c += GENERATORS;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
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
