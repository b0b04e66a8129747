//! The PostgreSQL event log against a real server: the shared contract, races, gap-free
//! visibility, idempotency, tamper detection, append-only enforcement, and a SIGKILLed writer.

use mykey_schemas::StreamId;
use mykey_store::contract::{self, new_metadata, new_stream, single};
use mykey_store::pg::migrations::{self, Migration, MIGRATIONS};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{
    verify, AppendError, AppendOutcome, AppendRequest, ChainBreakKind, EventStore, ExpectedVersion,
    StoreError, StreamAppend,
};
use mykey_tests::TestDb;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Barrier};
use uuid::Uuid;

/// Bound on any single wait in these tests (a committed event reaching a subscriber, a line
/// from the child process): generous for a loaded CI machine, finite so a bug fails the test.
const WAIT: Duration = Duration::from_secs(60);

async fn connect(db: &TestDb) -> PgEventStore {
    PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect the event store: {e}"))
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .and_then(|r| r.try_get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The shared contract, one test (and database) per property.

macro_rules! contract_on_pg {
    ($($name:ident),* $(,)?) => {
        mod contract_pg {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = TestDb::create().await;
                    contract::$name(&connect(&db).await).await;
                }
            )*
        }
    };
}

contract_on_pg!(
    conflict_is_typed_and_writes_nothing,
    expected_version_semantics,
    idempotent_retry_returns_first_outcome,
    multi_stream_append_is_all_or_nothing,
    reads_page_in_order,
    read_streams_returns_each_whole_stream,
    events_round_trip_byte_exact,
    validation_rejects_before_writing,
    reused_event_id_is_refused_and_writes_nothing,
    subscribe_catches_up_then_follows,
    verify_passes_on_a_clean_log,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_run_all_on_one_database() {
    let db = TestDb::create().await;
    contract::run_all(&connect(&db).await).await;
}

// ---------------------------------------------------------------------------------------------
// Migrations.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_starting_at_once_migrate_once() {
    let db = TestDb::create().await;
    let (a, b) = tokio::join!(
        PgEventStore::connect(db.config(), PgStoreOptions::default()),
        PgEventStore::connect(db.config(), PgStoreOptions::default()),
    );
    let (a, b) = (
        a.unwrap_or_else(|e| panic!("first: {e}")),
        b.unwrap_or_else(|e| panic!("second: {e}")),
    );
    let applied = count(&db, "SELECT count(*) FROM schema_migrations").await;
    assert_eq!(applied, MIGRATIONS.len() as i64);
    // Both work against the one schema.
    let s = new_stream("mig");
    a.append(single(&s, ExpectedVersion::NoStream, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    b.append(single(&s, ExpectedVersion::Exact(1), 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A third connect applies nothing.
    let mut client = db.client().await;
    let report = migrations::migrate(&mut client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.applied.is_empty() && report.unknown.is_empty(),
        "{report:?}"
    );
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    migrations::migrate(&mut client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut edited: Vec<Migration> = MIGRATIONS.to_vec();
    edited[0].sql = "CREATE TABLE events (x int)";
    match migrations::migrate_with(&mut client, &edited).await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("was changed"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation happens before any I/O.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_refused_before_any_io_and_write_nothing() {
    let db = TestDb::create().await;
    let store = connect(&db).await;
    // Cut every connection the store has: a request that reached the database would now fail
    // with Unavailable, so a typed validation error proves the check ran first.
    let killed = count(
        &db,
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .await;
    assert!(killed >= 2, "writer and listener connections: {killed}");
    for (name, request, check) in contract::rejected_requests() {
        let r = store.append(request).await;
        assert!(check(&r), "{name}: {r:?}");
    }
    // A malformed stream id cannot even be constructed, so it cannot reach an append.
    assert!(matches!(
        StreamId::parse("Not A Stream"),
        Err(mykey_schemas::EnvelopeError::MalformedStreamId(_))
    ));
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM commands").await, 0);
    // The store recovers: the writer reconnects for the next batch.
    let s = new_stream("limits");
    let mut last = None;
    for _ in 0..3 {
        last = Some(store.append(single(&s, ExpectedVersion::Any, 1)).await);
        if matches!(last, Some(Ok(_))) {
            break;
        }
    }
    assert!(matches!(last, Some(Ok(_))), "{last:?}");
}

// ---------------------------------------------------------------------------------------------
// (a) Racing for the next version: exactly one winner per version.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_get_exactly_one_winner_per_version() {
    const RACERS: usize = 32;
    const ROUNDS: u64 = 6;
    let db = TestDb::create().await;
    // Two stores: two writers, two pools, as with two server processes.
    let stores = [connect(&db).await, connect(&db).await];
    let s = new_stream("race");
    for round in 0..ROUNDS {
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(round)
        };
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let store = stores[i % 2].clone();
            let barrier = barrier.clone();
            let request = single(&s, expected, 1);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.append(request).await
            }));
        }
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap_or_else(|e| panic!("task: {e}")) {
                Ok(o) => {
                    winners += 1;
                    assert_eq!(o.streams[0].first_version, round + 1);
                }
                Err(AppendError::Conflict {
                    stream,
                    expected: e,
                    actual,
                }) => {
                    assert_eq!((stream, e, actual), (s.clone(), expected, round + 1));
                }
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let events = mykey_store::read_full_stream(&stores[0], &s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len() as u64, ROUNDS);
}

// ---------------------------------------------------------------------------------------------
// (b) Gap-free visibility under concurrent writers, followed by a live subscriber.

async fn gap_free_stress(db: &TestDb, stores: Vec<PgEventStore>) {
    const WRITERS: usize = 16;
    const RUN_FOR: Duration = Duration::from_secs(3);
    let mut sub = stores[0].subscribe(1);
    let (target_tx, mut target_rx) = watch::channel(None::<u64>);
    let follower = tokio::spawn(async move {
        let mut seen: Vec<(u64, Uuid)> = Vec::new();
        loop {
            let target = *target_rx.borrow_and_update();
            if let Some(t) = target {
                if seen.last().map_or(0, |(p, _)| *p) >= t {
                    return seen;
                }
            }
            tokio::select! {
                e = sub.recv() => match e {
                    Some(Ok(e)) => seen.push((e.global_position, e.event_id)),
                    Some(Err(e)) => panic!("subscription error: {e}"),
                    None => panic!("subscription ended"),
                },
                changed = target_rx.changed() => {
                    if changed.is_err() {
                        panic!("target sender dropped");
                    }
                }
            }
        }
    });

    let deadline = Instant::now() + RUN_FOR;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = stores[w % stores.len()].clone();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            let mut written = 0u64;
            while Instant::now() < deadline {
                let s =
                    StreamId::new("gap", rng.gen_range(0..40)).unwrap_or_else(|e| panic!("{e}"));
                let n = rng.gen_range(1..=3);
                let o = store
                    .append(single(&s, ExpectedVersion::Any, n))
                    .await
                    .unwrap_or_else(|e| panic!("writer {w}: {e}"));
                written += o.last_position - o.first_position + 1;
            }
            written
        }));
    }
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap_or_else(|e| panic!("writer: {e}"));
    }
    let head = stores[0].head().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head, written, "every acknowledged event, nothing else");
    target_tx.send_replace(Some(head));
    let seen = tokio::time::timeout(WAIT, follower)
        .await
        .unwrap_or_else(|_| panic!("the subscriber did not reach head {head} within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("follower: {e}"));

    let rows = db
        .client()
        .await
        .query(
            "SELECT global_position, event_id FROM events ORDER BY global_position",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stored: Vec<(u64, Uuid)> = rows
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Uuid>(1)))
        .collect();
    assert_eq!(seen.len(), stored.len());
    assert_eq!(seen, stored, "the subscriber saw exactly the log, in order");
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, (p, _))| *p == i as u64 + 1),
        "positions are dense from 1"
    );
    assert!(
        written > 100,
        "the stress wrote too little to mean much: {written}"
    );
    let report = verify(&stores[0], 1, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_sees_a_gap_free_log_under_concurrent_writers() {
    let db = TestDb::create().await;
    let store = connect(&db).await;
    gap_free_stress(&db, vec![store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_sees_a_gap_free_log_with_two_stores_writing() {
    let db = TestDb::create().await;
    // The subscriber follows store 0; half the events come from store 1 and reach it only
    // through NOTIFY.
    let stores = vec![connect(&db).await, connect(&db).await];
    gap_free_stress(&db, stores).await;
}

// ---------------------------------------------------------------------------------------------
// (c) Idempotent retries, also concurrent and across stores.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_command_write_once() {
    const RETRIES: usize = 16;
    let db = TestDb::create().await;
    let stores = [connect(&db).await, connect(&db).await];
    let a = new_stream("idem");
    let b = new_stream("idem");
    let request = AppendRequest {
        metadata: new_metadata(),
        streams: vec![
            StreamAppend {
                stream: a.clone(),
                expected: ExpectedVersion::NoStream,
                events: contract::new_events(2),
            },
            StreamAppend {
                stream: b.clone(),
                expected: ExpectedVersion::NoStream,
                events: contract::new_events(1),
            },
        ],
    };
    let barrier = Arc::new(Barrier::new(RETRIES));
    let mut tasks = Vec::new();
    for i in 0..RETRIES {
        let store = stores[i % 2].clone();
        let (barrier, request) = (barrier.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.append(request).await
        }));
    }
    let mut outcomes: Vec<AppendOutcome> = Vec::new();
    for t in tasks {
        outcomes.push(
            t.await
                .unwrap_or_else(|e| panic!("task: {e}"))
                .unwrap_or_else(|e| panic!("a retry must not fail: {e}")),
        );
    }
    assert_eq!(outcomes.iter().filter(|o| !o.deduplicated).count(), 1);
    let first = outcomes
        .iter()
        .find(|o| !o.deduplicated)
        .cloned()
        .unwrap_or_else(|| panic!("no first outcome"));
    for o in &outcomes {
        assert_eq!(
            o,
            &AppendOutcome {
                deduplicated: o.deduplicated,
                ..first.clone()
            }
        );
    }
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 3);
    assert_eq!(count(&db, "SELECT count(*) FROM commands").await, 1);
    // A later sequential retry, after a restart (a new store), still gets the first outcome.
    drop(stores);
    let again = connect(&db)
        .await
        .append(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        again,
        AppendOutcome {
            deduplicated: true,
            ..first
        }
    );
}

