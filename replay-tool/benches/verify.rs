//! `cargo bench -p mykey-replay --bench verify`: verify throughput and peak memory.
//!
//! Generates a log of `MYKEY_BENCH_EVENTS` events (default 1,000,000) in a private database
//! on the test PostgreSQL (`MYKEY_TEST_DATABASE_URL`, default 127.0.0.1:5432 as postgres),
//! then times `verify` from PostgreSQL and, after an export, from NDJSON. Prints events/s and
//! the peak RSS (VmHWM). Targets (issue 12): NDJSON >= 200,000 events/s, PostgreSQL >=
//! 100,000 events/s, peak <= 100 MB. The database is dropped at the end. Each phase also
//! prints the CPU seconds it cost (this process, and the PostgreSQL backends of its database):
//! on a shared machine, events per CPU-second are the figure that does not depend on the
//! neighbours.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cpu.rs"]
mod cpu;

use mykey_replay::export::ExportArgs;
use mykey_replay::verify::VerifyArgs;
use mykey_schemas::{EventEnvelope, EventMetadata, NewEvent, StreamId, GENESIS_HASH};
use std::time::Instant;
use tokio_postgres::NoTls;

const DEFAULT_EVENTS: u64 = 1_000_000;
/// Rows per generated COPY batch.
const BATCH: u64 = 10_000;

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

fn event(p: u64, prev: mykey_schemas::Hash) -> EventEnvelope {
    EventEnvelope::seal(
        NewEvent {
            event_id: uuid::Uuid::from_u128(u128::from(p)),
            event_type: "Bench.Happened".into(),
            schema_version: 1,
            payload: format!(
                "{{\"application_id\":\"{}\",\"points\":{},\"note\":\"a typical small payload\"}}",
                uuid::Uuid::from_u128(u128::from(p) << 64),
                p % 5000
            ),
        },
        StreamId::parse(&format!("bench-{}", p % 10_000)).unwrap(),
        p / 10_000 + 1,
        p,
        EventMetadata {
            actor_id: "bench".into(),
            actor_role: "system".into(),
            command_id: uuid::Uuid::from_u128(u128::from(p) + (1 << 100)),
            correlation_id: uuid::Uuid::from_u128(7),
            causation_id: uuid::Uuid::from_u128(7),
            patch_id: None,
            client_addr: None,
        },
        chrono::DateTime::from_timestamp(1_790_000_000 + p as i64, 0).unwrap(),
        prev,
    )
}

async fn generate(url: &str, n: u64) {
    // The store's own connect creates the schema exactly as the server does.
    let store = mykey_store::pg::PgEventStore::connect(url.parse().unwrap(), Default::default())
        .await
        .unwrap();
    drop(store);
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    // Rows are written directly (not through appends) so generating a million events takes
    // seconds; the hash chain is sealed exactly as the writer seals it.
    client
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let insert = client
        .prepare(
            "INSERT INTO events (global_position, stream_id, stream_version, event_id, event_type, \
             schema_version, payload, actor_id, actor_role, command_id, correlation_id, \
             causation_id, patch_id, client_addr, recorded_at, prev_hash, hash) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], \
             $6::int[], $7::text[], $8::text[], $9::text[], $10::uuid[], $11::uuid[], $12::uuid[], \
             $13::uuid[], $14::text[], $15::timestamptz[], $16::bytea[], $17::bytea[])",
        )
        .await
        .unwrap();
    let mut prev = GENESIS_HASH;
    let mut p = 1;
    while p <= n {
        let batch: Vec<EventEnvelope> = (p..=(p + BATCH - 1).min(n))
            .map(|q| {
                let e = event(q, prev);
                prev = e.hash;
                e
            })
            .collect();
        macro_rules! col {
            ($f:expr) => {
                batch.iter().map($f).collect::<Vec<_>>()
            };
        }
        client
            .execute(
                &insert,
                &[
                    &col!(|e| e.global_position as i64),
                    &col!(|e| e.stream_id.as_str().to_owned()),
                    &col!(|e| e.stream_version as i64),
                    &col!(|e| e.event_id),
                    &col!(|e| e.event_type.clone()),
                    &col!(|e| e.schema_version as i32),
                    &col!(|e| e.payload.clone()),
                    &col!(|e| e.metadata.actor_id.clone()),
                    &col!(|e| e.metadata.actor_role.clone()),
                    &col!(|e| e.metadata.command_id),
                    &col!(|e| e.metadata.correlation_id),
                    &col!(|e| e.metadata.causation_id),
                    &col!(|e| e.metadata.patch_id),
                    &col!(|e| e.metadata.client_addr.clone()),
                    &col!(|e| e.recorded_at),
                    &col!(|e| e.prev_hash.0.to_vec()),
                    &col!(|e| e.hash.0.to_vec()),
                ],
            )
            .await
            .unwrap();
        p += BATCH;
    }
}

