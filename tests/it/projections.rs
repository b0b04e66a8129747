//! The projection runner against a real PostgreSQL: checkpoint atomicity, a SIGKILLed runner
//! resuming without double-applying or skipping, the zero-downtime rebuild switch, failure
//! isolation, live versus rebuilt tables, and read-your-writes.

pub(crate) mod fixtures;

use fixtures::{
    append_raw, append_workload, cancellation, Cancellations, Counts, Revocations, REJECTED_REASON,
};
use mykey_projections::runner::{self, registry, RunState, WaitError};
use mykey_projections::{Projection, Projections, RunnerOptions};
use mykey_schemas::NewEvent;
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_tests::{dump_tables, eventually, scalar, TestDb};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Bound on any single wait in these tests: generous for a loaded CI machine, finite so a
/// bug fails the test.
const WAIT: Duration = Duration::from_secs(60);

/// Fast polling and a short grace, so switches and drops happen within a test.
fn options() -> RunnerOptions {
    RunnerOptions {
        batch_max: 500,
        retire_grace: Duration::from_millis(300),
        poll_interval: Duration::from_millis(100),
    }
}

async fn store(db: &TestDb) -> PgEventStore {
    PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect the event store: {e}"))
}

async fn start(
    db: &TestDb,
    store: &PgEventStore,
    projections: Vec<Arc<dyn Projection>>,
) -> (Projections, prometheus::Registry) {
    let metrics = prometheus::Registry::new();
    let running = Projections::start(store.clone(), db.config(), projections, &metrics, options())
        .await
        .unwrap_or_else(|e| panic!("start the runner: {e}"));
    (running, metrics)
}

async fn wait_for(running: &Projections, name: &str, position: u64) {
    running
        .wait_for(name, position, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{name} did not reach {position}: {e}"));
}

/// Every table of `schema`, each as its rows in JSON, sorted, and every index with its
/// definition (schema name elided): equal dumps mean equal tables with equal indexes (a rebuild
/// fills its schema without the secondary indexes and creates them at the switch).
async fn dump(client: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for r in client
        .query(
            "SELECT indexname::text, replace(indexdef, $1::text || '.', '') FROM pg_indexes \
             WHERE schemaname::text = $1::text",
            &[&schema],
        )
        .await
        .unwrap_or_else(|e| panic!("list indexes of {schema}: {e}"))
    {
        out.insert(format!("index {}", r.get::<_, String>(0)), vec![r.get(1)]);
    }
    out.extend(dump_tables(client, schema, &[]).await);
    out
}

fn schema_of(running: &Projections, name: &str) -> String {
    running
        .active_schema(name)
        .unwrap_or_else(|| panic!("{name} has no serving schema"))
        .to_string()
}

/// The value of gauge `family` for `projection` in `metrics` (shared with the projector's tests).
pub(crate) fn gauge(metrics: &prometheus::Registry, family: &str, projection: &str) -> Option<f64> {
    metrics
        .gather()
        .iter()
        .find(|f| f.name() == family)?
        .get_metric()
        .iter()
        .find(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "projection" && l.value() == projection)
        })
        .map(|m| m.get_gauge().get_value())
}

// ---------------------------------------------------------------------------------------------
// Checkpoint atomicity.

/// Read in one snapshot while batches commit, the read model always holds exactly the events
/// up to its checkpoint: changes and checkpoint commit together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_snapshot_holds_exactly_the_events_up_to_the_checkpoint() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let (running, _) = start(
        &db,
        &store,
        vec![Arc::new(Counts {
            version: 1,
            weight: 1,
        })],
    )
    .await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append_workload(&store, 0, 3_000).await })
    };
    let schema = eventually("a serving schema", WAIT, || async {
        running.active_schema("test_counts")
    })
    .await
    .to_string();
    let mut reader = db.client().await;
    let mut snapshots = 0;
    let mut distinct = std::collections::BTreeSet::new();
    loop {
        let tx = reader
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .unwrap_or_else(|e| panic!("begin: {e}"));
        let counted: i64 = tx
            .query_one(&format!("SELECT n FROM {schema}.total"), &[])
            .await
            .and_then(|r| r.try_get(0))
            .unwrap_or_else(|e| panic!("total: {e}"));
        let checkpoint: i64 = tx
            .query_one(
                "SELECT position FROM read_models.schemas WHERE schema_name = $1",
                &[&schema],
            )
            .await
            .and_then(|r| r.try_get(0))
            .unwrap_or_else(|e| panic!("checkpoint: {e}"));
        tx.commit().await.unwrap_or_else(|e| panic!("commit: {e}"));
        assert_eq!(counted, checkpoint, "rows and checkpoint disagree");
        snapshots += 1;
        distinct.insert(checkpoint);
        if checkpoint == 3_000 {
            break;
        }
        assert!(snapshots < 1_000_000, "the runner never reached the head");
    }
    assert_eq!(
        writer.await.unwrap_or_else(|e| panic!("writer: {e}")),
        3_000
    );
    running.shutdown().await;
    assert!(distinct.len() > 1, "no snapshot was taken mid-way");
}

