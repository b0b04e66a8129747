//! The operator and auditor doors over HTTP (issue 10, doors 4 and 5): the data-patch workflow
//! end to end for each patch kind, role refusals, programs, notices, the test-card register,
//! the auditor's stream history and log head, and patch expiry on schedule.
//!
//! The citizens' and relying parties' part of the story (logins, applications, reviews) is
//! seeded through the write model on the server's own log: those doors are not this module's.

use chrono::{Duration, Utc};
use mykey_api::config::Settings;
use mykey_api::startup::Application;
use mykey_commands::testing::sample_jwk;
use mykey_commands::{
    stream_of, CertificateRef, CommandMeta, Commands, RegisterRelyingParty, RequestPatch, RpKind,
};
use mykey_domain::application::{Application as AppAggregate, ReviewOutcome};
use mykey_domain::patch::PatchAction;
use mykey_domain::ppid::PpidAggregate;
use mykey_domain::subject::Subject;
use mykey_domain::{ApplicationId, ProgramId, RelyingPartyId, Role, SubjectId};
use mykey_projections::{Projections, RunnerOptions};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::EventStore;
use mykey_tests::TestDb;
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

struct Door {
    base: String,
    http: reqwest::Client,
    /// Bearer tokens by operator id.
    tokens: HashMap<&'static str, String>,
    cmds: Commands<PgEventStore>,
    db: TestDb,
}

