//! Read models, events in → rows out: the generated workload (real command handlers, every
//! event type) is applied to each projection in its own schema, and the tables are read back
//! sorted and compared with a snapshot (`UPDATE_EXPECT=1` refreshes them). The typed queries
//! the doors will call are checked on the same rows, including their refusals.

use expect_test::{expect, Expect};
use mykey_domain::{
    ApplicationId, NoticeId, Ppid, ProgramId, RelyingPartyId, SubjectId, TestCardId,
};
use mykey_projections::exec::{create_schema, run_changes};
use mykey_projections::models::{
    self, counters, login_identity, notices, patches, ppids, programs, relying_parties, subjects,
    test_cards, PageRequest, QueryError,
};
use mykey_projections::{Projection, Recorded};
use mykey_schemas::{decode_any, EventEnvelope};
use mykey_tests::workload::{self, EVENTS_PER_ROUND};
use mykey_tests::TestDb;
use std::collections::BTreeSet;
use tokio_postgres::Client;

/// The log of `rounds` workload rounds.
async fn workload_events(rounds: u32) -> Vec<EventEnvelope> {
    let w = workload::in_memory();
    for r in 1..=rounds {
        w.round(r).await;
    }
    w.cmds.store().all_events()
}

fn schema_of(p: &dyn Projection) -> String {
    format!("{}_v{}", p.name(), p.version())
}

/// Applies `events` to `p` in a fresh schema, in one transaction (as a rebuild does).
async fn project(client: &mut Client, p: &dyn Projection, events: &[EventEnvelope]) -> String {
    let schema = schema_of(p);
    let tx = client
        .transaction()
        .await
        .unwrap_or_else(|e| panic!("begin: {e}"));
    create_schema(&tx, &schema, p)
        .await
        .unwrap_or_else(|e| panic!("create {schema}: {e}"));
    let mut changes = Vec::new();
    for env in events {
        let event = decode_any(env).unwrap_or_else(|e| panic!("decode {}: {e}", env.event_type));
        changes.clear();
        p.apply(
            Recorded {
                envelope: env,
                event: &event,
            },
            &mut changes,
        )
        .unwrap_or_else(|e| panic!("{} at {}: {e}", p.name(), env.global_position));
        run_changes(&tx, &changes).await.unwrap_or_else(|e| {
            panic!(
                "{} at {} ({}): {e:?}",
                p.name(),
                env.global_position,
                env.event_type
            )
        });
    }
    tx.commit().await.unwrap_or_else(|e| panic!("commit: {e}"));
    schema
}

/// How a snapshot shows an `event_type` value it checked against the log (see
/// [`logged_event_types`]).
const LOGGED: &str = "<logged>";

/// The event types `schemas` defines (from its stored forms' schema files, `<type>.v<n>.json`).
fn known_event_types() -> &'static BTreeSet<String> {
    static KNOWN: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        mykey_schemas::all_schema_files()
            .into_iter()
            .filter_map(|f| f.file_name.split_once(".v").map(|(t, _)| t.to_owned()))
            .collect()
    })
}

