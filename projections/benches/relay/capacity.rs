//! The relay bench's capacity phases: the relay alone publishing a pre-appended backlog, then
//! a projector alone applying what it published.

use super::cpu::Cpu;
use super::{reach, request, BenchPpids};
use mykey_projections::kafka::projector::{self, ProjectorOptions};
use mykey_projections::kafka::{self, KafkaSettings};
use mykey_projections::Projection;
use mykey_store::pg::PgEventStore;
use mykey_store::{AppendRequest, EventStore};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Events per append of the backlog (100-event appends are the log's fastest).
const BACKLOG_APPEND: usize = 100;
/// Concurrent appenders of the backlog.
const BACKLOG_TASKS: usize = 8;

/// One append of [`BACKLOG_APPEND`] `PpidIssued` events, each on a stream of its own.
fn backlog_request(rng: &mut impl Rng) -> Result<AppendRequest, String> {
    let mut all = request(rng)?;
    for _ in 1..BACKLOG_APPEND {
        let more = request(rng)?;
        all.streams.extend(more.streams);
    }
    Ok(all)
}

/// The relay's own publishing capacity: a backlog is appended with no relay running for it,
/// then a relay with a fresh topic prefix publishes the whole log from position 1 (nothing
/// else runs meanwhile). Events/s = the log's head / the time until the broker acknowledged
/// it (the relay's `acknowledged_position`).
///
/// Returns the fresh prefix's settings and the head it holds, for [`projector_capacity`].
pub(super) async fn capacity(
    store: &PgEventStore,
    config: tokio_postgres::Config,
    settings: KafkaSettings,
) -> Result<(KafkaSettings, u64), String> {
    let backlog: u64 = std::env::var("MYKEY_BENCH_BACKLOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500_000);
    let before = store.head().await.map_err(|e| e.to_string())?;
    let target = before + backlog;
    say!("== relay capacity: appending a backlog of {backlog} events (no relay for it)");
    let appended = Arc::new(AtomicU64::new(before));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..BACKLOG_TASKS {
        let (store, appended) = (store.clone(), appended.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1_000 + t as u64);
            while appended.fetch_add(BACKLOG_APPEND as u64, Ordering::Relaxed) < target {
                store
                    .append(backlog_request(&mut rng)?)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let head = store.head().await.map_err(|e| e.to_string())?;
    say!(
        "   appended {} events in {:.1} s; publishing the log (1..={head}) to a fresh prefix",
        head - before,
        started.elapsed().as_secs_f64()
    );
    let settings = KafkaSettings {
        topic_prefix: format!("cap{}", uuid::Uuid::new_v4().simple()),
        ..settings
    };
    let registry = prometheus::Registry::new();
    let started = Instant::now();
    let relay = kafka::start(store.clone(), config, settings.clone(), &registry)
        .await
        .map_err(|e| e.to_string())?;
    reach(
        "the relay to publish the log",
        started,
        head,
        Some("acknowledged"),
        || u64::try_from(relay.metrics().acknowledged_position.get()).unwrap_or(0),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    say!(
        "RESULT relay capacity: {head} events published from position 1 and acknowledged in \
         {secs:.2} s: {:.0} events/s into the broker (relay start, topic creation included)",
        head as f64 / secs
    );
    relay.stop().await;
    Ok((settings, head))
}

/// The Kafka projector's own capacity: a projector in a fresh group applies the whole log the
/// capacity phase published (`head` events under `settings`' prefix) to a fresh Kafka-mode
/// schema, with nothing else running. Events/s = `head` / the time until the last one is in
/// the read model (projector start and the consumer group's join included).
pub(super) async fn projector_capacity(
    config: tokio_postgres::Config,
    settings: KafkaSettings,
    head: u64,
) -> Result<(), String> {
    say!("== projector capacity: a fresh group applies the {head} published events");
    let projection: Arc<dyn Projection> = Arc::new(BenchPpids::new("bench_ppids_capacity"));
    let cpu_before = Cpu::now();
    let started = Instant::now();
    let projector = projector::start(
        config,
        settings,
        &[projection],
        ProjectorOptions::default(),
        &prometheus::Registry::new(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let metrics = projector.metrics().clone();
    reach(
        "the projector to apply the log",
        started,
        head,
        Some("applied"),
        || metrics.applied.get(),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = Cpu::now().report(&cpu_before, head);
    projector.stop().await.map_err(|e| e.to_string())?;
    let (batches, applying) = (
        metrics.batches.get(),
        metrics.apply_seconds.get_sample_sum(),
    );
    say!(
        "RESULT projector capacity: {head} events applied from Kafka in {secs:.2} s: {:.0} \
         events/s ({batches} batches, {:.1} ms each); {cpu}",
        head as f64 / secs,
        applying * 1e3 / batches.max(1) as f64,
    );
    Ok(())
}
