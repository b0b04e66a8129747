//! Issue 12: `mykey-replay replay` and `diff` — a replay as of position p equals the live read
//! model captured when the log stood at p; replay from a verified export equals replay from
//! PostgreSQL; diff finds rows edited by hand; bad arguments are usage errors.

use clap::Parser;
use mykey_projections::models::workload;
use mykey_projections::{Projections, RunnerOptions};
use mykey_replay::replay::{ReplayArgs, ReplaySummary, Replayed};
use mykey_replay::{Cli, Outcome, ToolError};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::EventStore;
use mykey_tests::{dump_tables, TestDb};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on waiting for the runner: generous for a loaded CI machine, finite.
const WAIT: Duration = Duration::from_secs(60);

async fn store(db: &TestDb) -> PgEventStore {
    PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect the event store: {e}"))
}

/// Appends the generated workload's rounds; returns the last position.
async fn append_rounds(store: &PgEventStore, rounds: std::ops::Range<u64>) -> u64 {
    let mut last = 0;
    for r in rounds {
        for request in workload::round(r).unwrap_or_else(|e| panic!("round {r}: {e}")) {
            last = store
                .append(request)
                .await
                .unwrap_or_else(|e| panic!("append: {e}"))
                .last_position;
        }
    }
    last
}

async fn start_runner(db: &TestDb, store: &PgEventStore) -> Projections {
    Projections::start(
        store.clone(),
        db.config(),
        mykey_projections::models::all(),
        &prometheus::Registry::new(),
        RunnerOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("start the runner: {e}"))
}