/// alice: operator + approver; bob: approver; carol: operator; dave: operator, expired;
/// erin: auditor.
async fn start() -> Door {
    use mykey_api::auth::operators::OperatorTokens;
    let people = [
        ("alice", "roles=operator,approver"),
        ("bob", "roles=approver"),
        ("carol", "roles=operator"),
        ("dave", "roles=operator expires=2020-01-01"),
        ("erin", "roles=auditor"),
    ];
    let mut tokens = HashMap::new();
    let mut lines = String::new();
    for (id, opts) in people {
        let (token, line) = OperatorTokens::new_token(id).unwrap_or_else(|e| panic!("{e}"));
        lines.push_str(&format!("{line} {opts}\n"));
        tokens.insert(id, token);
    }
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("doors-operators-{}.txt", Uuid::new_v4()));
    std::fs::write(&file, lines).unwrap_or_else(|e| panic!("{e}"));
    let vars: HashMap<&str, String> = HashMap::from([
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_OPERATOR_TOKENS_FILE", file.display().to_string()),
    ]);
    let settings =
        Settings::from_lookup(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
    let db = TestDb::create().await;
    let app = Application::build(&settings, db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let _ = std::fs::remove_file(&file);
    let store = PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let door = Door {
        base,
        http: reqwest::Client::new(),
        tokens,
        cmds: Commands::new(store),
        db,
    };
    // The read models answer 503 until the runner has attached their schemas.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for model in ["patches", "programs", "notices", "test-cards"] {
        while door.get("erin", &format!("/v1/operator/{model}")).await.0 == 503 {
            assert!(std::time::Instant::now() < deadline, "{model} never served");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    door
}

async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

impl Door {
    /// POST with a fresh Idempotency-Key.
    async fn post(&self, who: &str, path: &str, body: Value) -> (u16, Value) {
        self.post_key(who, path, body, Some(Uuid::new_v4())).await
    }

    async fn post_key(
        &self,
        who: &str,
        path: &str,
        body: Value,
        key: Option<Uuid>,
    ) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = self.tokens.get(who) {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k.to_string());
        }
        answer(req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }

    async fn get(&self, who: &str, path: &str) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = self.tokens.get(who) {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }

    /// A read that waits for `position` (read-your-writes).
    async fn read_at(&self, who: &str, path: &str, position: &Value) -> (u16, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let position = position
            .as_u64()
            .unwrap_or_else(|| panic!("position {position}"));
        self.get(who, &format!("{path}{sep}min_position={position}"))
            .await
    }

    async fn events(&self) -> i64 {
        self.db
            .client()
            .await
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[track_caller]
fn ok(what: &str, got: &(u16, Value)) {
    assert!(got.0 < 300, "{what}: {} {}", got.0, got.1);
}

#[track_caller]
fn refused(what: &str, got: &(u16, Value), status: u16, code: &str) {
    assert_eq!(
        (got.0, got.1["code"].as_str()),
        (status, Some(code)),
        "{what}: {}",
        got.1
    );
}

fn op() -> CommandMeta {
    CommandMeta::new("seed", Role::Operator, Uuid::new_v4())
}

fn as_rp(rp: &RelyingPartyId) -> CommandMeta {
    CommandMeta::new(rp.as_str(), Role::RelyingParty(rp.clone()), Uuid::new_v4())
}

fn as_citizen(s: SubjectId) -> CommandMeta {
    CommandMeta::new(s.to_string(), Role::Citizen(s), Uuid::new_v4())
}

fn system() -> CommandMeta {
    CommandMeta::new("platform", Role::System, Uuid::new_v4())
}

#[track_caller]
fn must<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

struct World {
    city: RelyingPartyId,
    psp: RelyingPartyId,
    program: ProgramId,
    /// Three citizens logged in at the city; the first two applied, the second was approved.
    subjects: Vec<SubjectId>,
    ppids: Vec<String>,
}

fn app_stream(w: &World, i: usize) -> String {
    must(
        "stream",
        stream_of::<AppAggregate>(ApplicationId::of(&w.program, &w.subjects[i])),
    )
    .to_string()
}

/// Relying parties through the write model, the program through the operator door, logins
/// and applications through the write model.
async fn world(d: &Door) -> World {
    let rp = |id: &str, code: &str, kind| RegisterRelyingParty {
        id: must("rp", RelyingPartyId::parse(id)),
        code: code.into(),
        name: id.into(),
        kind,
        public_jwk: sample_jwk("k"),
    };
    let city = rp("city-1", "131016", RpKind::Municipality);
    let psp = rp("psp-1", "psp1", RpKind::PaymentServiceProvider);
    let (city_id, psp_id) = (city.id.clone(), psp.id.clone());
    must("city", d.cmds.register_relying_party(&op(), city).await);
    must("psp", d.cmds.register_relying_party(&op(), psp).await);

    let now = Utc::now();
    let created = d
        .post(
            "alice",
            "/v1/operator/programs",
            json!({ "id": "points-1", "municipality": "city-1", "name": "Points",
                "period_start": now - Duration::days(1), "period_end": now + Duration::days(30) }),
        )
        .await;
    assert_eq!(created.0, 201, "{}", created.1);
    let program = must("program", ProgramId::parse("points-1"));

    let mut subjects = Vec::new();
    let mut ppids = Vec::new();
    for i in 1..=3 {
        let cert = must("cert", CertificateRef::new("ca", &format!("a{i:x}")));
        let login = must(
            "login",
            d.cmds.register_login(&system(), &cert, &city_id).await,
        );
        subjects.push(login.subject);
        ppids.push(login.ppid.to_string());
    }
    for (i, s) in subjects.iter().take(2).enumerate() {
        must(
            "submit",
            d.cmds
                .submit_application(&as_citizen(*s), *s, &program, &psp_id)
                .await,
        );
        must(
            "link",
            d.cmds
                .link_payment_service(&as_rp(&psp_id), &program, *s, &format!("acct-{i}"))
                .await,
        );
    }
    must(
        "review",
        d.cmds
            .record_review(
                &as_rp(&city_id),
                &program,
                subjects[1],
                ReviewOutcome::Approved { points: 1000 },
            )
            .await,
    );
    World {
        city: city_id,
        psp: psp_id,
        program,
        subjects,
        ppids,
    }
}

/// request → dry-run → approval by the requester refused → approval by another → apply; the
/// patch's read model, the target's read model and the auditor's history show it.
async fn patch_end_to_end(d: &Door, targets: Vec<String>, action: Value) -> (String, Value) {
    let requested = d
        .post(
            "alice",
            "/v1/operator/patches",
            json!({ "ticket_id": "INC-7", "reason": "registered the wrong person",
                "targets": targets, "actions": [action] }),
        )
        .await;
    assert_eq!(requested.0, 201, "{}", requested.1);
    let id = requested.1["patch_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", requested.1))
        .to_owned();
    let path = |verb: &str| format!("/v1/operator/patches/{id}/{verb}");

    let dry = d.post("carol", &path("dry-run"), json!({})).await;
    ok("dry-run", &dry);
    let plan = dry.1["plan"].as_array().cloned().unwrap_or_default();
    assert!(!plan.is_empty(), "the dry-run shows its events: {}", dry.1);
    for stream in &plan {
        assert!(
            targets
                .iter()
                .any(|t| Some(t.as_str()) == stream["stream"].as_str()),
            "{stream}"
        );
    }

    let own = d.post("alice", &path("approve"), json!({})).await;
    refused("requester approves", &own, 403, "PATCH_SELF_APPROVAL");
    let not_approver = d.post("carol", &path("approve"), json!({})).await;
    refused("operator approves", &not_approver, 403, "ROLE_REQUIRED");
    let approved = d.post("bob", &path("approve"), json!({})).await;
    ok("approve", &approved);
    assert_eq!(approved.1["status"], "approved");

    let applied = d.post("carol", &path("apply"), json!({})).await;
    ok("apply", &applied);
    assert_eq!(applied.1["status"], "applied");

    let seen = d
        .read_at(
            "erin",
            &format!("/v1/audit/patches/{id}"),
            &applied.1["position"],
        )
        .await;
    ok("auditor reads the patch", &seen);
    assert_eq!(seen.1["patch"]["status"], "applied", "{}", seen.1);
    assert_eq!(seen.1["patch"]["approved_by"], "bob");
    let effects = seen.1["effects"].as_array().cloned().unwrap_or_default();
    let planned: usize = plan
        .iter()
        .map(|p| p["events"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(effects.len(), planned, "{}", seen.1);

    // The target stream's history: the compensating events carry the patch id and are the
    // dry-run's events exactly.
    for stream in &plan {
        let s = stream["stream"].as_str().unwrap_or_default();
        let history = d
            .get("erin", &format!("/v1/audit/streams/{s}/events?limit=500"))
            .await;
        ok("history", &history);
        let items = history.1["items"].as_array().cloned().unwrap_or_default();
        let compensating: Vec<&Value> =
            items.iter().filter(|e| e["compensating"] == true).collect();
        let planned_ids: Vec<&Value> = stream["events"]
            .as_array()
            .map(|es| es.iter().map(|e| &e["event_id"]).collect())
            .unwrap_or_default();
        let got_ids: Vec<&Value> = compensating.iter().map(|e| &e["event_id"]).collect();
        assert_eq!(got_ids, planned_ids, "{s}");
        for e in compensating {
            assert_eq!(e["patch_id"].as_str(), Some(id.as_str()));
            assert_eq!(e["actor_id"], "carol");
        }
    }
    (id, applied.1)
}

#[tokio::test]
async fn each_patch_kind_runs_end_to_end_and_a_moved_target_is_a_conflict() {
    let d = start().await;
    let w = world(&d).await;

    // 1. PPID invalidation: the third citizen's PPID at the city.
    let ppid_stream = must("s", stream_of::<PpidAggregate>(&w.ppids[2])).to_string();
    let subject_stream = must("s", stream_of::<Subject>(w.subjects[2])).to_string();
    let (_, applied) = patch_end_to_end(
        &d,
        vec![ppid_stream.clone(), subject_stream],
        json!({ "kind": "invalidate_ppid", "ppid": w.ppids[2], "reason": "wrong person" }),
    )
    .await;
    let ppid_events = d
        .get("erin", &format!("/v1/audit/streams/{ppid_stream}/events"))
        .await;
    assert!(
        ppid_events.1["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|e| e["compensating"] == true)),
        "{}",
        ppid_events.1
    );
    let _ = applied;

    // 2. Payment-service link removal: the first citizen's application.
    patch_end_to_end(
        &d,
        vec![app_stream(&w, 0)],
        json!({ "kind": "unlink_payment_service", "program": "points-1",
            "subject": w.subjects[0].0, "reason": "linked to the wrong account" }),
    )
    .await;

    // 3. Review-outcome correction: the second citizen was approved for the wrong amount.
    patch_end_to_end(
        &d,
        vec![app_stream(&w, 1)],
        json!({ "kind": "correct_review_outcome", "program": "points-1",
            "subject": w.subjects[1].0, "outcome": { "approved": { "points": 500 } },
            "reason": "typo in the amount" }),
    )
    .await;

    // A target that moves between the dry-run and the apply: 409, nothing appended.
    let requested = d
        .post(
            "alice",
            "/v1/operator/patches",
            json!({ "ticket_id": "INC-8", "reason": "r", "targets": [app_stream(&w, 1)],
                "actions": [{ "kind": "unlink_payment_service", "program": "points-1",
                    "subject": w.subjects[1].0, "reason": "r" }] }),
        )
        .await;
    assert_eq!(requested.0, 201, "{}", requested.1);
    let id = requested.1["patch_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ok(
        "dry-run",
        &d.post(
            "alice",
            &format!("/v1/operator/patches/{id}/dry-run"),
            json!({}),
        )
        .await,
    );
    ok(
        "approve",
        &d.post(
            "bob",
            &format!("/v1/operator/patches/{id}/approve"),
            json!({}),
        )
        .await,
    );
    must(
        "grant moves the target",
        d.cmds
            .grant_points(&as_rp(&w.psp), &w.program, w.subjects[1])
            .await,
    );
    let before = d.events().await;
    let moved = d
        .post(
            "alice",
            &format!("/v1/operator/patches/{id}/apply"),
            json!({}),
        )
        .await;
    refused("moved target", &moved, 409, "PATCH_TARGET_MOVED");
    assert_eq!(d.events().await, before, "a refused apply appends nothing");

    // Rejection by an approver closes a patch; the list filters by status.
    let rejected = d
        .post(
            "bob",
            &format!("/v1/operator/patches/{id}/reject"),
            json!({ "reason": "target moved, redo" }),
        )
        .await;
    ok("reject", &rejected);
    let list = d
        .read_at(
            "alice",
            "/v1/operator/patches?status=applied",
            &rejected.1["position"],
        )
        .await;
    ok("list", &list);
    assert_eq!(
        list.1["items"].as_array().map(Vec::len),
        Some(3),
        "{}",
        list.1
    );
    let _ = w.city;
}

#[tokio::test]
async fn roles_credentials_and_idempotency_keys_are_enforced() {
    let d = start().await;
    let body = json!({ "ticket_id": "T", "reason": "r", "targets": [], "actions": [] });
    let patches = "/v1/operator/patches";
    refused(
        "no credential",
        &d.post("nobody", patches, body.clone()).await,
        401,
        "OPERATOR_UNAUTHORIZED",
    );
    refused(
        "expired",
        &d.post("dave", patches, body.clone()).await,
        401,
        "CREDENTIAL_EXPIRED",
    );
    refused(
        "approver requests",
        &d.post("bob", patches, body.clone()).await,
        403,
        "ROLE_REQUIRED",
    );
    refused(
        "auditor writes",
        &d.post(
            "erin",
            "/v1/operator/test-cards",
            json!({ "id": "c1", "label": "x" }),
        )
        .await,
        403,
        "ROLE_REQUIRED",
    );
    refused(
        "auditor history needs the auditor",
        &d.get("alice", "/v1/audit/log/head").await,
        403,
        "ROLE_REQUIRED",
    );
    refused(
        "missing key",
        &d.post_key(
            "alice",
            "/v1/operator/test-cards",
            json!({ "id": "c1", "label": "x" }),
            None,
        )
        .await,
        400,
        "IDEMPOTENCY_KEY_MISSING",
    );
    refused(
        "unknown field",
        &d.post(
            "alice",
            "/v1/operator/test-cards",
            json!({ "id": "c1", "label": "x", "colour": 1 }),
        )
        .await,
        400,
        "MALFORMED_BODY",
    );
    refused(
        "bad limit",
        &d.get("alice", "/v1/operator/test-cards?limit=501").await,
        400,
        "INVALID_QUERY",
    );
    refused(
        "unknown query parameter",
        &d.get("alice", "/v1/operator/test-cards?colour=red").await,
        400,
        "INVALID_QUERY",
    );
    refused(
        "unknown patch",
        &d.get("alice", &format!("/v1/operator/patches/{}", Uuid::new_v4()))
            .await,
        404,
        "NOT_FOUND",
    );
    refused(
        "unknown action",
        &d.post("alice", "/v1/operator/test-cards/c1/paint", json!({}))
            .await,
        404,
        "NOT_FOUND",
    );

    // A retry with the same key gets the first answer and appends nothing.
    let key = Uuid::new_v4();
    let card = json!({ "id": "c1", "label": "card one" });
    let first = d
        .post_key("alice", "/v1/operator/test-cards", card.clone(), Some(key))
        .await;
    assert_eq!(first.0, 201, "{}", first.1);
    let events = d.events().await;
    let again = d
        .post_key("alice", "/v1/operator/test-cards", card, Some(key))
        .await;
    assert_eq!(again, first);
    assert_eq!(d.events().await, events);
    refused(
        "same key, other body",
        &d.post_key(
            "alice",
            "/v1/operator/test-cards",
            json!({ "id": "c2", "label": "x" }),
            Some(key),
        )
        .await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );
}

#[tokio::test]
async fn programs_notices_and_test_cards_over_http() {
    let d = start().await;
    must(
        "city",
        d.cmds
            .register_relying_party(
                &op(),
                RegisterRelyingParty {
                    id: must("rp", RelyingPartyId::parse("city-1")),
                    code: "131016".into(),
                    name: "city".into(),
                    kind: RpKind::Municipality,
                    public_jwk: sample_jwk("k"),
                },
            )
            .await,
    );
    let now = Utc::now();
    let p = |verb: &str| format!("/v1/operator/programs/points-1/{verb}");
    ok(
        "create",
        &d.post(
            "carol",
            "/v1/operator/programs",
            json!({ "id": "points-1", "municipality": "city-1", "name": "Points",
                "period_start": now, "period_end": now + Duration::days(30) }),
        )
        .await,
    );
    refused(
        "unknown municipality",
        &d.post(
            "carol",
            "/v1/operator/programs",
            json!({ "id": "points-2", "municipality": "nowhere", "name": "Points",
                "period_start": now, "period_end": now + Duration::days(30) }),
        )
        .await,
        404,
        "RP_NOT_FOUND",
    );
    ok(
        "extend",
        &d.post(
            "carol",
            &p("extend"),
            json!({ "new_end": now + Duration::days(60) }),
        )
        .await,
    );
    ok(
        "pause",
        &d.post("carol", &p("pause"), json!({ "reason": "incident" }))
            .await,
    );
    refused(
        "pause twice",
        &d.post("carol", &p("pause"), json!({ "reason": "again" }))
            .await,
        409,
        "PROGRAM_PAUSED",
    );
    ok("resume", &d.post("carol", &p("resume"), json!({})).await);
    let closed = d.post("carol", &p("close"), json!({})).await;
    ok("close", &closed);
    let got = d
        .read_at(
            "erin",
            "/v1/operator/programs/points-1",
            &closed.1["position"],
        )
        .await;
    ok("get", &got);
    assert_eq!(got.1["status"], "closed", "{}", got.1);
    let list = d
        .read_at(
            "bob",
            "/v1/operator/programs?status=closed",
            &closed.1["position"],
        )
        .await;
    assert_eq!(
        list.1["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.1
    );
    refused(
        "unknown program",
        &d.get("erin", "/v1/operator/programs/none").await,
        404,
        "NOT_FOUND",
    );

    // Maintenance notices.
    let notice = json!({ "id": "mnt-1", "start": now + Duration::days(1),
        "end": now + Duration::days(1) + Duration::hours(2), "affected_services": ["login"],
        "message_ja": "メンテナンス", "message_en": "Maintenance" });
    ok(
        "schedule",
        &d.post("carol", "/v1/operator/notices", notice).await,
    );
    refused(
        "unknown notice field",
        &d.post(
            "carol",
            "/v1/operator/notices",
            json!({ "id": "mnt-2", "start": now, "end": now, "affected_services": [],
                "message_ja": "", "message_en": "", "colour": 1 }),
        )
        .await,
        400,
        "MALFORMED_BODY",
    );
    let updated = d
        .post(
            "carol",
            "/v1/operator/notices/mnt-1/update",
            json!({ "start": now + Duration::days(2), "end": now + Duration::days(2) + Duration::hours(1),
                "affected_services": ["login", "oauth"], "message_ja": "変更", "message_en": "Moved" }),
        )
        .await;
    ok("update", &updated);
    let current = d
        .read_at(
            "erin",
            "/v1/operator/notices?when=current",
            &updated.1["position"],
        )
        .await;
    assert_eq!(current.1["items"][0]["revision"], 2, "{}", current.1);
    let cancelled = d
        .post(
            "carol",
            "/v1/operator/notices/mnt-1/cancel",
            json!({ "reason": "not needed" }),
        )
        .await;
    ok("cancel", &cancelled);
    let past = d
        .read_at(
            "erin",
            "/v1/operator/notices?when=past",
            &cancelled.1["position"],
        )
        .await;
    assert_eq!(past.1["items"][0]["cancelled"], true, "{}", past.1);

    // The test-card register.
    let c = |verb: &str| format!("/v1/operator/test-cards/tc-1/{verb}");
    ok(
        "register",
        &d.post(
            "carol",
            "/v1/operator/test-cards",
            json!({ "id": "tc-1", "label": "card" }),
        )
        .await,
    );
    ok(
        "lend",
        &d.post(
            "carol",
            &c("lend"),
            json!({ "borrower_kind": "vendor", "borrower_name": "ACME" }),
        )
        .await,
    );
    refused(
        "lend twice",
        &d.post(
            "carol",
            &c("lend"),
            json!({ "borrower_kind": "vendor", "borrower_name": "B" }),
        )
        .await,
        409,
        "CARD_ALREADY_LENT",
    );
    ok("return", &d.post("carol", &c("return"), json!({})).await);
    ok(
        "check",
        &d.post("carol", &c("inventory-check"), json!({})).await,
    );
    let lost = d
        .post(
            "carol",
            &c("report-lost"),
            json!({ "note": "not in the safe" }),
        )
        .await;
    ok("lost", &lost);
    let cards = d
        .read_at(
            "erin",
            "/v1/operator/test-cards?status=lost",
            &lost.1["position"],
        )
        .await;
    assert_eq!(cards.1["items"][0]["id"], "tc-1", "{}", cards.1);

    // The log's head as the auditor sees it.
    let head = d.get("erin", "/v1/audit/log/head").await;
    ok("head", &head);
    assert_eq!(head.1["position"].as_i64(), Some(d.events().await));
    assert_eq!(
        head.1["hash"].as_str().map(str::len),
        Some(64),
        "{}",
        head.1
    );
}

#[tokio::test]
async fn patches_past_their_expiry_are_expired_by_the_schedule() {
    let db = TestDb::create().await;
    // The log and the read models without a server: the schedule's function on its own.
    let store = PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let registry = prometheus::Registry::new();
    let projections = Projections::start(
        store.clone(),
        db.config(),
        mykey_projections::models::all(),
        &registry,
        RunnerOptions {
            poll_interval: std::time::Duration::from_millis(50),
            ..RunnerOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let pool = mykey_api::http::pool(db.config()).unwrap_or_else(|e| panic!("{e}"));
    let cmds = Commands::new(store.clone()).with_patch_ttl(Duration::milliseconds(1));
    let keep = Commands::new(store.clone());
    let request = |patch_id| RequestPatch {
        patch_id,
        ticket_id: "T".into(),
        reason: "r".into(),
        targets: vec![must("stream", stream_of::<PpidAggregate>("abc"))],
        actions: vec![PatchAction::InvalidatePpid {
            ppid: must("ppid", mykey_domain::Ppid::parse("abc")),
            reason: "r".into(),
        }],
    };
    let (short, long) = (Uuid::new_v4(), Uuid::new_v4());
    must("short", cmds.request_patch(&op(), request(short)).await);
    must("long", keep.request_patch(&op(), request(long)).await);
    let head = must("head", store.head().await);
    must(
        "read model",
        projections
            .wait_for("patches", head, std::time::Duration::from_secs(10))
            .await,
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut expired = 0;
    while expired == 0 && std::time::Instant::now() < deadline {
        expired = must(
            "run",
            mykey_api::patch_expiry::expire_due(&store, &projections, &pool, Utc::now()).await,
        );
    }
    assert_eq!(expired, 1);
    let short_state = must("load", keep.load_patch(short).await);
    let long_state = must("load", keep.load_patch(long).await);
    assert_eq!(
        short_state.map(|p| format!("{:?}", p.status)).as_deref(),
        Some("Expired")
    );
    assert_eq!(
        long_state.map(|p| format!("{:?}", p.status)).as_deref(),
        Some("Requested")
    );
    // A second run (another server) finds nothing left to do once the read model caught up.
    let head = must("head", store.head().await);
    must(
        "read model",
        projections
            .wait_for("patches", head, std::time::Duration::from_secs(10))
            .await,
    );
    let again = must(
        "run",
        mykey_api::patch_expiry::expire_due(&store, &projections, &pool, Utc::now()).await,
    );
    assert_eq!(again, 0);
    projections.shutdown().await;
}