/// An event whose statement fails stops its projection exactly before it: the events before
/// it in the same batch are committed with the checkpoint, nothing of it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_stops_the_projection_exactly_before_its_event() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    // Appended before the runner starts, so all of them land in one batch.
    let mut positions = Vec::new();
    for i in 0..10 {
        let reason = if i == 6 {
            REJECTED_REASON.to_owned()
        } else {
            format!("r{i}")
        };
        positions.push(append_raw(&store, "maintenance", cancellation(&reason)).await);
    }
    let bad = positions[6];
    let (running, metrics) = start(&db, &store, vec![Arc::new(Cancellations)]).await;
    let failed = eventually("the failure", WAIT, || async {
        running.statuses().into_iter().find_map(|s| match s.state {
            RunState::Failed(f) => Some(f),
            _ => None,
        })
    })
    .await;
    assert_eq!(failed.position, bad);
    assert_eq!(
        failed.event_type,
        <mykey_schemas::stored::maintenance::MaintenanceCancelledV1 as mykey_schemas::StoredEvent>::EVENT_TYPE
    );
    assert!(failed.error.contains("23514"), "{}", failed.error);
    let schema = schema_of(&running, "test_cancellations");
    let client = db.client().await;
    assert_eq!(
        scalar(&client, &format!("SELECT count(*) FROM {schema}.cancelled")).await,
        6
    );
    assert_eq!(
        scalar(
            &client,
            &format!("SELECT position FROM read_models.schemas WHERE schema_name = '{schema}'")
        )
        .await,
        i64::try_from(bad - 1).unwrap_or(0)
    );
    assert_eq!(
        gauge(&metrics, "mykey_projection_failed", "test_cancellations"),
        Some(1.0)
    );
    assert_eq!(
        running
            .wait_for("test_cancellations", bad, Duration::from_secs(5))
            .await,
        Err(WaitError::Failed { failed_at: bad })
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Failure isolation.

/// An event type the decoder does not know stops the projections that read its category,
/// visibly (status and metric), while a projection of another category goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stops_only_the_projections_that_read_it() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let (running, metrics) = start(
        &db,
        &store,
        vec![Arc::new(Revocations), Arc::new(Cancellations)],
    )
    .await;
    let before = append_workload(&store, 0, 40).await;
    wait_for(&running, "test_revocations", before).await;
    let poison = append_raw(
        &store,
        "ppid",
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "PpidExploded".into(),
            schema_version: 1,
            payload: "{}".into(),
        },
    )
    .await;
    let after = append_workload(&store, 40, 40).await;
    // The other projection goes past the poison.
    wait_for(&running, "test_cancellations", after).await;
    let status = eventually("the revocations projection to stop", WAIT, || async {
        running
            .statuses()
            .into_iter()
            .find(|s| s.name == "test_revocations" && matches!(s.state, RunState::Failed(_)))
    })
    .await;
    let RunState::Failed(failure) = &status.state else {
        unreachable!()
    };
    assert_eq!(failure.position, poison);
    assert_eq!(failure.event_type, "PpidExploded");
    assert!(failure.error.contains("PpidExploded"), "{}", failure.error);
    assert_eq!(status.position, poison - 1);
    assert_eq!(
        gauge(&metrics, "mykey_projection_failed", "test_revocations"),
        Some(1.0)
    );
    assert_ne!(
        gauge(&metrics, "mykey_projection_failed", "test_cancellations"),
        Some(1.0)
    );
    // The status is what /readyz shows: position, event type and error, as JSON.
    let json = serde_json::to_value(&status).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["state"], "failed");
    assert_eq!(json["event_type"], "PpidExploded");
    // Lag keeps being reported for the stopped projection.
    let behind = (after - (poison - 1)) as f64;
    eventually("the lag metric", WAIT, || async {
        gauge(&metrics, "mykey_projection_lag_events", "test_revocations").filter(|l| *l == behind)
    })
    .await;
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Rebuild.

