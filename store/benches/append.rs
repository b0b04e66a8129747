//! Event log append throughput and latency against real PostgreSQL (fsync on).
//!
//! `cargo bench -p mykey-store --bench append`
//!
//! Connects to `MYKEY_BENCH_DATABASE_URL`, or creates (and afterwards drops) its own database
//! on 127.0.0.1:5432 as `postgres`. `MYKEY_BENCH_SECS` sets each phase's length (default 10).
//! Phases: 64 concurrent tasks appending single-event commands to random streams, then 64
//! tasks appending 100-event commands. Prints a progress line per second, then events/s and
//! the p50/p99/max latency of one `append` call.

use mykey_schemas::{EventMetadata, NewEvent, StreamId};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{AppendRequest, EventStore, ExpectedVersion};
use rand::{Rng, SeedableRng};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use uuid::Uuid;

/// `println!` that ignores a closed stdout (e.g. piped into `head`) instead of panicking, so
/// the benchmark still reaches the end and drops its database.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Concurrent appending tasks (each waits for its append before the next).
const TASKS: usize = 64;
/// Distinct streams the tasks pick from at random.
const STREAMS: u32 = 10_000;

fn request(rng: &mut impl Rng, events: usize) -> Result<AppendRequest, String> {
    let stream = StreamId::new("bench", rng.gen_range(0..STREAMS)).map_err(|e| e.to_string())?;
    let events = (0..events)
        .map(|i| NewEvent {
            // As the envelope specifies and the handlers produce: time-ordered v7.
            event_id: Uuid::now_v7(),
            event_type: "BenchHappened".into(),
            schema_version: 1,
            // A small, realistic payload (a PPID issuance is about this size).
            payload: format!(
                "{{\"ppid\":\"{}\",\"rp\":\"131016\",\"i\":{i}}}",
                Uuid::new_v4()
            ),
        })
        .collect();
    Ok(AppendRequest::single(
        stream,
        ExpectedVersion::Any,
        events,
        EventMetadata {
            actor_id: "bench".into(),
            actor_role: "system".into(),
            command_id: Uuid::now_v7(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            patch_id: None,
            client_addr: None,
        },
    ))
}

struct PhaseResult {
    events: u64,
    appends: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

async fn phase(
    store: &PgEventStore,
    name: &str,
    events_per_append: usize,
    run_for: Duration,
) -> Result<PhaseResult, String> {
    say!("== {name}: {TASKS} tasks, {events_per_append} event(s) per append, {run_for:?}");
    let written = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run_for;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let r = request(&mut rng, events_per_append)?;
                let began = Instant::now();
                store.append(r).await.map_err(|e| e.to_string())?;
                latencies.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
                written.fetch_add(events_per_append as u64, Ordering::Relaxed);
            }
            Ok::<Vec<u32>, String>(latencies)
        }));
    }
    let progress = {
        let written = written.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            let mut last = 0;
            loop {
                tick.tick().await;
                let now = written.load(Ordering::Relaxed);
                say!(
                    "  {:>3.0}s  {:>9} events  {:>8} events/s",
                    start.elapsed().as_secs_f64(),
                    now,
                    now - last
                );
                last = now;
            }
        })
    };
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = start.elapsed();
    progress.abort();
    latencies_us.sort_unstable();
    Ok(PhaseResult {
        events: written.load(Ordering::Relaxed),
        appends: latencies_us.len() as u64,
        elapsed,
        latencies_us,
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1_000.0
}

fn report(name: &str, r: &PhaseResult, before: (u64, u64), after: (u64, u64)) {
    let secs = r.elapsed.as_secs_f64();
    let batches = (after.0 - before.0).max(1);
    say!(
        "BATCHES {name}: {batches} batches, {:.1} appends per batch",
        (after.1 - before.1) as f64 / batches as f64
    );
    say!(
        "RESULT {name}: {:.0} events/s, {:.0} appends/s ({} events in {:.1} s); \
         append latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.events as f64 / secs,
        r.appends as f64 / secs,
        r.events,
        secs,
        percentile(&r.latencies_us, 0.50),
        percentile(&r.latencies_us, 0.99),
        percentile(&r.latencies_us, 1.0),
    );
}

async fn admin() -> Result<tokio_postgres::Client, String> {
    let config = tokio_postgres::Config::from_str("host=127.0.0.1 port=5432 user=postgres")
        .map_err(|e| e.to_string())?;
    let (client, conn) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

async fn run(config: tokio_postgres::Config) -> Result<(), String> {
    let secs: u64 = std::env::var("MYKEY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let run_for = Duration::from_secs(secs);
    let store = PgEventStore::connect(config, PgStoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let stats = || {
        let s = store.writer_stats();
        (
            s.batches.load(Ordering::Relaxed),
            s.requests.load(Ordering::Relaxed),
        )
    };
    let before = stats();
    let single = phase(&store, "single-event appends", 1, run_for).await?;
    let middle = stats();
    let batch = phase(&store, "100-event appends", 100, run_for).await?;
    let after = stats();
    report("64 x single-event", &single, before, middle);
    report("64 x 100-event", &batch, middle, after);
    let head = store.head().await.map_err(|e| e.to_string())?;
    let v = mykey_store::verify(&store, head.saturating_sub(10_000).max(1), Some(head))
        .await
        .map_err(|e| e.to_string())?;
    say!(
        "verify of the last {} events: intact = {}",
        v.verified,
        v.is_intact()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match std::env::var("MYKEY_BENCH_DATABASE_URL") {
        Ok(url) => match tokio_postgres::Config::from_str(&url) {
            Ok(c) => run(c).await,
            Err(e) => Err(format!("MYKEY_BENCH_DATABASE_URL: {e}")),
        },
        Err(_) => {
            let name = format!("mykey_bench_{}", Uuid::new_v4().simple());
            match admin().await {
                Err(e) => Err(format!("cannot reach 127.0.0.1:5432 as postgres: {e}")),
                Ok(admin) => match admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                {
                    Err(e) => Err(format!("create {name}: {e}")),
                    Ok(()) => {
                        let mut config = tokio_postgres::Config::new();
                        config
                            .host("127.0.0.1")
                            .port(5432)
                            .user("postgres")
                            .dbname(&name);
                        let r = run(config).await;
                        if let Err(e) = admin
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await
                        {
                            eprintln!("warning: could not drop {name}: {e}");
                        }
                        r
                    }
                },
            }
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