async fn wait_all(running: &Projections, position: u64) {
    for p in mykey_projections::models::all() {
        running
            .wait_for(p.name(), position, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{} did not reach {position}: {e}", p.name()));
    }
}

/// Every table of `schema`, each as its rows in JSON, sorted: equal dumps mean equal tables.
async fn dump(client: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, Vec<String>> {
    let tables = dump_tables(client, schema, &[]).await;
    assert!(!tables.is_empty(), "{schema} has no tables");
    tables
}

async fn schema_exists(client: &tokio_postgres::Client, schema: &str) -> bool {
    client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some()
}

fn args(db: &TestDb, projection: &str, schema: &str) -> ReplayArgs {
    ReplayArgs {
        projection: projection.into(),
        database_url: db.url(),
        file: None,
        to_position: None,
        as_of: None,
        schema: Some(schema.into()),
        drop: false,
        json: false,
    }
}

async fn replay(args: &ReplayArgs) -> ReplaySummary {
    match mykey_replay::replay::replay(args).await {
        Ok(Replayed::Done(s)) => s,
        other => panic!("replay {}: {other:?}", args.projection),
    }
}

/// Runs a command line; returns the outcome and what it printed.
async fn cli(argv: &[&str]) -> (Result<Outcome, ToolError>, String) {
    let cli = Cli::try_parse_from(std::iter::once("mykey-replay").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let mut out = Vec::new();
    let outcome = mykey_replay::run(cli, &mut out).await;
    (outcome, String::from_utf8(out).unwrap_or_default())
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("replay-rm-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runner's live tables captured when the log stood at p equal a replay to p made after
/// more events were appended — for every projection of `models::all()`; `--as-of` the time
/// of event p gives the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_as_of_p_equals_the_live_read_model_at_p() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let p = append_rounds(&store, 0..4).await;
    let running = start_runner(&db, &store).await;
    wait_all(&running, p).await;
    let client = db.client().await;
    let mut live_at_p = BTreeMap::new();
    for proj in mykey_projections::models::all() {
        // Nothing is appended until the dumps are taken: each schema stands exactly at p.
        let schema = running
            .active_schema(proj.name())
            .unwrap_or_else(|| panic!("{} has no schema", proj.name()));
        live_at_p.insert(proj.name(), dump(&client, &schema).await);
    }
    let head = append_rounds(&store, 4..6).await;
    assert!(head > p);
    for proj in mykey_projections::models::all() {
        let name = proj.name();
        let mut a = args(&db, name, &format!("replay_t_{name}"));
        a.to_position = Some(p);
        let s = replay(&a).await;
        assert_eq!(s.position, p, "{name}");
        assert_eq!(s.events_read, p, "{name}");
        let rows: i64 = s.tables.iter().map(|t| t.rows).sum();
        assert!(rows > 0, "{name}: the workload fills every read model");
        assert_eq!(
            dump(&client, &s.schema).await,
            live_at_p[name],
            "{name}: replay to {p} differs from the live read model at {p}"
        );
    }
    // As of the time of event p: the same position, the same rows.
    let at_p: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT recorded_at FROM events WHERE global_position = $1",
            &[&i64::try_from(p).unwrap_or(0)],
        )
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let as_of = at_p
        .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| panic!()))
        .to_rfc3339();
    let (outcome, text) = cli(&[
        "replay",
        "ppids",
        "--database-url",
        &db.url(),
        "--as-of",
        &as_of,
        "--schema",
        "replay_asof",
        "--json",
    ])
    .await;
    assert_eq!(outcome.unwrap_or_else(|e| panic!("{e}")), Outcome::Done);
    let summary: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(summary["position"], p, "{text}");
    assert_eq!(dump(&client, "replay_asof").await, live_at_p["ppids"]);
    // Live tables were not touched by the replays: the runner's schemas still follow the log.
    wait_all(&running, head).await;
    running.shutdown().await;
}

/// export → verify → replay from the file gives the same tables as replay from PostgreSQL,
/// to the end and to a position midway; a tampered file stops the replay with the verify
/// error at its line and leaves no schema behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_verified_export_equals_replay_from_postgres() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let head = append_rounds(&store, 0..3).await;
    let dir = TempDir::new();
    let file = dir.0.join("log.ndjson");
    let file_s = file.display().to_string();
    let url = db.url();
    let (outcome, text) = cli(&["export", "--database-url", &url, "--output", &file_s]).await;
    assert_eq!(
        outcome.unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done,
        "{text}"
    );
    let (outcome, text) = cli(&["verify", "--file", &file_s]).await;
    assert_eq!(
        outcome.unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done,
        "{text}"
    );
    let client = db.client().await;
    let mid = head / 2;
    for proj in mykey_projections::models::all() {
        let name = proj.name();
        for to in [None, Some(mid)] {
            let suffix = to.map_or("end".to_owned(), |p| p.to_string());
            let mut from_db = args(&db, name, &format!("replay_db_{name}_{suffix}"));
            from_db.to_position = to;
            let mut from_file = args(&db, name, &format!("replay_file_{name}_{suffix}"));
            from_file.to_position = to;
            from_file.file = Some(file.clone());
            let a = replay(&from_db).await;
            let b = replay(&from_file).await;
            assert_eq!(a.position, to.unwrap_or(head), "{name}");
            assert_eq!(b.position, a.position, "{name}");
            assert_eq!(b.events_applied, a.events_applied, "{name}");
            assert_eq!(
                dump(&client, &a.schema).await,
                dump(&client, &b.schema).await,
                "{name} to {suffix}: file and PostgreSQL differ"
            );
        }
    }
    // --as-of from the file stops where it stops in PostgreSQL.
    let at_mid: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT recorded_at FROM events WHERE global_position = $1",
            &[&i64::try_from(mid).unwrap_or(0)],
        )
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut from_db = args(&db, "ppids", "replay_asof_db");
    from_db.as_of = Some(at_mid);
    let mut from_file = args(&db, "ppids", "replay_asof_file");
    from_file.as_of = Some(at_mid);
    from_file.file = Some(file.clone());
    let a = replay(&from_db).await;
    let b = replay(&from_file).await;
    assert!(a.position >= mid && a.position < head, "{a:?}");
    assert_eq!(b.position, a.position);
    assert_eq!(
        dump(&client, &a.schema).await,
        dump(&client, &b.schema).await
    );
    // Edit one event's payload in a copy (its manifest beside it): the replay stops there.
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let k = lines.len() / 3;
    let mut event: mykey_schemas::EventEnvelope =
        serde_json::from_str(&lines[k]).unwrap_or_else(|e| panic!("{e}"));
    // Still valid JSON, so only the hash can tell.
    event.payload.push(' ');
    lines[k] = serde_json::to_string(&event).unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.0.join("bad.ndjson");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    let mut a = args(&db, "ppids", "replay_bad");
    a.file = Some(bad.clone());
    match mykey_replay::replay::replay(&a).await {
        Ok(Replayed::Broken(why)) => {
            assert!(why.contains(&format!("line {}", k + 1)), "{why}");
            assert!(why.contains("edited"), "{why}");
        }
        other => panic!("a tampered file must stop the replay: {other:?}"),
    }
    assert!(!schema_exists(&client, "replay_bad").await);
    let bad_s = bad.display().to_string();
    let (outcome, text) = cli(&["replay", "ppids", "--database-url", &url, "--file", &bad_s]).await;
    assert_eq!(outcome.unwrap_or_else(|e| panic!("{e}")), Outcome::Failed);
    assert!(text.contains("does not verify"), "{text}");
    // A file cut short of its manifest's last position is a truncated tail.
    let cut = dir.0.join("cut.ndjson");
    std::fs::write(&cut, lines[..k].join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        mykey_replay::manifest::Manifest::path_for(&file),
        mykey_replay::manifest::Manifest::path_for(&cut),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut a = args(&db, "ppids", "replay_cut");
    a.file = Some(cut);
    match mykey_replay::replay::replay(&a).await {
        Ok(Replayed::Broken(why)) => assert!(why.contains("truncated"), "{why}"),
        other => panic!("a cut file must stop the replay: {other:?}"),
    }
    assert!(!schema_exists(&client, "replay_cut").await);
}