/// Event types are named only in `schemas`, so a snapshot does not spell them: each
/// `event_type` value in `row` is checked against the logged event it describes — the row's
/// own `"position":N`, or the `event_id` just before it in a planned event — and shown as
/// [`LOGGED`].
fn logged_event_types(row: &str, events: &[EventEnvelope]) -> String {
    const KEY: &str = "\"event_type\":";
    let row_position = row.find("\"position\":").and_then(|i| {
        let digits: String = row[i + "\"position\":".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u64>().ok()
    });
    let mut out = String::with_capacity(row.len());
    let mut rest = row;
    while let Some(at) = rest.find(KEY) {
        let (before, after) = rest.split_at(at + KEY.len());
        out.push_str(before);
        let value_at = after
            .find('"')
            .unwrap_or_else(|| panic!("event_type value in {row}"));
        let value_len = after[value_at + 1..]
            .find('"')
            .unwrap_or_else(|| panic!("event_type value in {row}"));
        let named = &after[value_at + 1..value_at + 1 + value_len];
        // A planned event: `"event_id": "<uuid>", "event_type": ...` (jsonb key order).
        let planned_id = before[..before.len() - KEY.len()]
            .strip_suffix("\", ")
            .and_then(|b| b.rsplit_once("\"event_id\": \""))
            .map(|(_, id)| id.trim_end_matches('"'));
        let logged = match planned_id {
            Some(id) => events.iter().find(|e| e.event_id.to_string() == id),
            None => row_position.and_then(|p| events.iter().find(|e| e.global_position == p)),
        };
        match logged {
            Some(e) => assert_eq!(named, e.event_type, "event_type in {row}"),
            // A planned event that was never appended (a rejected or expired patch, or the
            // batched workload's own ids): it must still be a type `schemas` defines.
            None => assert!(
                planned_id.is_some() && known_event_types().contains(named),
                "event_type {named} names no logged event and no schemas type: {row}"
            ),
        }
        out.push_str(&after[..value_at]);
        out.push('"');
        out.push_str(LOGGED);
        out.push('"');
        rest = &after[value_at + 1 + value_len + 1..];
    }
    out.push_str(rest);
    out
}

/// Every table of `schema`, each row as JSON, sorted: the snapshot of a read model. Event
/// types in it are checked against `events` ([`logged_event_types`]).
async fn dump(client: &Client, schema: &str, events: &[EventEnvelope]) -> String {
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
             ORDER BY table_name",
            &[&schema],
        )
        .await
        .unwrap_or_else(|e| panic!("tables: {e}"));
    let mut out = String::new();
    for t in tables {
        let table: String = t.get(0);
        out.push_str(&format!("== {table}\n"));
        let rows = client
            .query(
                &format!("SELECT row_to_json(t)::text AS r FROM {schema}.{table} t ORDER BY r"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("rows of {table}: {e}"));
        for r in rows {
            out.push_str(&logged_event_types(r.get::<_, &str>(0), events));
            out.push('\n');
        }
    }
    out
}

/// One workload round applied to `p`: its snapshot checked, the client and schema returned
/// for query checks.
async fn fixture(p: &dyn Projection, expected: Expect) -> (TestDb, Client, String) {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    let events = workload_events(1).await;
    let schema = project(&mut client, p, &events).await;
    expected.assert_eq(&dump(&client, &schema, &events).await);
    (db, client, schema)
}

fn page(limit: u32) -> PageRequest {
    PageRequest::first(Some(limit)).unwrap_or_else(|e| panic!("{e}"))
}

fn rp(s: &str) -> RelyingPartyId {
    RelyingPartyId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Walks a list page by page with `limit` 1, returning every item's key.
macro_rules! walk {
    ($list:expr, $key:expr) => {{
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let req =
                PageRequest::new(Some(1), cursor.as_deref()).unwrap_or_else(|e| panic!("{e}"));
            let page = $list(req).await.unwrap_or_else(|e| panic!("{e}"));
            keys.extend(page.items.iter().map($key));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(keys.len() < 1_000, "pagination does not end");
        }
        keys
    }};
}

#[tokio::test]
async fn the_workload_has_every_event_type_and_every_projection_applies_it() {
    let events = workload_events(2).await;
    assert_eq!(events.len(), 2 * EVENTS_PER_ROUND);
    let written: BTreeSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let known: BTreeSet<String> = mykey_schemas::all_schema_files()
        .iter()
        .filter_map(|f| f.file_name.split('.').next().map(str::to_owned))
        .collect();
    let known: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    assert_eq!(written, known, "the workload must write every event type");

    let db = TestDb::create().await;
    let mut client = db.client().await;
    let all = models::all();
    let names: BTreeSet<&str> = all.iter().map(|p| p.name()).collect();
    assert_eq!(names.len(), all.len(), "projection names are unique");
    for p in &all {
        // An event outside the projection's categories must change nothing: the runner
        // skips those without decoding them.
        for env in &events {
            if p.categories().contains(&env.stream_id.category()) {
                continue;
            }
            let event = decode_any(env).unwrap_or_else(|e| panic!("decode: {e}"));
            let mut changes = Vec::new();
            let applied = p.apply(
                Recorded {
                    envelope: env,
                    event: &event,
                },
                &mut changes,
            );
            assert!(
                applied.is_ok() && changes.is_empty(),
                "{} reads {} outside its categories",
                p.name(),
                env.event_type
            );
        }
        let schema = project(&mut client, p.as_ref(), &events).await;
        assert!(
            dump(&client, &schema, &events).await.lines().count() > 2,
            "{} is empty",
            p.name()
        );
        assert!(
            !p.source().is_empty(),
            "{} has no source for its fingerprint",
            p.name()
        );
    }
}

#[tokio::test]
async fn ppids_per_relying_party_never_name_the_subject() {
    let (_db, client, s) = fixture(&ppids::Ppids, expect![[r#"
        == ppid
        {"ppid":"00000000000000000000000000000010","relying_party":"city-1","status":"active","revoked_by":null,"changed_by":null,"patch_id":null,"reason":null,"issued_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":18}
        {"ppid":"00000000000000000000000000000016","relying_party":"city-1","status":"revoked","revoked_by":"relying_party","changed_by":"city-1","patch_id":null,"reason":null,"issued_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":38}
        {"ppid":"0000000000000000000000000000001c","relying_party":"city-1","status":"invalidated","revoked_by":null,"changed_by":"op-2","patch_id":"00000000-0000-0000-0000-000100000001","reason":"wrong person","issued_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-02T02:00:00+00:00","position":59}
        {"ppid":"00000000000000000000000000000022","relying_party":"city-1","status":"active","revoked_by":null,"changed_by":null,"patch_id":null,"reason":null,"issued_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":30}
        {"ppid":"00000000000000000000000000000027","relying_party":"psp-1","status":"revoked","revoked_by":"citizen","changed_by":null,"patch_id":null,"reason":null,"issued_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":40}
    "#]]).await;
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1",
            &[&s],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(columns.contains(&"ppid".to_owned()));
    for c in &columns {
        assert!(
            !c.contains("subject") && !c.contains("cert") && !c.contains("serial"),
            "the PPID read model must not hold {c}"
        );
    }
    let city = rp("city-1");
    let list = walk!(
        |req: PageRequest| {
            let (client, s, city) = (&client, &s, &city);
            async move { ppids::list_for_rp(client, s, city, None, &req).await }
        },
        |p: &ppids::PpidView| p.ppid.clone()
    );
    assert_eq!(list.len(), 4);
    let active = ppids::list_for_rp(
        &client,
        &s,
        &city,
        Some(ppids::PpidStatus::Active),
        &page(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(active.items.len(), 2);
    let first = Ppid::parse(&list[0]).unwrap_or_else(|e| panic!("{e}"));
    // Another RP's PPID reads as absent, exactly like an unknown one.
    assert!(ppids::ppid_of(&client, &s, &rp("psp-1"), &first)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_none());
    assert!(ppids::ppid_of(&client, &s, &city, &first)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some());
    assert!(ppids::ppid(&client, &s, &first)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some());
    // Refusals: a bad cursor, a bad schema name.
    assert!(matches!(
        PageRequest::new(None, Some("not-a-cursor")),
        Err(QueryError::BadCursor)
    ));
    assert!(matches!(
        ppids::ppid(&client, "x; DROP TABLE ppid", &first).await,
        Err(QueryError::BadSchema(_))
    ));
}

#[tokio::test]
async fn relying_parties_with_kind_status_and_key_history() {
    let (_db, client, s) = fixture(&relying_parties::RelyingParties, expect![[r#"
        == relying_party
        {"id":"biz-1","code":"biz1","name":"RP biz-1","kind":"private_business","status":"active","status_reason":null,"key_version":1,"registered_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":7}
        {"id":"city-1","code":"131016","name":"RP city-1","kind":"municipality","status":"active","status_reason":null,"key_version":2,"registered_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":5}
        {"id":"lib-1","code":"lib1","name":"RP lib-1","kind":"library_system","status":"retired","status_reason":"replaced","key_version":1,"registered_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":8}
        {"id":"psp-1","code":"psp1","name":"RP psp-1","kind":"payment_service_provider","status":"active","status_reason":null,"key_version":1,"registered_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":2}
        == relying_party_key
        {"relying_party":"biz-1","version":1,"public_jwk":{"e": "AQAB", "n": "key-1", "alg": "RS256", "kty": "RSA", "use": "sig"},"added_at":"2026-04-01T00:00:00+00:00","added_by":"op-1"}
        {"relying_party":"city-1","version":1,"public_jwk":{"e": "AQAB", "n": "key-1", "alg": "RS256", "kty": "RSA", "use": "sig"},"added_at":"2026-04-01T00:00:00+00:00","added_by":"op-1"}
        {"relying_party":"city-1","version":2,"public_jwk":{"e": "AQAB", "n": "key-2", "alg": "RS256", "kty": "RSA", "use": "sig"},"added_at":"2026-04-01T00:00:00+00:00","added_by":"op-1"}
        {"relying_party":"lib-1","version":1,"public_jwk":{"e": "AQAB", "n": "key-1", "alg": "RS256", "kty": "RSA", "use": "sig"},"added_at":"2026-04-01T00:00:00+00:00","added_by":"op-1"}
        {"relying_party":"psp-1","version":1,"public_jwk":{"e": "AQAB", "n": "key-1", "alg": "RS256", "kty": "RSA", "use": "sig"},"added_at":"2026-04-01T00:00:00+00:00","added_by":"op-1"}
    "#]]).await;
    let ids = walk!(
        |req: PageRequest| {
            let (client, s) = (&client, &s);
            async move { relying_parties::list(client, s, None, None, &req).await }
        },
        |r: &relying_parties::RelyingPartyView| r.id.clone()
    );
    assert_eq!(ids, ["biz-1", "city-1", "lib-1", "psp-1"]);
    let retired = relying_parties::list(
        &client,
        &s,
        None,
        Some(relying_parties::Status::Retired),
        &page(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(retired.items.len(), 1);
    assert_eq!(retired.items[0].status_reason.as_deref(), Some("replaced"));
    let keys = relying_parties::key_history(&client, &s, &rp("city-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keys.iter().map(|k| k.version).collect::<Vec<_>>(), [1, 2]);
    let city = relying_parties::relying_party(&client, &s, &rp("city-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        city.map(|c| (c.kind, c.key_version)),
        Some((relying_parties::Kind::Municipality, 2))
    );
}

#[tokio::test]
async fn programs_and_applications_with_reviews_corrections_and_grants() {
    let (_db, client, s) = fixture(&programs::Programs, expect![[r#"
        == application
        {"id":"points-1.00000000-0000-0000-0000-00000000000f","reference":"892d6b34a43314104e93e431c7c11b8e","program":"points-1","subject":"00000000-0000-0000-0000-00000000000f","municipality":"city-1","payment_service":"psp-1","link_ref":"acct-0","status":"approved","approved_points":1000,"reject_reason":null,"granted_points":null,"reversal_owed_points":4000,"grant_failures":0,"last_grant_failure":null,"submitted_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-02T02:00:00+00:00","position":63}
        {"id":"points-1.00000000-0000-0000-0000-000000000015","reference":"b17a7f7246fd9791c6bfff3a81d54ab4","program":"points-1","subject":"00000000-0000-0000-0000-000000000015","municipality":"city-1","payment_service":"psp-1","link_ref":null,"status":"granted","approved_points":3000,"reject_reason":null,"granted_points":3000,"reversal_owed_points":0,"grant_failures":1,"last_grant_failure":"account frozen","submitted_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-02T02:00:00+00:00","position":61}
        {"id":"points-1.00000000-0000-0000-0000-00000000001b","reference":"77434bc4b60ddfff6710ea3a5cf83053","program":"points-1","subject":"00000000-0000-0000-0000-00000000001b","municipality":"city-1","payment_service":"psp-1","link_ref":null,"status":"rejected","approved_points":null,"reject_reason":"not resident","granted_points":null,"reversal_owed_points":0,"grant_failures":0,"last_grant_failure":null,"submitted_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":54}
        == application_event
        {"application":"points-1.00000000-0000-0000-0000-00000000000f","position":42,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"00000000-0000-0000-0000-00000000000f","actor_role":"citizen","patch_id":null,"detail":{"program": "points-1", "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-00000000000f","position":43,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"psp-1","actor_role":"relying_party","patch_id":null,"detail":{"link_ref": "acct-0", "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-00000000000f","position":48,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"city-1","actor_role":"relying_party","patch_id":null,"detail":{"points": 5000, "outcome": "approved"}}
        {"application":"points-1.00000000-0000-0000-0000-00000000000f","position":51,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"platform","actor_role":"system","patch_id":null,"detail":{"points": 5000, "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-00000000000f","position":62,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-2","actor_role":"operator","patch_id":"00000000-0000-0000-0000-000100000001","detail":{"reason": "miscounted", "outcome": {"points": 1000, "outcome": "approved"}, "patch_id": "00000000-0000-0000-0000-000100000001", "previous": {"points": 5000, "outcome": "approved"}, "reversal_owed_points": 5000}}
        {"application":"points-1.00000000-0000-0000-0000-00000000000f","position":63,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"psp-1","actor_role":"relying_party","patch_id":null,"detail":{"points": 1000, "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-000000000015","position":44,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"00000000-0000-0000-0000-000000000015","actor_role":"citizen","patch_id":null,"detail":{"program": "points-1", "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-000000000015","position":45,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"psp-1","actor_role":"relying_party","patch_id":null,"detail":{"link_ref": "acct-1", "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-000000000015","position":49,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"city-1","actor_role":"relying_party","patch_id":null,"detail":{"points": 3000, "outcome": "approved"}}
        {"application":"points-1.00000000-0000-0000-0000-000000000015","position":52,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"psp-1","actor_role":"relying_party","patch_id":null,"detail":{"reason": "account frozen", "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-000000000015","position":53,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"psp-1","actor_role":"relying_party","patch_id":null,"detail":{"points": 3000, "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-000000000015","position":61,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-2","actor_role":"operator","patch_id":"00000000-0000-0000-0000-000100000001","detail":{"reason": "wrong account", "patch_id": "00000000-0000-0000-0000-000100000001"}}
        {"application":"points-1.00000000-0000-0000-0000-00000000001b","position":46,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"00000000-0000-0000-0000-00000000001b","actor_role":"citizen","patch_id":null,"detail":{"program": "points-1", "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-00000000001b","position":47,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"psp-1","actor_role":"relying_party","patch_id":null,"detail":{"link_ref": "acct-2", "payment_service": "psp-1"}}
        {"application":"points-1.00000000-0000-0000-0000-00000000001b","position":50,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"city-1","actor_role":"relying_party","patch_id":null,"detail":{"reason": "not resident", "outcome": "rejected"}}
        {"application":"points-1.00000000-0000-0000-0000-00000000001b","position":54,"at":"2026-04-01T00:00:00+00:00","event_type":"<logged>","actor_id":"00000000-0000-0000-0000-00000000001b","actor_role":"citizen","patch_id":null,"detail":{"reason": "changed my mind", "patch_id": null}}
        == program
        {"id":"closed-1","municipality":"city-1","name":"Points closed-1","period_start":"2026-04-01T00:00:00+00:00","period_end":"2026-06-30T00:00:00+00:00","status":"closed","status_reason":null,"created_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":14}
        {"id":"points-1","municipality":"city-1","name":"Points points-1","period_start":"2026-04-01T00:00:00+00:00","period_end":"2026-07-30T00:00:00+00:00","status":"open","status_reason":null,"created_at":"2026-04-01T00:00:00+00:00","changed_at":"2026-04-01T00:00:00+00:00","position":13}
    "#]]).await;
    let program = ProgramId::parse("points-1").unwrap_or_else(|e| panic!("{e}"));
    let p = programs::program(&client, &s, &program)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.map(|p| p.status), Some(programs::ProgramStatus::Open));
    let filter = programs::ProgramFilter {
        municipality: Some(rp("city-1")),
        ..Default::default()
    };
    let all = programs::list_programs(&client, &s, &filter, &page(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.items.len(), 2);
    let f = programs::ApplicationFilter {
        program: Some(program.clone()),
        ..Default::default()
    };
    let apps = walk!(
        |req: PageRequest| {
            let (client, s, f) = (&client, &s, &f);
            async move { programs::list_applications(client, s, f, &req).await }
        },
        |a: &programs::ApplicationView| a.id.clone()
    );
    assert_eq!(apps.len(), 3);
    // The corrected application: approved again with fewer points, its grant owed back.
    let corrected = programs::list_applications(
        &client,
        &s,
        &programs::ApplicationFilter {
            status: Some(programs::ApplicationStatus::Approved),
            payment_service: Some(rp("psp-1")),
            ..Default::default()
        },
        &page(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let owed: Vec<_> = corrected
        .items
        .iter()
        .map(|a| (a.approved_points, a.reversal_owed_points))
        .collect();
    // 5,000 owed after the correction, 1,000 of it paid back by the provider.
    assert_eq!(owed, [(Some(1_000), 4_000)]);
    let subject = SubjectId(corrected.items[0].subject);
    let history =
        programs::application_history(&client, &s, &ApplicationId::of(&program, &subject))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    // Submitted, linked, reviewed, granted, corrected by the patch, reversal paid.
    assert_eq!(history.len(), 6);
    // Relying parties get an opaque reference that does not contain the subject id.
    let reference = &corrected.items[0].reference;
    assert!(!reference.contains(&subject.to_string()) && reference.len() == 32);
    let by_reference = programs::application_by_reference(&client, &s, reference)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(by_reference.as_ref(), corrected.items.first());
    let corrected_step = &history[history.len() - 2];
    assert!(corrected_step.patch_id.is_some());
    assert_eq!(
        history.last().map(|h| (h.event_type.as_str(), h.patch_id)),
        Some((<mykey_schemas::stored::application::ReversalPaidV1 as mykey_schemas::StoredEvent>::EVENT_TYPE, None))
    );
}

#[tokio::test]
async fn patches_with_request_plan_approvals_and_outcome() {
    let (_db, client, s) = fixture(&patches::Patches, expect![[r#"
        == patch
        {"patch_id":"00000000-0000-0000-0000-000100000001","ticket_id":"INC-1","reason":"municipality registered the wrong person","targets":["ppid-0000000000000000000000000000001c", "subject-00000000-0000-0000-0000-00000000001b", "application-points-1.00000000-0000-0000-0000-00000000000f", "application-points-1.00000000-0000-0000-0000-000000000015"],"actions":[{"ppid": "0000000000000000000000000000001c", "action": "invalidate_ppid", "reason": "wrong person"}, {"action": "unlink_payment_service", "reason": "wrong account", "program": "points-1", "subject": "00000000-0000-0000-0000-000000000015"}, {"action": "correct_review_outcome", "reason": "miscounted", "outcome": {"points": 1000, "outcome": "approved"}, "program": "points-1", "subject": "00000000-0000-0000-0000-00000000000f"}],"requested_by":"op-1","requested_at":"2026-04-02T02:00:00+00:00","expires_at":"2026-04-05T02:00:00+00:00","status":"applied","plan":[{"events": [{"payload": {"reason": "wrong person", "patch_id": "00000000-0000-0000-0000-000100000001"}, "event_id": "00000000-0000-0000-0000-000000000041", "event_type": "<logged>", "schema_version": 1}], "stream": "ppid-0000000000000000000000000000001c", "expected_version": 1}, {"events": [{"payload": {"ppid": "0000000000000000000000000000001c", "reason": "invalidated", "relying_party_id": "city-1"}, "event_id": "00000000-0000-0000-0000-000000000042", "event_type": "<logged>", "schema_version": 1}], "stream": "subject-00000000-0000-0000-0000-00000000001b", "expected_version": 2}, {"events": [{"payload": {"reason": "wrong account", "patch_id": "00000000-0000-0000-0000-000100000001"}, "event_id": "00000000-0000-0000-0000-000000000043", "event_type": "<logged>", "schema_version": 1}], "stream": "application-points-1.00000000-0000-0000-0000-000000000015", "expected_version": 5}, {"events": [{"payload": {"reason": "miscounted", "outcome": {"points": 1000, "decision": "approved"}, "patch_id": "00000000-0000-0000-0000-000100000001", "previous": {"points": 5000, "decision": "approved"}, "reversal_owed_points": 5000}, "event_id": "00000000-0000-0000-0000-000000000044", "event_type": "<logged>", "schema_version": 1}], "stream": "application-points-1.00000000-0000-0000-0000-00000000000f", "expected_version": 4}],"dry_run_by":"op-1","approved_by":"op-2","closed_by":"op-2","close_reason":null,"changed_at":"2026-04-02T02:00:00+00:00","position":58}
        {"patch_id":"00000000-0000-0000-0000-000100000002","ticket_id":"INC-1","reason":"municipality registered the wrong person","targets":["ppid-0000000000000000000000000000001c", "subject-00000000-0000-0000-0000-00000000001b", "application-points-1.00000000-0000-0000-0000-00000000000f", "application-points-1.00000000-0000-0000-0000-000000000015"],"actions":[{"ppid": "0000000000000000000000000000001c", "action": "invalidate_ppid", "reason": "wrong person"}, {"action": "unlink_payment_service", "reason": "wrong account", "program": "points-1", "subject": "00000000-0000-0000-0000-000000000015"}, {"action": "correct_review_outcome", "reason": "miscounted", "outcome": {"points": 1000, "outcome": "approved"}, "program": "points-1", "subject": "00000000-0000-0000-0000-00000000000f"}],"requested_by":"op-1","requested_at":"2026-04-02T02:00:00+00:00","expires_at":"2026-04-05T02:00:00+00:00","status":"rejected","plan":null,"dry_run_by":null,"approved_by":null,"closed_by":"op-2","close_reason":"not needed","changed_at":"2026-04-02T02:00:00+00:00","position":65}
        {"patch_id":"00000000-0000-0000-0000-000100000003","ticket_id":"INC-1","reason":"municipality registered the wrong person","targets":["ppid-0000000000000000000000000000001c", "subject-00000000-0000-0000-0000-00000000001b", "application-points-1.00000000-0000-0000-0000-00000000000f", "application-points-1.00000000-0000-0000-0000-000000000015"],"actions":[{"ppid": "0000000000000000000000000000001c", "action": "invalidate_ppid", "reason": "wrong person"}, {"action": "unlink_payment_service", "reason": "wrong account", "program": "points-1", "subject": "00000000-0000-0000-0000-000000000015"}, {"action": "correct_review_outcome", "reason": "miscounted", "outcome": {"points": 1000, "outcome": "approved"}, "program": "points-1", "subject": "00000000-0000-0000-0000-00000000000f"}],"requested_by":"op-1","requested_at":"2026-04-02T02:00:00+00:00","expires_at":"2026-04-05T02:00:00+00:00","status":"expired","plan":null,"dry_run_by":null,"approved_by":null,"closed_by":"platform","close_reason":null,"changed_at":"2026-04-06T02:00:00+00:00","position":77}
        == patch_effect
        {"patch_id":"00000000-0000-0000-0000-000100000001","position":59,"at":"2026-04-02T02:00:00+00:00","stream_id":"ppid-0000000000000000000000000000001c","event_type":"<logged>"}
        {"patch_id":"00000000-0000-0000-0000-000100000001","position":60,"at":"2026-04-02T02:00:00+00:00","stream_id":"subject-00000000-0000-0000-0000-00000000001b","event_type":"<logged>"}
        {"patch_id":"00000000-0000-0000-0000-000100000001","position":61,"at":"2026-04-02T02:00:00+00:00","stream_id":"application-points-1.00000000-0000-0000-0000-000000000015","event_type":"<logged>"}
        {"patch_id":"00000000-0000-0000-0000-000100000001","position":62,"at":"2026-04-02T02:00:00+00:00","stream_id":"application-points-1.00000000-0000-0000-0000-00000000000f","event_type":"<logged>"}
        == patch_step
        {"patch_id":"00000000-0000-0000-0000-000100000001","position":55,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"reason": "municipality registered the wrong person", "ticket_id": "INC-1", "expires_at": "2026-04-05T02:00:00Z"}}
        {"patch_id":"00000000-0000-0000-0000-000100000001","position":56,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"by": "op-1", "plan": [{"events": [{"payload": {"reason": "wrong person", "patch_id": "00000000-0000-0000-0000-000100000001"}, "event_id": "00000000-0000-0000-0000-000000000041", "event_type": "<logged>", "schema_version": 1}], "stream": "ppid-0000000000000000000000000000001c", "expected_version": 1}, {"events": [{"payload": {"ppid": "0000000000000000000000000000001c", "reason": "invalidated", "relying_party_id": "city-1"}, "event_id": "00000000-0000-0000-0000-000000000042", "event_type": "<logged>", "schema_version": 1}], "stream": "subject-00000000-0000-0000-0000-00000000001b", "expected_version": 2}, {"events": [{"payload": {"reason": "wrong account", "patch_id": "00000000-0000-0000-0000-000100000001"}, "event_id": "00000000-0000-0000-0000-000000000043", "event_type": "<logged>", "schema_version": 1}], "stream": "application-points-1.00000000-0000-0000-0000-000000000015", "expected_version": 5}, {"events": [{"payload": {"reason": "miscounted", "outcome": {"points": 1000, "decision": "approved"}, "patch_id": "00000000-0000-0000-0000-000100000001", "previous": {"points": 5000, "decision": "approved"}, "reversal_owed_points": 5000}, "event_id": "00000000-0000-0000-0000-000000000044", "event_type": "<logged>", "schema_version": 1}], "stream": "application-points-1.00000000-0000-0000-0000-00000000000f", "expected_version": 4}]}}
        {"patch_id":"00000000-0000-0000-0000-000100000001","position":57,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-2","detail":{"by": "op-2"}}
        {"patch_id":"00000000-0000-0000-0000-000100000001","position":58,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-2","detail":{"by": "op-2"}}
        {"patch_id":"00000000-0000-0000-0000-000100000002","position":64,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"reason": "municipality registered the wrong person", "ticket_id": "INC-1", "expires_at": "2026-04-05T02:00:00Z"}}
        {"patch_id":"00000000-0000-0000-0000-000100000002","position":65,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-2","detail":{"by": "op-2", "reason": "not needed"}}
        {"patch_id":"00000000-0000-0000-0000-000100000003","position":66,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"reason": "municipality registered the wrong person", "ticket_id": "INC-1", "expires_at": "2026-04-05T02:00:00Z"}}
        {"patch_id":"00000000-0000-0000-0000-000100000003","position":77,"at":"2026-04-06T02:00:00+00:00","event_type":"<logged>","actor_id":"platform","detail":{}}
    "#]]).await;
    let list = patches::list(&client, &s, None, &page(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let statuses: Vec<_> = list.items.iter().map(|p| p.status).collect();
    assert_eq!(
        statuses,
        [
            patches::PatchStatus::Applied,
            patches::PatchStatus::Rejected,
            patches::PatchStatus::Expired
        ]
    );
    let applied = patches::patch(&client, &s, list.items[0].patch_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the applied patch is missing"));
    assert_eq!(applied.steps.len(), 4);
    // Its outcome: PPID invalidated and released, payment service unlinked, review corrected.
    assert_eq!(applied.effects.len(), 4);
    assert!(patches::patch(&client, &s, uuid::Uuid::nil())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_none());
}

#[tokio::test]
async fn subjects_certificates_and_the_rps_holding_their_ppids() {
    let (_db, client, s) = fixture(&subjects::Subjects, expect![[r#"
        == certificate
        {"cert_key":"13bc19f04aa8f97af41a2ded4714df7314a1897c3e3ebd23050dc5672fd6f089","issuer":"ca","serial":"a102","subject":"00000000-0000-0000-0000-000000000015","linked_at":"2026-04-01T00:00:00+00:00","renewed_from":null,"renewed_to":null,"renewed_at":null,"revoked_at":null,"revoked_reason":null,"position":19}
        {"cert_key":"186ae7c90c4e45f18b34e36a027875002e52557f88925c63a4f00979107e663c","issuer":"ca","serial":"a101","subject":"00000000-0000-0000-0000-00000000000f","linked_at":"2026-04-01T00:00:00+00:00","renewed_from":null,"renewed_to":"7fb0e6bd235cbdcb0049130b16acadf058c600ed468cbb76f874ed4dc71dd6ee","renewed_at":"2026-04-01T00:00:00+00:00","revoked_at":null,"revoked_reason":null,"position":33}
        {"cert_key":"59aa9ae0d514e8ad3022f1af519dfb340f9e0b5751f49480fa02ba02e95a46ba","issuer":"ca","serial":"a104","subject":"00000000-0000-0000-0000-000000000021","linked_at":"2026-04-01T00:00:00+00:00","renewed_from":null,"renewed_to":null,"renewed_at":null,"revoked_at":"2026-04-01T00:00:00+00:00","revoked_reason":"keyCompromise","position":36}
        {"cert_key":"5f4203489b41a86c92b282565203f8015db3a60eb91020486bfbd56a0a345f3a","issuer":"ca","serial":"a10a","subject":null,"linked_at":null,"renewed_from":null,"renewed_to":null,"renewed_at":null,"revoked_at":"2026-04-01T00:00:00+00:00","revoked_reason":"lost","position":37}
        {"cert_key":"7fb0e6bd235cbdcb0049130b16acadf058c600ed468cbb76f874ed4dc71dd6ee","issuer":"ca","serial":"a109","subject":"00000000-0000-0000-0000-00000000000f","linked_at":"2026-04-01T00:00:00+00:00","renewed_from":"186ae7c90c4e45f18b34e36a027875002e52557f88925c63a4f00979107e663c","renewed_to":null,"renewed_at":null,"revoked_at":null,"revoked_reason":null,"position":34}
        {"cert_key":"93088b9361e2199e35edd682078d3dfbecf398fe0264dcea7adf05ce6ead08e9","issuer":"ca","serial":"a103","subject":"00000000-0000-0000-0000-00000000001b","linked_at":"2026-04-01T00:00:00+00:00","renewed_from":null,"renewed_to":null,"renewed_at":null,"revoked_at":null,"revoked_reason":null,"position":23}
        == held_ppid
        {"subject":"00000000-0000-0000-0000-00000000000f","relying_party":"city-1","ppid":"00000000000000000000000000000010","since":"2026-04-01T00:00:00+00:00"}
        {"subject":"00000000-0000-0000-0000-000000000021","relying_party":"city-1","ppid":"00000000000000000000000000000022","since":"2026-04-01T00:00:00+00:00"}
        == subject
        {"subject":"00000000-0000-0000-0000-00000000000f","created_at":"2026-04-01T00:00:00+00:00","position":16}
        {"subject":"00000000-0000-0000-0000-000000000015","created_at":"2026-04-01T00:00:00+00:00","position":20}
        {"subject":"00000000-0000-0000-0000-00000000001b","created_at":"2026-04-01T00:00:00+00:00","position":24}
        {"subject":"00000000-0000-0000-0000-000000000021","created_at":"2026-04-01T00:00:00+00:00","position":28}
    "#]]).await;
    let first = client
        .query_one(
            &format!("SELECT subject FROM {s}.certificate WHERE renewed_to IS NOT NULL"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let subject = SubjectId(first.get(0));
    let view = subjects::subject(&client, &s, subject)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("subject missing"));
    assert_eq!(view.certificates.len(), 2, "the card and its renewal");
    // Revoked at the provider by the citizen: only the city still holds a PPID.
    let page =
        mykey_projections::models::PageRequest::first(None).unwrap_or_else(|e| panic!("{e}"));
    let held = subjects::held_ppids(&client, &s, subject, &page)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held.next_cursor, None);
    assert_eq!(
        held.items
            .iter()
            .map(|h| h.relying_party.as_str())
            .collect::<Vec<_>>(),
        ["city-1"]
    );
    let key = &view.certificates[0].cert_key;
    assert!(subjects::certificate(&client, &s, key)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some());
}

#[tokio::test]
async fn maintenance_notices_current_and_past() {
    let (_db, client, s) = fixture(&notices::Notices, expect![[r#"
        == notice
        {"id":"m-1-1","starts_at":"2026-04-04T02:00:00+00:00","ends_at":"2026-04-04T04:00:00+00:00","affected_services":["login"],"message_ja":"メンテナンス","message_en":"Maintenance","revision":2,"cancelled":true,"cancel_reason":"postponed","scheduled_at":"2026-04-02T02:00:00+00:00","changed_at":"2026-04-02T02:00:00+00:00","position":69}
        {"id":"m-1-2","starts_at":"2026-04-05T02:00:00+00:00","ends_at":"2026-04-05T04:00:00+00:00","affected_services":["login"],"message_ja":"メンテナンス","message_en":"Maintenance","revision":1,"cancelled":false,"cancel_reason":null,"scheduled_at":"2026-04-02T02:00:00+00:00","changed_at":"2026-04-02T02:00:00+00:00","position":70}
    "#]]).await;
    let at = mykey_commands::testing::t0();
    let current = notices::list(&client, &s, notices::When::Current(at), &page(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        current
            .items
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>(),
        ["m-1-2"]
    );
    let past = notices::list(&client, &s, notices::When::Past(at), &page(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        past.items.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["m-1-1"]
    );
    let n = notices::notice(
        &client,
        &s,
        &NoticeId::parse("m-1-1").unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n.map(|n| (n.revision, n.cancelled)), Some((2, true)));
}

#[tokio::test]
async fn the_test_card_register_shows_who_holds_which_card() {
    let (_db, client, s) = fixture(&test_cards::TestCards, expect![[r#"
        == test_card
        {"id":"card-1","label":"JPKI test card","status":"lost","borrower_kind":"municipality","borrower_name":"Chiyoda","lent_at":"2026-04-02T02:00:00+00:00","last_checked_at":"2026-04-02T02:00:00+00:00","lost_note":"left on a train","registered_at":"2026-04-02T02:00:00+00:00","changed_at":"2026-04-02T02:00:00+00:00","position":76}
        == test_card_event
        {"card":"card-1","position":71,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"label": "JPKI test card"}}
        {"card":"card-1","position":72,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"borrower_kind": "vendor", "borrower_name": "Vendor K.K."}}
        {"card":"card-1","position":73,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{}}
        {"card":"card-1","position":74,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"checked_at": "2026-04-02T02:00:00Z"}}
        {"card":"card-1","position":75,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"borrower_kind": "municipality", "borrower_name": "Chiyoda"}}
        {"card":"card-1","position":76,"at":"2026-04-02T02:00:00+00:00","event_type":"<logged>","actor_id":"op-1","detail":{"note": "left on a train"}}
    "#]]).await;
    let id = TestCardId::parse("card-1").unwrap_or_else(|e| panic!("{e}"));
    let card = test_cards::card(&client, &s, &id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(card.map(|c| c.status), Some(test_cards::CardStatus::Lost));
    let lent = test_cards::list(&client, &s, Some(test_cards::CardStatus::Lent), &page(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(lent.items.is_empty());
}

#[tokio::test]
async fn daily_counters_per_asia_tokyo_day() {
    let (_db, client, s) = fixture(
        &counters::DailyCounters,
        expect![[r#"
        == application_program
        {"application":"points-1.00000000-0000-0000-0000-00000000000f","program":"points-1"}
        {"application":"points-1.00000000-0000-0000-0000-000000000015","program":"points-1"}
        {"application":"points-1.00000000-0000-0000-0000-00000000001b","program":"points-1"}
        == daily_counter
        {"day":"2026-04-01","metric":"applications","key":"points-1","status":"approved","value":2}
        {"day":"2026-04-01","metric":"applications","key":"points-1","status":"granted","value":2}
        {"day":"2026-04-01","metric":"applications","key":"points-1","status":"rejected","value":1}
        {"day":"2026-04-01","metric":"applications","key":"points-1","status":"submitted","value":3}
        {"day":"2026-04-01","metric":"points_approved","key":"points-1","status":"","value":8000}
        {"day":"2026-04-01","metric":"points_granted","key":"points-1","status":"","value":8000}
        {"day":"2026-04-01","metric":"ppids_issued","key":"city-1","status":"","value":4}
        {"day":"2026-04-01","metric":"ppids_issued","key":"psp-1","status":"","value":1}
        {"day":"2026-04-02","metric":"applications","key":"points-1","status":"approved","value":1}
        {"day":"2026-04-02","metric":"patches_applied","key":"","status":"","value":1}
        {"day":"2026-04-02","metric":"points_approved","key":"points-1","status":"","value":-4000}
        {"day":"2026-04-02","metric":"points_owed_back","key":"points-1","status":"","value":5000}
    "#]],
    )
    .await;
    let day = models::tokyo_day(mykey_commands::testing::t0());
    let rows = counters::counters(&client, &s, day, day + chrono::Duration::days(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let issued: i64 = rows
        .iter()
        .filter(|c| c.metric == counters::Metric::PpidsIssued)
        .map(|c| c.value)
        .sum();
    assert_eq!(issued, 5);
    assert!(matches!(
        counters::counters(&client, &s, day, day + chrono::Duration::days(400)).await,
        Err(QueryError::BadRange { .. })
    ));
    assert!(matches!(
        counters::counters(&client, &s, day, day - chrono::Duration::days(1)).await,
        Err(QueryError::BadRange { .. })
    ));
}

/// An event of the PPID stream of PPID number `n`, in stored form, at log position `n`.
fn ppid_event(
    n: u64,
    event: &mykey_domain::ppid::PpidEvent,
    at: chrono::DateTime<chrono::Utc>,
) -> EventEnvelope {
    use mykey_domain::ppid::PpidAggregate;
    use mykey_schemas::{EventCodec, EventMetadata, NewEvent, StreamId, GENESIS_HASH};
    let ppid = Ppid::from_uuid(uuid::Uuid::from_u128(u128::from(n)));
    let encoded = PpidAggregate::encode(event).unwrap_or_else(|e| panic!("{e}"));
    let id = uuid::Uuid::from_u128(u128::from(n));
    EventEnvelope::seal(
        NewEvent {
            event_id: id,
            event_type: encoded.event_type.to_owned(),
            schema_version: encoded.schema_version,
            payload: encoded.payload,
        },
        StreamId::parse(&format!("ppid-{ppid}")).unwrap_or_else(|e| panic!("{e}")),
        1,
        n,
        EventMetadata {
            actor_id: "login".into(),
            actor_role: "system".into(),
            command_id: id,
            correlation_id: id,
            causation_id: id,
            patch_id: None,
            client_addr: None,
        },
        at,
        GENESIS_HASH,
    )
}

/// A `PpidIssued` for PPID number `n`, recorded at `at`.
fn issued_at(n: u64, at: chrono::DateTime<chrono::Utc>) -> EventEnvelope {
    let ppid = Ppid::from_uuid(uuid::Uuid::from_u128(u128::from(n)));
    let event = mykey_domain::ppid::PpidEvent::Issued {
        ppid,
        subject: SubjectId(uuid::Uuid::from_u128(7)),
        relying_party: rp("city-1"),
    };
    ppid_event(n, &event, at)
}

#[tokio::test]
async fn an_event_the_read_model_cannot_place_fails_its_batch() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    let p = ppids::Ppids;
    let revoked = ppid_event(
        1,
        &mykey_domain::ppid::PpidEvent::Revoked {
            by: mykey_domain::ppid::RevokedBy::Citizen,
        },
        mykey_commands::testing::t0(),
    );
    let event = decode_any(&revoked).unwrap_or_else(|e| panic!("{e}"));
    let mut changes = Vec::new();
    p.apply(
        Recorded {
            envelope: &revoked,
            event: &event,
        },
        &mut changes,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tx = client.transaction().await.unwrap_or_else(|e| panic!("{e}"));
    create_schema(&tx, "ppids_poison", &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    match run_changes(&tx, &changes).await {
        Ok(()) => panic!("a revocation of an unknown PPID was applied silently"),
        Err(e) => {
            let detail = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_default();
            assert!(
                detail.contains("read model inconsistent: 0 rows of ppid"),
                "{e:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_counter_day_ends_at_midnight_asia_tokyo_not_utc() {
    use chrono::TimeZone;
    let utc = |h, m, s, us| {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 29, h, m, s)
            .single()
            .unwrap_or_else(|| panic!("time"))
            + chrono::Duration::microseconds(us)
    };
    // 23:59:59.999999 and 00:00:00 in Tokyo; 08:59 and 09:00 Tokyo are one day (UTC midnight).
    let events = [
        issued_at(1, utc(14, 59, 59, 999_999)),
        issued_at(2, utc(15, 0, 0, 0)),
        issued_at(3, utc(23, 59, 0, 0)),
        issued_at(4, utc(0, 0, 0, 0) + chrono::Duration::days(1)),
    ];
    let db = TestDb::create().await;
    let mut client = db.client().await;
    let schema = project(&mut client, &counters::DailyCounters, &events).await;
    expect![[r#"
        == application_program
        == daily_counter
        {"day":"2026-11-29","metric":"ppids_issued","key":"city-1","status":"","value":1}
        {"day":"2026-11-30","metric":"ppids_issued","key":"city-1","status":"","value":3}
    "#]]
    .assert_eq(&dump(&client, &schema, &events).await);
}

#[tokio::test]
async fn the_fast_generated_workload_has_every_event_type_and_every_projection_applies_it() {
    use mykey_projections::models::workload;
    use mykey_store::memory::InMemoryStore;
    use mykey_store::EventStore;
    let store = InMemoryStore::new();
    for r in 0..2 {
        for request in workload::round(r).unwrap_or_else(|e| panic!("{e}")) {
            store
                .append(request)
                .await
                .unwrap_or_else(|e| panic!("append: {e}"));
        }
    }
    let events = store.all_events();
    assert_eq!(events.len(), 2 * workload::EVENTS_PER_ROUND);
    let written: BTreeSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let known: BTreeSet<String> = mykey_schemas::all_schema_files()
        .iter()
        .filter_map(|f| f.file_name.split('.').next().map(str::to_owned))
        .collect();
    let known: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    assert_eq!(written, known, "the workload must write every event type");
    let db = TestDb::create().await;
    let mut client = db.client().await;
    for p in models::all() {
        // Fails on any event the read model cannot place.
        let schema = project(&mut client, p.as_ref(), &events).await;
        assert!(
            dump(&client, &schema, &events).await.lines().count() > 2,
            "{} is empty",
            p.name()
        );
    }
}

#[tokio::test]
async fn the_batched_workload_fills_the_read_models_like_one_append_per_command() {
    use mykey_projections::models::workload;
    use mykey_store::memory::InMemoryStore;
    use mykey_store::EventStore;
    let (single, batched) = (InMemoryStore::new(), InMemoryStore::new());
    for request in (0..3).flat_map(|r| workload::round(r).unwrap_or_else(|e| panic!("{e}"))) {
        single
            .append(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let requests = workload::batched(0..3).unwrap_or_else(|e| panic!("{e}"));
    assert!(requests.len() < 3 * 4, "{} appends", requests.len());
    for request in requests {
        batched
            .append(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let db = TestDb::create().await;
    let mut client = db.client().await;
    for p in models::all() {
        // Batching merges commands (their actors and positions differ): compare row counts.
        let mut counts = Vec::new();
        for (store, suffix) in [(&single, "a"), (&batched, "b")] {
            let events = store.all_events();
            let schema = project(&mut client, p.as_ref(), &events).await;
            let renamed = format!("{schema}_{suffix}");
            client
                .batch_execute(&format!("ALTER SCHEMA {schema} RENAME TO {renamed}"))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let per_table: Vec<(String, usize)> = dump(&client, &renamed, &events)
                .await
                .split("== ")
                .filter(|t| !t.is_empty())
                .map(|t| {
                    let mut lines = t.lines();
                    let name = lines.next().unwrap_or_default().to_owned();
                    (name, lines.count())
                })
                .collect();
            counts.push(per_table);
        }
        assert_eq!(counts[0], counts[1], "{}", p.name());
    }
}

#[tokio::test]
async fn login_identity_answers_what_a_login_asks() {
    use login_identity::CertificateLogin;
    use mykey_domain::certificate::CertificateRef;
    use mykey_domain::relying_party::RpStatus;
    let (_db, client, s) = fixture(
        &login_identity::LoginIdentity,
        expect![[r#"
        == login_certificate
        {"cert_key":"13bc19f04aa8f97af41a2ded4714df7314a1897c3e3ebd23050dc5672fd6f089","subject":"00000000-0000-0000-0000-000000000015","revoked":false,"position":19}
        {"cert_key":"186ae7c90c4e45f18b34e36a027875002e52557f88925c63a4f00979107e663c","subject":"00000000-0000-0000-0000-00000000000f","revoked":false,"position":15}
        {"cert_key":"59aa9ae0d514e8ad3022f1af519dfb340f9e0b5751f49480fa02ba02e95a46ba","subject":"00000000-0000-0000-0000-000000000021","revoked":true,"position":36}
        {"cert_key":"5f4203489b41a86c92b282565203f8015db3a60eb91020486bfbd56a0a345f3a","subject":null,"revoked":true,"position":37}
        {"cert_key":"7fb0e6bd235cbdcb0049130b16acadf058c600ed468cbb76f874ed4dc71dd6ee","subject":"00000000-0000-0000-0000-00000000000f","revoked":false,"position":34}
        {"cert_key":"93088b9361e2199e35edd682078d3dfbecf398fe0264dcea7adf05ce6ead08e9","subject":"00000000-0000-0000-0000-00000000001b","revoked":false,"position":23}
        == login_ppid
        {"ppid":"00000000000000000000000000000010","subject":"00000000-0000-0000-0000-00000000000f","relying_party":"city-1","position":18}
        {"ppid":"00000000000000000000000000000022","subject":"00000000-0000-0000-0000-000000000021","relying_party":"city-1","position":30}
        == login_rp
        {"id":"biz-1","status":"active","public_jwk":{"e": "AQAB", "n": "key-1", "alg": "RS256", "kty": "RSA", "use": "sig"},"position":7}
        {"id":"city-1","status":"active","public_jwk":{"e": "AQAB", "n": "key-2", "alg": "RS256", "kty": "RSA", "use": "sig"},"position":5}
        {"id":"lib-1","status":"retired","public_jwk":{"e": "AQAB", "n": "key-1", "alg": "RS256", "kty": "RSA", "use": "sig"},"position":8}
        {"id":"psp-1","status":"active","public_jwk":{"e": "AQAB", "n": "key-1", "alg": "RS256", "kty": "RSA", "use": "sig"},"position":2}
    "#]],
    )
    .await;
    let cert = |serial: &str| CertificateRef::new("ca", serial).unwrap_or_else(|e| panic!("{e}"));
    let login = |c: CertificateRef, rp: &'static str| {
        let (client, s) = (&client, &s);
        async move {
            login_identity::certificate_login(client, s, &c, rp)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    // Citizen 1 at the city, by the first card and by its renewal: one PPID.
    let first = login(cert("a101"), "city-1").await;
    let CertificateLogin::Linked {
        ppid: Some(ppid), ..
    } = &first
    else {
        panic!("{first:?}")
    };
    assert_eq!(login(cert("a109"), "city-1").await, first);
    assert_eq!(
        ppid.as_str(),
        "00000000000000000000000000000010",
        "the PPID the ppids projection shows as active"
    );
    // Citizen 3's card was revoked; a card never seen is unknown.
    assert_eq!(
        login(cert("a104"), "city-1").await,
        CertificateLogin::Revoked
    );
    assert_eq!(
        login(cert("999"), "city-1").await,
        CertificateLogin::Unknown
    );
    // Citizen 2's PPID at the city was revoked: linked, no active PPID.
    assert!(matches!(
        login(cert("a102"), "city-1").await,
        CertificateLogin::Linked { ppid: None, .. }
    ));
    let rp = |id: &'static str| {
        let (client, s) = (&client, &s);
        async move {
            login_identity::relying_party(client, s, id)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let city = rp("city-1").await.unwrap_or_else(|| panic!("city-1"));
    assert_eq!(city.status, RpStatus::Active);
    assert_eq!(city.public_jwk["n"], "key-2", "the rotated key");
    assert_eq!(rp("lib-1").await.map(|r| r.status), Some(RpStatus::Retired));
    assert_eq!(rp("nobody").await, None);
    assert!(matches!(
        login_identity::relying_party(&client, "x; DROP TABLE login_rp", "city-1").await,
        Err(QueryError::BadSchema(_))
    ));
}
