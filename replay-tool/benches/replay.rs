//! `cargo bench -p mykey-replay --bench replay`: replay throughput and peak memory of the
//! `ppids` projection.
//!
//! Appends about `MYKEY_BENCH_EVENTS` events (default 1,000,000) of the generated workload
//! (`mykey_projections::models::workload`: every event type, consistent, rounds of
//! [`EVENTS_PER_ROUND`]) through the store into a private database on the test PostgreSQL
//! (`MYKEY_TEST_DATABASE_URL`, default 127.0.0.1:5432 as postgres), then times
//! `mykey-replay replay ppids` from PostgreSQL and, after an export, from the NDJSON file
//! (chain verified while read). Prints events/s over the log, PPID events applied/s, and the
//! peak RSS of each replay (VmHWM, reset before each). Targets (issue 12): >= 50,000 events/s,
//! peak <= 100 MB. The database is dropped at the end. Each replay also prints the CPU
//! seconds it cost (this process, and the PostgreSQL backends of its database), the figure
//! that does not depend on the neighbours on a shared machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cpu.rs"]
mod cpu;

use mykey_projections::models::workload::{self, EVENTS_PER_ROUND};
use mykey_replay::export::ExportArgs;
use mykey_replay::replay::{ReplayArgs, Replayed};
use mykey_store::EventStore;
use std::time::Instant;
use tokio_postgres::NoTls;

const DEFAULT_EVENTS: u64 = 1_000_000;
/// Concurrent appenders while generating (rounds are independent of each other).
const GENERATORS: u64 = 4;
/// Rounds per `workload::batched` call (merged into few large appends).
const ROUNDS_PER_CHUNK: u64 = 200;

fn admin_url() -> String {
    std::env::var("MYKEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux >= 4.0), so each measurement is its own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn generate(url: &str, events: u64) -> u64 {
    let store = mykey_store::pg::PgEventStore::connect(url.parse().unwrap(), Default::default())
        .await
        .unwrap();
    let rounds = events.div_ceil(EVENTS_PER_ROUND as u64);
    let mut tasks = Vec::new();
    for g in 0..GENERATORS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut start = g * ROUNDS_PER_CHUNK;
            while start < rounds {
                let end = (start + ROUNDS_PER_CHUNK).min(rounds);
                for request in workload::batched(start..end).unwrap() {
                    store.append(request).await.unwrap();
                }
                start += GENERATORS * ROUNDS_PER_CHUNK;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.head().await.unwrap()
}

async fn timed(label: &str, args: ReplayArgs, backends: &cpu::Backends) {
    reset_peak();
    let (own0, pg0) = (cpu::own(), backends.total());
    let started = Instant::now();
    let s = match mykey_replay::replay::replay(&args).await.unwrap() {
        Replayed::Done(s) => s,
        Replayed::Broken(why) => panic!("{label}: {why}"),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replay ppids from {label}: {} events ({} PPID events applied) in {secs:.2}s = {:.0} events/s \
         ({:.0} PPID events/s); rows {:?}; peak RSS {:.1} MB",
        s.events_read,
        s.events_applied,
        s.events_read as f64 / secs,
        s.events_applied as f64 / secs,
        s.tables.iter().map(|t| t.rows).collect::<Vec<_>>(),
        peak_rss_mb()
    );
    let (own, pg) = (cpu::own() - own0, backends.total() - pg0);
    println!(
        "  CPU {own:.2}s (tool) + {pg:.2}s (PostgreSQL) = {:.0} events per CPU-second; load average {}",
        s.events_read as f64 / (own + pg).max(1e-9),
        cpu::uptime()
    );
}

fn main() {
    let n: u64 = std::env::var("MYKEY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EVENTS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = admin_url();
        let (admin_client, conn) = tokio_postgres::connect(&admin, NoTls).await.unwrap();
        tokio::spawn(conn);
        let name = format!("mykey_replay_bench_{}", uuid::Uuid::new_v4().simple());
        admin_client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = format!("{admin} dbname={name}");
        let started = Instant::now();
        let head = generate(&url, n).await;
        println!(
            "generated {head} events in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let base = |schema: &str| ReplayArgs {
            projection: "ppids".into(),
            database_url: url.clone(),
            file: None,
            to_position: None,
            as_of: None,
            schema: Some(schema.into()),
            drop: true,
            json: false,
        };
        let backends = cpu::Backends::watch(&name);
        timed("PostgreSQL", base("replay_bench_db"), &backends).await;
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("log.ndjson");
        let db = mykey_replay::db::Db::connect(&url).await.unwrap();
        mykey_replay::export::export(
            &db,
            &ExportArgs {
                database_url: url.clone(),
                from: 1,
                to: None,
                streams: vec![],
                categories: vec![],
                output: file.clone(),
                manifest: None,
            },
        )
        .await
        .unwrap();
        drop(db);
        let mut from_file = base("replay_bench_file");
        from_file.file = Some(file);
        timed("NDJSON (chain verified)", from_file, &backends).await;
        let _ = std::fs::remove_dir_all(&dir);
        admin_client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    });
}