/// CPU seconds since the start of a phase.
struct Cost {
    own: f64,
    backends: f64,
}

impl Cost {
    fn start(backends: &cpu::Backends) -> Cost {
        Cost {
            own: cpu::own(),
            backends: backends.total(),
        }
    }

    fn print(&self, phase: &str, n: u64, backends: &cpu::Backends) {
        let own = cpu::own() - self.own;
        let pg = backends.total() - self.backends;
        println!(
            "  {phase}: CPU {own:.2}s (tool) + {pg:.2}s (PostgreSQL) = {:.0} events per CPU-second; load average {}",
            n as f64 / (own + pg).max(1e-9),
            cpu::uptime()
        );
    }
}

fn main() {
    let n: u64 = std::env::var("MYKEY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EVENTS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let name = format!("mykey_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    let url = format!("{admin} dbname={name}").replace("dbname=postgres ", "");
    let dir = std::env::temp_dir().join(&name);
    rt.block_on(async {
        let (a, conn) = tokio_postgres::connect(&admin, NoTls).await.unwrap();
        tokio::spawn(conn);
        a.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let result = async {
            let t = Instant::now();
            generate(&url, n).await;
            println!("generated {n} events in {:.1}s", t.elapsed().as_secs_f64());
            let db_args = VerifyArgs {
                database_url: Some(url.clone()),
                file: None,
                kafka: None,
                topic_prefix: mykey_projections::kafka::DEFAULT_TOPIC_PREFIX.into(),
                manifest: None,
                no_manifest: false,
                checkpoints: vec![],
                public_keys: vec![],
                from: None,
                to: None,
                json: false,
            };
            let backends = cpu::Backends::watch(&name);
            let cost = Cost::start(&backends);
            let t = Instant::now();
            let v = mykey_replay::verify::verify(&db_args).await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(v.intact, "{v:?}");
            println!(
                "verify from PostgreSQL: {n} events in {secs:.2}s = {:.0} events/s (target >= 100000); peak RSS so far {:.1} MB",
                n as f64 / secs,
                peak_rss_mb()
            );
            cost.print("verify from PostgreSQL", n, &backends);
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("log.ndjson");
            let db = mykey_replay::db::Db::connect(&url).await.unwrap();
            let cost = Cost::start(&backends);
            let t = Instant::now();
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
            println!("export: {:.0} events/s", n as f64 / t.elapsed().as_secs_f64());
            cost.print("export", n, &backends);
            let file_args = VerifyArgs {
                database_url: None,
                file: Some(file),
                kafka: None,
                topic_prefix: mykey_projections::kafka::DEFAULT_TOPIC_PREFIX.into(),
                ..db_args
            };
            let cost = Cost::start(&backends);
            let t = Instant::now();
            let v = mykey_replay::verify::verify(&file_args).await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(v.intact, "{v:?}");
            println!(
                "verify from NDJSON: {n} events in {secs:.2}s = {:.0} events/s (target >= 200000)",
                n as f64 / secs
            );
            cost.print("verify from NDJSON", n, &backends);
            println!("peak RSS (VmHWM): {:.1} MB (target <= 100)", peak_rss_mb());
        };
        result.await;
        let _ = std::fs::remove_dir_all(&dir);
        a.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    });
}