/// A new version builds beside the serving one; a reader polling all along sees the old
/// complete answer, then the new complete one, never a mix; the old schema is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_rebuilds_beside_the_old_and_readers_switch_atomically() {
    const EVENTS: u64 = 10_000;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let head = append_workload(&store, 0, EVENTS).await;
    let (v1, _) = start(
        &db,
        &store,
        vec![Arc::new(Counts {
            version: 1,
            weight: 1,
        })],
    )
    .await;
    wait_for(&v1, "test_counts", head).await;
    let old_schema = schema_of(&v1, "test_counts");
    v1.shutdown().await;

    let (v2, _) = start(
        &db,
        &store,
        vec![Arc::new(Counts {
            version: 2,
            weight: 10,
        })],
    )
    .await;
    let old = i64::try_from(EVENTS).unwrap_or(0);
    let new = old * 10;
    let client = db.client().await;
    let mut seen = vec![];
    loop {
        let schema = schema_of(&v2, "test_counts");
        let sum = scalar(
            &client,
            &format!("SELECT coalesce(sum(n), 0)::bigint FROM {schema}.counts"),
        )
        .await;
        let total = scalar(&client, &format!("SELECT n FROM {schema}.total")).await;
        assert_eq!(sum, total);
        assert!(sum == old || sum == new, "a partial answer: {sum}");
        if seen.last() != Some(&sum) {
            seen.push(sum);
        }
        if sum == new {
            break;
        }
        assert!(seen.len() <= 2);
    }
    assert_eq!(seen, vec![old, new], "old answer first, then the new one");
    let new_schema = schema_of(&v2, "test_counts");
    assert_ne!(new_schema, old_schema);
    assert!(new_schema.contains("_v2_"));
    eventually("the old schema to be dropped", WAIT, || async {
        let left = scalar(
            &client,
            &format!(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{old_schema}'"
            ),
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
    // It keeps following the log after the switch.
    let more = append_workload(&store, EVENTS, 10).await;
    wait_for(&v2, "test_counts", more).await;
    assert_eq!(
        scalar(&client, &format!("SELECT n FROM {new_schema}.total")).await,
        new + 100
    );
    v2.shutdown().await;
}

/// The projections run live while events arrive and a rebuild by hand of each from position
/// 1 produce identical tables; a running runner then follows the rebuilt schema. Covers every
/// projection of `models::all()` besides the test ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_rebuilt_tables_are_identical() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let mut all = mykey_projections::models::all();
    all.push(Arc::new(Counts {
        version: 1,
        weight: 1,
    }));
    all.push(Arc::new(Revocations));
    all.push(Arc::new(Cancellations));
    // The read models refuse events they cannot place (a revocation of a PPID never issued),
    // so they are fed the consistent generated workload that covers every event type.
    append_models_workload(&store, 0..5).await;
    let (running, _) = start(&db, &store, all.clone()).await;
    let head = append_models_workload(&store, 5..20).await;
    let client = db.client().await;
    for p in &all {
        wait_for(&running, p.name(), head).await;
        let live_schema = schema_of(&running, p.name());
        let live = dump(&client, &live_schema).await;
        let report = runner::rebuild(&store, &db.config(), p.clone(), &options(), |_| {})
            .await
            .unwrap_or_else(|e| panic!("rebuild {}: {e}", p.name()));
        assert_eq!(report.replaced.as_deref(), Some(live_schema.as_str()));
        assert!(report.position >= head);
        let rebuilt = dump(&client, &report.schema).await;
        assert_eq!(
            live,
            rebuilt,
            "{}: live and rebuilt tables differ",
            p.name()
        );
    }
    // The running runner noticed the switches and follows the rebuilt schemas.
    let later = append_models_workload(&store, 20..21).await;
    let counts = eventually("the runner to follow the rebuilt schema", WAIT, || async {
        let schema = running.active_schema("test_counts")?;
        let reached = running
            .wait_for("test_counts", later, Duration::from_millis(200))
            .await
            .ok()?;
        (reached >= later).then_some(schema)
    })
    .await;
    assert_eq!(
        scalar(&client, &format!("SELECT n FROM {counts}.total")).await,
        i64::try_from(later).unwrap_or(i64::MAX)
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Read your writes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_reaches_the_position_times_out_or_names_the_problem() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let (running, metrics) = start(&db, &store, vec![Arc::new(Revocations)]).await;
    let position = append_workload(&store, 0, 10).await;
    assert!(
        running
            .wait_for("test_revocations", position, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            >= position
    );
    let schema = schema_of(&running, "test_revocations");
    let client = db.client().await;
    // Read your writes: once wait_for returns, the rows are there.
    assert_eq!(
        scalar(&client, &format!("SELECT count(*) FROM {schema}.revoked")).await,
        6
    );
    assert_eq!(
        running
            .wait_for("test_revocations", position + 1, Duration::from_millis(100))
            .await,
        Err(WaitError::Timeout { reached: position })
    );
    assert_eq!(
        running
            .wait_for("nope", 1, Duration::from_millis(100))
            .await,
        Err(WaitError::Unknown("nope".into()))
    );
    assert_eq!(
        gauge(&metrics, "mykey_projection_position", "test_revocations"),
        Some(position as f64)
    );
    running.shutdown().await;
    assert!(running
        .statuses()
        .iter()
        .all(|s| s.state == RunState::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_duplicate_projection_names_are_refused() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let twice: Vec<Arc<dyn Projection>> = vec![Arc::new(Revocations), Arc::new(Revocations)];
    let err = Projections::start(
        store.clone(),
        db.config(),
        twice,
        &prometheus::Registry::new(),
        options(),
    )
    .await
    .map(drop);
    assert!(
        matches!(err, Err(runner::RunnerError::Duplicate(_))),
        "{err:?}"
    );
    assert!(runner::check_name("Bad-Name").is_err());
    assert!(runner::check_name(&"x".repeat(runner::MAX_NAME_LEN + 1)).is_err());
    assert!(runner::check_name("ppids_by_rp2").is_ok());
    let err = runner::cli::rebuild(
        &store,
        &db.config(),
        &[],
        "missing",
        runner::cli::ProgressMode::Quiet,
    )
    .await;
    assert!(
        matches!(err, Err(runner::RunnerError::Unknown(_))),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Crash and resume.

async fn checkpoint_of(client: &tokio_postgres::Client) -> u64 {
    let p = client
        .query_opt(
            "SELECT s.position FROM read_models.active a JOIN read_models.schemas s \
             USING (schema_name) WHERE a.name = 'test_counts'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map_or(0, |r| r.get::<_, i64>(0));
    u64::try_from(p).unwrap_or(0)
}

/// A runner process SIGKILLed again and again — inside batches while events stream in, and
/// between batches when idle — resumes from its checkpoint: the counters equal a fresh
/// rebuild's, and every event is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_runner_resumes_without_double_applying_or_skipping() {
    const ROUNDS: usize = 5;
    let db = TestDb::create().await;
    let store = store(&db).await;
    let mut next = 0;
    let mut head = append_workload(&store, next, 5_000).await;
    next += 5_000;
    let client = db.client().await;
    let mut rng = rand::thread_rng();
    for round in 0..ROUNDS {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_projection_runner"))
            .env("DATABASE_URL", db.url())
            .env("BATCH_MAX", "37")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the runner: {e}"));
        let idle = round == ROUNDS - 1;
        let writer = (!idle).then(|| {
            let store = store.clone();
            let from = next;
            tokio::spawn(async move { append_workload(&store, from, 2_000).await })
        });
        if !idle {
            next += 2_000;
        }
        let start = checkpoint_of(&client).await;
        // Kill at a random point of the work ahead: almost always inside a batch.
        let target = if idle {
            head
        } else {
            start + rng.gen_range(50..1_500)
        };
        eventually("the runner to advance", WAIT, || async {
            (checkpoint_of(&client).await >= target).then_some(())
        })
        .await;
        child
            .start_kill()
            .unwrap_or_else(|e| panic!("kill the runner: {e}"));
        child.wait().await.unwrap_or_else(|e| panic!("reap: {e}"));
        if let Some(w) = writer {
            head = w.await.unwrap_or_else(|e| panic!("writer: {e}"));
        }
    }
    // Resume in process to the head, then compare with a fresh rebuild.
    let counts: Arc<dyn Projection> = Arc::new(Counts {
        version: 1,
        weight: 1,
    });
    let (running, _) = start(&db, &store, vec![counts.clone()]).await;
    wait_for(&running, "test_counts", head).await;
    let schema = schema_of(&running, "test_counts");
    running.shutdown().await;
    let resumed = dump(&client, &schema).await;
    assert_eq!(
        scalar(&client, &format!("SELECT n FROM {schema}.total")).await,
        i64::try_from(head).unwrap_or(0),
        "every event counted exactly once"
    );
    let report = runner::rebuild(&store, &db.config(), counts, &options(), |_| {})
        .await
        .unwrap_or_else(|e| panic!("rebuild: {e}"));
    assert_eq!(resumed, dump(&client, &report.schema).await);
    // Nothing is left behind but the serving schema.
    let left = registry::all_active(&client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.schema, report.schema);
}

/// `(schema, position)` of the test_counts schema being built, if any.
async fn building(client: &tokio_postgres::Client) -> Option<(String, u64)> {
    client
        .query_opt(
            "SELECT schema_name, position FROM read_models.schemas \
             WHERE name = 'test_counts' AND state = 'building'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
}

/// A runner SIGKILLed in the middle of a background rebuild resumes that build from its
/// checkpoint (same schema, no restart from 1), switches when caught up, and the result equals
/// a fresh rebuild's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_midway_resumes_where_it_stopped() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let head = append_workload(&store, 0, 10_000).await;
    let (v1, _) = start(
        &db,
        &store,
        vec![Arc::new(Counts {
            version: 1,
            weight: 1,
        })],
    )
    .await;
    wait_for(&v1, "test_counts", head).await;
    v1.shutdown().await;
    let client = db.client().await;
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_projection_runner"))
            .env("DATABASE_URL", db.url())
            // Small batches keep the build slow enough to be killed in the middle.
            .env("BATCH_MAX", "20")
            .env("COUNTS_VERSION", "2")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the runner: {e}"))
    };
    let mut child = spawn();
    let (schema, killed_at) = eventually("the build to be under way", WAIT, || async {
        building(&client).await.filter(|(_, p)| *p >= 500)
    })
    .await;
    child
        .start_kill()
        .unwrap_or_else(|e| panic!("kill the runner: {e}"));
    child.wait().await.unwrap_or_else(|e| panic!("reap: {e}"));
    let (_, stopped_at) = building(&client)
        .await
        .unwrap_or_else(|| panic!("the build was lost"));
    assert!(stopped_at >= killed_at && stopped_at < head, "{stopped_at}");
    // The old version still serves while the build is interrupted.
    let serving = registry::all_active(&client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serving[0].1.version, 1);

    let (v2, _) = start(
        &db,
        &store,
        vec![Arc::new(Counts {
            version: 2,
            weight: 2,
        })],
    )
    .await;
    // Resumed, not restarted: the same schema, and the first status already past the kill.
    let resumed = eventually("the resumed build", WAIT, || async {
        v2.statuses().into_iter().find_map(|s| match s.state {
            RunState::Rebuilding { schema, position } => Some((schema, position)),
            _ => None,
        })
    })
    .await;
    assert_eq!(resumed.0, schema);
    assert!(resumed.1 >= stopped_at);
    // (The frozen old schema is at the head too: wait for the switch, not for a position.)
    eventually("the switch to the resumed build", WAIT, || async {
        (v2.active_schema("test_counts")?.as_ref() == schema.as_str()).then_some(())
    })
    .await;
    wait_for(&v2, "test_counts", head).await;
    v2.shutdown().await;
    let resumed_rows = dump(&client, &schema).await;
    assert_eq!(
        scalar(&client, &format!("SELECT n FROM {schema}.total")).await,
        i64::try_from(head * 2).unwrap_or(0)
    );
    let fresh = runner::rebuild(
        &store,
        &db.config(),
        Arc::new(Counts {
            version: 2,
            weight: 2,
        }),
        &options(),
        |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("rebuild: {e}"));
    assert_eq!(resumed_rows, dump(&client, &fresh.schema).await);
}

/// Two processes (two runners on one database): one applies the log, the other stands by
/// showing its progress, and takes over when the first stops. Every event counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runner_stands_by_and_takes_over() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let counts = || -> Vec<Arc<dyn Projection>> {
        vec![Arc::new(Counts {
            version: 1,
            weight: 1,
        })]
    };
    let (first, _) = start(&db, &store, counts()).await;
    let head = append_workload(&store, 0, 300).await;
    wait_for(&first, "test_counts", head).await;
    let (second, _) = start(&db, &store, counts()).await;
    let state = |p: &Projections| p.statuses()[0].state.clone();
    eventually("the second runner to stand by", WAIT, || async {
        (state(&second) == RunState::Standby).then_some(())
    })
    .await;
    assert_eq!(state(&first), RunState::Following);
    let head = append_workload(&store, 300, 300).await;
    // The standby's readers see the leader's progress.
    wait_for(&second, "test_counts", head).await;
    assert_eq!(
        schema_of(&second, "test_counts"),
        schema_of(&first, "test_counts")
    );
    first.shutdown().await;
    let head = append_workload(&store, 600, 300).await;
    wait_for(&second, "test_counts", head).await;
    assert_eq!(state(&second), RunState::Following);
    let schema = schema_of(&second, "test_counts");
    let client = db.client().await;
    assert_eq!(
        scalar(&client, &format!("SELECT n FROM {schema}.total")).await,
        900
    );
    second.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Server wiring.

/// The server starts every projection of `models::all()` and `/readyz` lists each one with its
/// position, lag and state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_lists_every_read_model_with_position_lag_and_state() {
    let db = TestDb::create().await;
    let settings = mykey_api::config::Settings::from_lookup(|k| {
        (k == "MYKEY_LISTEN").then(|| "127.0.0.1:0".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let app = mykey_api::startup::Application::build(&settings, db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let url = format!("http://127.0.0.1:{}/readyz", app.port());
    tokio::spawn(app.run_until_stopped());
    let body: serde_json::Value = reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let listed = body["projections"]
        .as_array()
        .unwrap_or_else(|| panic!("no projections in {body}"));
    let names: Vec<&str> = listed.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut expected: Vec<&str> = mykey_projections::models::all()
        .iter()
        .map(|p| p.name())
        .collect();
    expected.sort();
    assert_eq!(names, expected, "{body}");
    for p in listed {
        for field in ["position", "lag_events", "lag_seconds", "state", "version"] {
            assert!(!p[field].is_null(), "{field} missing in {p}");
        }
    }
    // The registry exists even with no read model yet: the runner created it at start.
    let client = db.client().await;
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'read_models'"
        )
        .await,
        2
    );
}

async fn schema_exists(client: &tokio_postgres::Client, schema: &str) -> bool {
    scalar(
        client,
        &format!("SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'"),
    )
    .await
        == 1
}

/// At start, a build abandoned long ago (an interrupted rebuild by hand) is dropped, while a
/// build still moving is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_build_is_dropped_at_start_and_a_live_one_kept() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let (running, _) = start(&db, &store, vec![Arc::new(Revocations)]).await;
    eventually("a serving schema", WAIT, || async {
        running.active_schema("test_revocations")
    })
    .await;
    running.shutdown().await;
    let mut client = db.client().await;
    let abandoned = registry::begin_rebuild(&mut client, &Revocations)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .target
        .schema;
    let live = registry::begin_rebuild(&mut client, &Revocations)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .target
        .schema;
    client
        .execute(
            "UPDATE read_models.schemas SET updated_at = now() - interval '2 hours' \
             WHERE schema_name = $1",
            &[&abandoned],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (running, _) = start(&db, &store, vec![Arc::new(Revocations)]).await;
    eventually("the abandoned build to be dropped", WAIT, || async {
        (!schema_exists(&client, &abandoned).await).then_some(())
    })
    .await;
    assert!(schema_exists(&client, &live).await);
    running.shutdown().await;
}

/// Appends rounds of the read models' generated workload (every event type, consistent, so no
/// read model refuses it). Returns the last position written.
async fn append_models_workload<S: mykey_store::EventStore>(
    store: &S,
    rounds: std::ops::Range<u64>,
) -> u64 {
    let mut last = 0;
    let requests = mykey_projections::models::workload::batched(rounds)
        .unwrap_or_else(|e| panic!("workload: {e}"));
    for request in requests {
        last = store
            .append(request)
            .await
            .unwrap_or_else(|e| panic!("append: {e}"))
            .last_position;
    }
    last
}
