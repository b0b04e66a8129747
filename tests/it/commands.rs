//! Command handlers against the PostgreSQL event log: the same rules as the in-memory unit
//! tests in `mykey-commands`, plus what only a real database shows (racing writers).

use chrono::Duration;
use mykey_commands::testing::{sample_jwk, t0, test_commands};
use mykey_commands::{
    CertificateRef, CommandError, CommandMeta, Commands, CreateProgram, RegisterRelyingParty,
    RequestPatch, RpKind,
};
use mykey_domain::patch::{PatchAction, PatchStatus};
use mykey_domain::ppid::PpidStatus;
use mykey_domain::{ErrorCode, ProgramId, RelyingPartyId, Role, SubjectId};
use mykey_schemas::StreamId;
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::EventStore;
use mykey_tests::TestDb;
use std::sync::Arc;
use uuid::Uuid;

async fn commands(db: &TestDb) -> Commands<PgEventStore> {
    let store = PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect the event store: {e}"));
    test_commands(store).0
}

fn ok<T>(r: Result<T, CommandError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(r: Result<T, CommandError>, code: ErrorCode) {
    match r {
        Err(CommandError::Domain(e)) => assert_eq!(e.code, code, "{e}"),
        other => panic!("expected {code}, got {other:?}"),
    }
}

fn op(id: &str) -> CommandMeta {
    CommandMeta::new(id, Role::Operator, Uuid::new_v4())
}

fn system() -> CommandMeta {
    CommandMeta::new("login-endpoint", Role::System, Uuid::new_v4())
}

fn cert(serial: &str) -> CertificateRef {
    CertificateRef::new("jpki-2023", serial).unwrap_or_else(|e| panic!("{e}"))
}

async fn register(
    cmds: &Commands<PgEventStore>,
    id: &str,
    code: &str,
    kind: RpKind,
) -> RelyingPartyId {
    let id = RelyingPartyId::parse(id).unwrap_or_else(|e| panic!("{e}"));
    ok(cmds
        .register_relying_party(
            &op("op-1"),
            RegisterRelyingParty {
                id: id.clone(),
                code: code.into(),
                name: "RP".into(),
                kind,
                public_jwk: sample_jwk("k"),
            },
        )
        .await);
    id
}

#[tokio::test]
async fn login_issues_once_and_is_idempotent_on_postgres() {
    let db = TestDb::create().await;
    let cmds = commands(&db).await;
    let rp = register(&cmds, "city-131016", "131016", RpKind::Municipality).await;
    let meta = system();
    let a = ok(cmds.register_login(&meta, &cert("01"), &rp).await);
    assert!(a.newly_issued);
    let head = ok(cmds.store().head().await.map_err(CommandError::from));
    let b = ok(cmds.register_login(&meta, &cert("01"), &rp).await);
    assert_eq!((a.subject, &a.ppid), (b.subject, &b.ppid));
    assert_eq!(
        ok(cmds.store().head().await.map_err(CommandError::from)),
        head
    );
    let c = ok(cmds.register_login(&system(), &cert("01"), &rp).await);
    assert!(!c.newly_issued);
    assert_eq!(ok(cmds.active_ppid(a.subject, &rp).await), Some(a.ppid));
}

#[tokio::test]
async fn racing_first_logins_for_one_certificate_create_one_subject_and_one_ppid() {
    let db = TestDb::create().await;
    let cmds = Arc::new(commands(&db).await);
    let rp = register(&cmds, "city-131016", "131016", RpKind::Municipality).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (cmds, rp) = (cmds.clone(), rp.clone());
        tasks.push(tokio::spawn(async move {
            cmds.register_login(&system(), &cert("77"), &rp).await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => results.push(ok(r)),
            Err(e) => panic!("task: {e}"),
        }
    }
    assert_eq!(results.iter().filter(|r| r.newly_issued).count(), 1);
    assert!(results
        .windows(2)
        .all(|w| w[0].ppid == w[1].ppid && w[0].subject == w[1].subject));
}

#[tokio::test]
async fn refusals_write_nothing_on_postgres() {
    let db = TestDb::create().await;
    let cmds = commands(&db).await;
    let rp = register(&cmds, "city-131016", "131016", RpKind::Municipality).await;
    ok(cmds.suspend_relying_party(&op("op-1"), &rp, "audit").await);
    let head = ok(cmds.store().head().await.map_err(CommandError::from));
    assert_code(
        cmds.register_login(&system(), &cert("02"), &rp).await,
        ErrorCode::RP_SUSPENDED,
    );
    let bad = cmds
        .register_relying_party(
            &op("op-1"),
            RegisterRelyingParty {
                id: RelyingPartyId::parse("x").unwrap_or_else(|e| panic!("{e}")),
                code: "131017".into(),
                name: "x".into(),
                kind: RpKind::Municipality,
                public_jwk: sample_jwk("k"),
            },
        )
        .await;
    assert_code(bad, ErrorCode::INVALID_LOCAL_GOVERNMENT_CODE);
    assert_eq!(
        ok(cmds.store().head().await.map_err(CommandError::from)),
        head
    );
}

#[tokio::test]
async fn racing_submissions_leave_one_application_per_subject_and_program() {
    let db = TestDb::create().await;
    let cmds = Arc::new(commands(&db).await);
    let city = register(&cmds, "city-131016", "131016", RpKind::Municipality).await;
    let psp = register(&cmds, "psp-1", "psp1", RpKind::PaymentServiceProvider).await;
    let program = ProgramId::parse("p1").unwrap_or_else(|e| panic!("{e}"));
    ok(cmds
        .create_program(
            &op("op-1"),
            CreateProgram {
                id: program.clone(),
                municipality: city,
                name: "p".into(),
                period_start: t0(),
                period_end: t0() + Duration::days(30),
            },
        )
        .await);
    let s = SubjectId(Uuid::new_v4());
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (cmds, program, psp) = (cmds.clone(), program.clone(), psp.clone());
        tasks.push(tokio::spawn(async move {
            let meta = CommandMeta::new(s.to_string(), Role::Citizen(s), Uuid::new_v4());
            cmds.submit_application(&meta, s, &program, &psp).await
        }));
    }
    let mut oks = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(_)) => oks += 1,
            Ok(Err(CommandError::Domain(e))) => {
                assert_eq!(e.code, ErrorCode::APPLICATION_ALREADY_SUBMITTED)
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("task: {e}"),
        }
    }
    assert_eq!(oks, 1);
    let stream =
        StreamId::new("application", format!("{program}.{s}")).unwrap_or_else(|e| panic!("{e}"));
    let events = mykey_store::read_full_stream(cmds.store(), &stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn a_patch_applies_atomically_and_refuses_a_moved_target_on_postgres() {
    let db = TestDb::create().await;
    let cmds = commands(&db).await;
    let rp = register(&cmds, "city-131016", "131016", RpKind::Municipality).await;
    let a = ok(cmds.register_login(&system(), &cert("a"), &rp).await);
    let b = ok(cmds.register_login(&system(), &cert("b"), &rp).await);
    let targets = |l: &mykey_commands::LoginResult| {
        vec![
            StreamId::new("ppid", &l.ppid).unwrap_or_else(|e| panic!("{e}")),
            StreamId::new("subject", l.subject).unwrap_or_else(|e| panic!("{e}")),
        ]
    };
    let request = |patch: Uuid, l: &mykey_commands::LoginResult| RequestPatch {
        patch_id: patch,
        ticket_id: "INC-9".into(),
        reason: "wrong person".into(),
        targets: targets(l),
        actions: vec![PatchAction::InvalidatePpid {
            ppid: l.ppid.clone(),
            reason: "wrong person".into(),
        }],
    };
    let (p1, p2) = (Uuid::new_v4(), Uuid::new_v4());
    for (p, l) in [(p1, &a), (p2, &b)] {
        ok(cmds.request_patch(&op("op-1"), request(p, l)).await);
        ok(cmds.dry_run_patch(&op("op-1"), p).await);
        ok(cmds.approve_patch(&op("op-2"), p).await);
    }
    let applied = ok(cmds.apply_patch(&op("op-2"), p1).await);
    assert_eq!(applied.state.map(|p| p.status), Some(PatchStatus::Applied));
    assert_eq!(
        ok(cmds.load_ppid(&a.ppid).await).map(|p| p.status),
        Some(PpidStatus::Invalidated { patch_id: p1 })
    );
    // b's PPID moves (revoked by its citizen) after p2's dry-run: p2 must write nothing.
    let citizen = CommandMeta::new(
        b.subject.to_string(),
        Role::Citizen(b.subject),
        Uuid::new_v4(),
    );
    ok(cmds.revoke_ppid(&citizen, &b.ppid).await);
    let head = ok(cmds.store().head().await.map_err(CommandError::from));
    assert_code(
        cmds.apply_patch(&op("op-2"), p2).await,
        ErrorCode::PATCH_TARGET_MOVED,
    );
    assert_eq!(
        ok(cmds.store().head().await.map_err(CommandError::from)),
        head
    );
}