/// A constraint violation caused by one request (here: a reused event id) fails that request
/// only, not the others batched with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_event_id_fails_only_its_own_append() {
    const OTHERS: usize = 15;
    let db = TestDb::create().await;
    let store = connect(&db).await;
    let first = single(&new_stream("dup"), ExpectedVersion::NoStream, 1);
    let reused_id = first.streams[0].events[0].event_id;
    store.append(first).await.unwrap_or_else(|e| panic!("{e}"));
    let barrier = Arc::new(Barrier::new(OTHERS + 1));
    let mut tasks = Vec::new();
    for i in 0..=OTHERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        let mut request = single(&new_stream("dup"), ExpectedVersion::NoStream, 2);
        if i == 0 {
            request.streams[0].events[1].event_id = reused_id;
        }
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.append(request).await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap_or_else(|e| panic!("task: {e}")));
    }
    match &results[0] {
        Err(AppendError::EventIdReused(id)) => assert_eq!(*id, reused_id),
        other => panic!("the reused event id must be refused as such: {other:?}"),
    }
    for (i, r) in results.iter().enumerate().skip(1) {
        assert!(
            r.is_ok(),
            "append {i} was batched with the bad one and failed: {r:?}"
        );
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM events").await,
        1 + 2 * OTHERS as i64
    );
    let report = verify(&store, 1, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_intact(), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// (d) verify finds the exact first broken position after tampering (as superuser, with the
// append-only triggers bypassed).

async fn seeded_log(db: &TestDb) -> PgEventStore {
    let store = connect(db).await;
    for i in 0..5 {
        let s = StreamId::new("tamper", i).unwrap_or_else(|e| panic!("{e}"));
        store
            .append(single(&s, ExpectedVersion::NoStream, 4))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let report = verify(&store, 1, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_intact() && report.verified == 20, "{report:?}");
    store
}

async fn first_break(store: &PgEventStore) -> (u64, ChainBreakKind) {
    let report = verify(store, 1, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b = report
        .first_break
        .unwrap_or_else(|| panic!("the tampering went unnoticed"));
    (b.position, b.kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_payload_edited_by_hand() {
    let db = TestDb::create().await;
    let store = seeded_log(&db).await;
    db.client()
        .await
        .batch_execute(
            "SET session_replication_role = replica; \
             UPDATE events SET payload = '{\"tampered\":true}' WHERE global_position = 7",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (position, kind) = first_break(&store).await;
    assert_eq!(position, 7);
    assert!(
        matches!(kind, ChainBreakKind::HashMismatch { .. }),
        "{kind:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_deleted_row() {
    let db = TestDb::create().await;
    let store = seeded_log(&db).await;
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete; \
             DELETE FROM events WHERE global_position = 5; \
             ALTER TABLE events ENABLE TRIGGER events_refuse_update_delete",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (position, kind) = first_break(&store).await;
    assert_eq!(
        (position, kind),
        (5, ChainBreakKind::Missing { found: Some(6) })
    );
    // A range that starts right after the hole is intact in itself: the hole is reported by
    // whoever verifies it, not blamed on the range's first event.
    let after = verify(&store, 6, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(after.is_intact(), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_envelope_cannot_hold_is_reported_corrupt_at_its_position() {
    let db = TestDb::create().await;
    let store = seeded_log(&db).await;
    db.client()
        .await
        .batch_execute(
            "SET session_replication_role = replica; \
             UPDATE events SET stream_id = 'Not A Stream' WHERE global_position = 3",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    match store.read_all(1, 10).await {
        Err(StoreError::Corrupt { position, .. }) => assert_eq!(position, 3),
        other => panic!("expected Corrupt at 3: {other:?}"),
    }
    // Reads that do not touch the row still work.
    let before = store.read_all(1, 2).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_two_rows_swapped() {
    let db = TestDb::create().await;
    let store = seeded_log(&db).await;
    db.client()
        .await
        .batch_execute(
            "SET session_replication_role = replica; \
             UPDATE events SET global_position = 1000003 WHERE global_position = 3; \
             UPDATE events SET global_position = 3 WHERE global_position = 4; \
             UPDATE events SET global_position = 4 WHERE global_position = 1000003",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (position, kind) = first_break(&store).await;
    assert_eq!(position, 3);
    assert!(
        matches!(kind, ChainBreakKind::HashMismatch { .. }),
        "{kind:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (e) Append-only for the application role (which owns the tables, so only the trigger can
// stop it) and for a superuser who does not deliberately bypass triggers.

/// A login role for one test, dropped after the test's database (declare it before the
/// `TestDb` so it is dropped after it: a role cannot be dropped while it owns objects).
struct TestRole(String);

impl Drop for TestRole {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = mykey_tests::connect(&mykey_tests::admin_config()).await;
                admin
                    .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

fn assert_refused(r: Result<u64, tokio_postgres::Error>, what: &str) {
    match r {
        Ok(n) => panic!("{what} was allowed ({n} rows)"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{what}: not a database error: {e}"));
            assert!(
                db.message().contains("append-only"),
                "{what}: not the trigger's error: {}",
                db.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_append_only_even_for_its_owner() {
    let role = TestRole(format!(
        "mykey_app_{}",
        &Uuid::new_v4().simple().to_string()[..12]
    ));
    let admin = mykey_tests::connect(&mykey_tests::admin_config()).await;
    admin
        .batch_execute(&format!("CREATE ROLE {} LOGIN", role.0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let db = TestDb::create().await;
    db.client()
        .await
        .batch_execute(&format!(
            "GRANT USAGE, CREATE ON SCHEMA public TO {}",
            role.0
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut app_config = db.config();
    app_config.user(&role.0);
    // The application role runs the migrations, so it owns the tables.
    let store = PgEventStore::connect(app_config.clone(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .append(single(&new_stream("own"), ExpectedVersion::NoStream, 2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let app = mykey_tests::connect(&app_config).await;
    let superuser = db.client().await;
    for (who, client) in [("owner", &app), ("superuser", &superuser)] {
        for table in ["events", "commands"] {
            for sql in [
                format!("UPDATE {table} SET recorded_at = now()"),
                format!("DELETE FROM {table}"),
                format!("TRUNCATE {table}"),
            ] {
                assert_refused(
                    client.execute(sql.as_str(), &[]).await,
                    &format!("{who}: {sql}"),
                );
            }
        }
    }
    let owner = count(
        &db,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'events' \
         AND tableowner <> current_user",
    )
    .await;
    assert_eq!(owner, 1, "the application role owns the events table");
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 2);
    drop(store);
    drop(db);
}

// ---------------------------------------------------------------------------------------------
// (f) A writer process killed with SIGKILL mid-flight loses no acknowledged command and leaves
// no partial one.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_writer_loses_no_acknowledged_command() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    const ACKS_BEFORE_KILL: usize = 400;
    let db = TestDb::create().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_load_writer"))
        .env("DATABASE_URL", db.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the child writer: {e}"));
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("child stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let mut acked: HashSet<Uuid> = HashSet::new();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no acknowledgement within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("read child stdout: {e}"))
            .unwrap_or_else(|| panic!("the child exited after {} acks", acked.len()));
        acked.insert(Uuid::parse_str(line.trim()).unwrap_or_else(|e| panic!("{line:?}: {e}")));
    }
    // SIGKILL while its tasks keep appending: some batches are mid-transaction.
    child
        .start_kill()
        .unwrap_or_else(|e| panic!("kill the child: {e}"));
    child.wait().await.unwrap_or_else(|e| panic!("reap: {e}"));
    // Lines the child managed to print before dying are acknowledgements too.
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(id) = Uuid::parse_str(line.trim()) {
            acked.insert(id);
        }
    }

    // A new store waits for the dead child's transaction to end (the lock) before it reads.
    let store = connect(&db).await;
    let head = store.head().await.unwrap_or_else(|e| panic!("{e}"));
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT command_id, first_position, last_position FROM commands",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let commands: HashMap<Uuid, (i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for id in &acked {
        assert!(
            commands.contains_key(id),
            "acknowledged command {id} is missing"
        );
    }
    // Every command's events are all there, exactly at its recorded positions.
    let per_command = client
        .query(
            "SELECT command_id, count(*), min(global_position), max(global_position) \
             FROM events GROUP BY command_id",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        per_command.len(),
        commands.len(),
        "events without a command or vice versa"
    );
    for r in &per_command {
        let id: Uuid = r.get(0);
        let (n, lo, hi): (i64, i64, i64) = (r.get(1), r.get(2), r.get(3));
        let (first, last) = commands
            .get(&id)
            .copied()
            .unwrap_or_else(|| panic!("events of {id} without a command row: a partial append"));
        assert_eq!((n, lo, hi), (last - first + 1, first, last), "command {id}");
    }
    let total = count(&db, "SELECT count(*) FROM events").await;
    assert_eq!(total as u64, head, "positions are dense");
    let versions_dense = count(
        &db,
        "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id \
         HAVING count(*) <> max(stream_version)) t",
    )
    .await;
    assert_eq!(versions_dense, 0, "stream versions are dense");
    let report = verify(&store, 1, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_intact(), "{report:?}");
    assert!(head as usize >= acked.len());
}