/// diff: equal right after a replay to the live position (exit 0); after the live table is
/// edited and a row deleted by hand, each is reported (exit 1); `drop` removes the replay's
/// schema and refuses any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_rows_edited_by_hand_in_the_live_table() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let head = append_rounds(&store, 0..3).await;
    let running = start_runner(&db, &store).await;
    wait_all(&running, head).await;
    let live = running
        .active_schema("ppids")
        .unwrap_or_else(|| panic!("no ppids schema"))
        .to_string();
    running.shutdown().await;
    let url = db.url();
    replay(&args(&db, "ppids", "replay_d")).await;
    let (outcome, text) = cli(&["diff", "--database-url", &url, "--schema", "replay_d"]).await;
    assert_eq!(
        outcome.unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done,
        "{text}"
    );
    assert!(text.contains("EQUAL"), "{text}");
    let client = db.client().await;
    let edited: String = client
        .query_one(
            &format!(
                "UPDATE {live}.ppid SET relying_party = 'edited-by-hand' \
                 WHERE ppid = (SELECT min(ppid) FROM {live}.ppid) RETURNING ppid"
            ),
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let deleted: String = client
        .query_one(
            &format!(
                "DELETE FROM {live}.ppid WHERE ppid = (SELECT max(ppid) FROM {live}.ppid) \
                 RETURNING ppid"
            ),
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let (outcome, text) = cli(&[
        "diff",
        "--database-url",
        &url,
        "--schema",
        "replay_d",
        "--json",
    ])
    .await;
    assert_eq!(outcome.unwrap_or_else(|e| panic!("{e}")), Outcome::Failed);
    assert_eq!(Outcome::Failed.exit_code(), std::process::ExitCode::from(1));
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(report["equal"], false);
    assert_eq!(report["live_schema"], live.as_str());
    let tables = report["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(tables.len(), 1, "{text}");
    let t = &tables[0];
    assert_eq!(t["table"], "ppid");
    assert_eq!(
        (&t["changed"], &t["only_in_replay"], &t["only_in_live"]),
        (&Value::from(1), &Value::from(1), &Value::from(0)),
        "{text}"
    );
    let rows = t["rows"].as_array().unwrap_or_else(|| panic!("{text}"));
    let changed = rows
        .iter()
        .find(|r| r["change"] == "changed")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(changed["key"]["ppid"], edited.as_str());
    assert_eq!(changed["live"]["relying_party"], "edited-by-hand");
    assert_ne!(changed["replay"]["relying_party"], "edited-by-hand");
    let gone = rows
        .iter()
        .find(|r| r["change"] == "only_in_replay")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(gone["key"]["ppid"], deleted.as_str());
    // A --live-schema that does not exist is a usage error, not "everything differs".
    let (outcome, _) = cli(&[
        "diff",
        "--database-url",
        &url,
        "--schema",
        "replay_d",
        "--live-schema",
        "no_such_live",
    ])
    .await;
    assert!(matches!(outcome, Err(ToolError::Usage(_))), "{outcome:?}");
    // Human output names the table and the change.
    let (_, text) = cli(&["diff", "--database-url", &url, "--schema", "replay_d"]).await;
    assert!(
        text.contains("ppid: 1 only in replay, 0 only in live, 1 changed"),
        "{text}"
    );
    // drop refuses anything but a replay's schema, then removes the replay's.
    client
        .batch_execute("CREATE SCHEMA plain_schema")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for schema in ["plain_schema", live.as_str(), "read_models"] {
        let (outcome, _) = cli(&["drop", "--database-url", &url, "--schema", schema]).await;
        assert!(
            matches!(outcome, Err(ToolError::Usage(_))),
            "{schema}: {outcome:?}"
        );
        assert!(schema_exists(&client, schema).await, "{schema}");
    }
    let (outcome, _) = cli(&["drop", "--database-url", &url, "--schema", "replay_d"]).await;
    assert_eq!(outcome.unwrap_or_else(|e| panic!("{e}")), Outcome::Done);
    assert!(!schema_exists(&client, "replay_d").await);
}

/// Bad arguments: usage errors (exit 2), nothing created, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replay_and_diff_arguments_are_usage_errors() {
    for argv in [
        &["replay"][..],
        &["replay", "ppids"][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            "x",
            "--to-position",
            "0",
        ][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            "x",
            "--as-of",
            "2026-11-01",
        ][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            "x",
            "--to-position",
            "3",
            "--as-of",
            "2026-11-01T00:00:00+09:00",
        ][..],
        &["diff", "--database-url", "x"][..],
        &[
            "diff",
            "--database-url",
            "x",
            "--schema",
            "s",
            "--limit",
            "99999999",
        ][..],
        &["drop", "--schema", "s"][..],
    ] {
        let parsed =
            Cli::try_parse_from(std::iter::once("mykey-replay").chain(argv.iter().copied()));
        match parsed {
            Err(e) => assert!(e.use_stderr(), "{argv:?}: {e}"),
            Ok(_) => panic!("{argv:?} parsed"),
        }
    }
    let db = TestDb::create().await;
    let store = store(&db).await;
    let head = append_rounds(&store, 0..1).await;
    let url = db.url();
    let beyond = (head + 1).to_string();
    for argv in [
        &["replay", "nope", "--database-url", &url][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            &url,
            "--schema",
            "rm_ppids_v1_g1",
        ][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            &url,
            "--schema",
            "public",
        ][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            &url,
            "--schema",
            "Bad-Name",
        ][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            &url,
            "--to-position",
            &beyond,
        ][..],
        &["replay", "ppids", "--database-url", "not a url at all ="][..],
        &["diff", "--database-url", &url, "--schema", "no_such_schema"][..],
        &["diff", "--database-url", &url, "--schema", "pg_catalog"][..],
    ] {
        let (outcome, _) = cli(argv).await;
        assert!(
            matches!(outcome, Err(ToolError::Usage(_))),
            "{argv:?}: {outcome:?}"
        );
    }
    let (outcome, _) = cli(&[
        "replay",
        "ppids",
        "--database-url",
        &url,
        "--file",
        "/nonexistent/log.ndjson",
    ])
    .await;
    assert!(matches!(outcome, Err(ToolError::Io { .. })), "{outcome:?}");
    // An existing schema is never reused; a replay into a fresh one works, a second is refused.
    replay(&args(&db, "ppids", "replay_once")).await;
    let (outcome, _) = cli(&[
        "replay",
        "ppids",
        "--database-url",
        &url,
        "--schema",
        "replay_once",
    ])
    .await;
    assert!(matches!(outcome, Err(ToolError::Usage(_))), "{outcome:?}");
    // Nothing but the one replay's schema was created.
    let client = db.client().await;
    let scratch: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'replay%' OR nspname LIKE 'rm_%'",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scratch, 1);
}
