//! Handlers end to end: programs, applications, data patches, notices, test cards, retries.

use crate::support::*;
use chrono::Duration;
use mykey_commands::testing::{t0, test_commands, test_commands_with_ids_from};
use mykey_commands::{
    CommandError, CommandMeta, Commands, CreateProgram, RequestPatch, RpKind, MAX_ATTEMPTS,
};
use mykey_domain::application::ReviewOutcome;
use mykey_domain::maintenance::NoticeDetails;
use mykey_domain::patch::{PatchAction, PatchStatus};
use mykey_domain::ppid::PpidStatus;
use mykey_domain::test_card::{Borrower, BorrowerKind};
use mykey_domain::{ErrorCode, NoticeId, ProgramId, RelyingPartyId, SubjectId, TestCardId};
use mykey_schemas::{NewEvent, StreamId};
use mykey_store::{
    AppendError, AppendOutcome, AppendRequest, EventStore, ExpectedVersion, StoreError,
    Subscription,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use uuid::Uuid;

#[track_caller]
fn assert_code<T: std::fmt::Debug>(r: Result<T, CommandError>, code: ErrorCode) {
    match r {
        Err(CommandError::Domain(e)) => assert_eq!(e.code, code, "{e}"),
        other => panic!("expected {code}, got {other:?}"),
    }
}

fn ok<T>(r: Result<T, CommandError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn prog(s: &str) -> ProgramId {
    ProgramId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

struct World {
    cmds: Commands<TestStore>,
    clock: mykey_commands::testing::TestClock,
    city: RelyingPartyId,
    psp: RelyingPartyId,
    program: ProgramId,
}

async fn world() -> World {
    let (cmds, clock) = setup();
    let city = chiyoda(&cmds).await;
    let psp = register_rp(&cmds, "psp-1", "psp1", RpKind::PaymentServiceProvider).await;
    let program = prog("chiyoda-2026");
    ok(cmds
        .create_program(
            &operator("op-1"),
            CreateProgram {
                id: program.clone(),
                municipality: city.clone(),
                name: "Chiyoda points 2026".into(),
                period_start: t0(),
                period_end: t0() + Duration::days(90),
            },
        )
        .await);
    World {
        cmds,
        clock,
        city,
        psp,
        program,
    }
}

fn citizen(n: u128) -> SubjectId {
    SubjectId(Uuid::from_u128(n))
}

/// Submitted, linked, approved for `points`.
async fn approved_application(w: &World, s: SubjectId, points: u64) {
    ok(w.cmds
        .submit_application(&as_citizen(s), s, &w.program, &w.psp)
        .await);
    ok(w.cmds
        .link_payment_service(&as_rp(&w.psp), &w.program, s, "acct-9")
        .await);
    ok(w.cmds
        .record_review(
            &as_rp(&w.city),
            &w.program,
            s,
            ReviewOutcome::Approved { points },
        )
        .await);
}

#[tokio::test]
async fn an_application_goes_from_submission_to_granted_points() {
    let w = world().await;
    let s = citizen(1);
    approved_application(&w, s, 5_000).await;
    let a = ok(w
        .cmds
        .grant_points(
            &CommandMeta::new("batch", mykey_domain::Role::System, cid()),
            &w.program,
            s,
        )
        .await);
    assert_eq!(a.state.and_then(|a| a.granted_points), Some(5_000));
    // One application per subject per program, even from a fresh command.
    assert_code(
        w.cmds
            .submit_application(&as_citizen(s), s, &w.program, &w.psp)
            .await,
        ErrorCode::APPLICATION_ALREADY_SUBMITTED,
    );
}

#[tokio::test]
async fn pausing_a_program_blocks_new_applications_and_reviews_but_loses_nothing() {
    let w = world().await;
    let (a, b) = (citizen(1), citizen(2));
    ok(w.cmds
        .submit_application(&as_citizen(a), a, &w.program, &w.psp)
        .await);
    ok(w.cmds
        .pause_program(&operator("op-1"), &w.program, "incident")
        .await);
    assert_code(
        w.cmds
            .submit_application(&as_citizen(b), b, &w.program, &w.psp)
            .await,
        ErrorCode::PROGRAM_PAUSED,
    );
    assert_code(
        w.cmds
            .record_review(
                &as_rp(&w.city),
                &w.program,
                a,
                ReviewOutcome::Approved { points: 1 },
            )
            .await,
        ErrorCode::PROGRAM_PAUSED,
    );
    ok(w.cmds.resume_program(&operator("op-1"), &w.program).await);
    assert!(w
        .cmds
        .load_application(&w.program, a)
        .await
        .ok()
        .flatten()
        .is_some());
    ok(w.cmds
        .record_review(
            &as_rp(&w.city),
            &w.program,
            a,
            ReviewOutcome::Approved { points: 1 },
        )
        .await);
    w.clock.advance(Duration::days(91));
    assert_code(
        w.cmds
            .submit_application(&as_citizen(b), b, &w.program, &w.psp)
            .await,
        ErrorCode::OUTSIDE_PROGRAM_PERIOD,
    );
    ok(w.cmds
        .extend_program(&operator("op-1"), &w.program, t0() + Duration::days(120))
        .await);
    ok(w.cmds
        .submit_application(&as_citizen(b), b, &w.program, &w.psp)
        .await);
    ok(w.cmds.close_program(&operator("op-1"), &w.program).await);
    assert_code(
        w.cmds.close_program(&operator("op-1"), &w.program).await,
        ErrorCode::PROGRAM_CLOSED,
    );
}

#[tokio::test]
async fn a_suspended_relying_party_can_do_nothing() {
    let w = world().await;
    let s = citizen(1);
    ok(w.cmds
        .submit_application(&as_citizen(s), s, &w.program, &w.psp)
        .await);
    ok(w.cmds
        .suspend_relying_party(&operator("op-1"), &w.psp, "audit")
        .await);
    assert_code(
        w.cmds
            .link_payment_service(&as_rp(&w.psp), &w.program, s, "acct")
            .await,
        ErrorCode::RP_SUSPENDED,
    );
    assert_code(
        w.cmds
            .rotate_relying_party_key(
                &as_rp(&w.psp),
                &w.psp,
                mykey_commands::testing::sample_jwk("k9"),
            )
            .await,
        ErrorCode::RP_SUSPENDED,
    );
    ok(w.cmds
        .retire_relying_party(&operator("op-1"), &w.city, "merged")
        .await);
    assert_code(
        w.cmds
            .record_review(
                &as_rp(&w.city),
                &w.program,
                s,
                ReviewOutcome::Approved { points: 1 },
            )
            .await,
        ErrorCode::RP_RETIRED,
    );
    // A new citizen cannot choose a suspended provider either.
    let t = citizen(2);
    assert_code(
        w.cmds
            .submit_application(&as_citizen(t), t, &w.program, &w.psp)
            .await,
        ErrorCode::RP_SUSPENDED,
    );
}

#[tokio::test]
async fn key_rotation_is_visible_in_the_loaded_relying_party() {
    let w = world().await;
    let jwk = mykey_commands::testing::sample_jwk("k2");
    ok(w.cmds
        .rotate_relying_party_key(&as_rp(&w.psp), &w.psp, jwk.clone())
        .await);
    let rp = ok(w.cmds.load_relying_party(&w.psp).await).unwrap_or_else(|| panic!("rp"));
    assert_eq!((rp.public_jwk, rp.key_version), (jwk, 2));
}

// ---------------------------------------------------------------- data patches

async fn login(w: &World, serial: &str) -> mykey_commands::LoginResult {
    let cert = mykey_commands::CertificateRef::new("ca", serial).unwrap_or_else(|e| panic!("{e}"));
    ok(w.cmds.register_login(&system(), &cert, &w.city).await)
}

fn targets(names: &[String]) -> Vec<StreamId> {
    names
        .iter()
        .map(|n| StreamId::parse(n).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

async fn request(w: &World, patch: Uuid, streams: &[String], actions: Vec<PatchAction>) {
    ok(w.cmds
        .request_patch(
            &operator("op-1"),
            RequestPatch {
                patch_id: patch,
                ticket_id: "INC-42".into(),
                reason: "municipality registered the wrong person".into(),
                targets: targets(streams),
                actions,
            },
        )
        .await);
}

#[tokio::test]
async fn a_patch_invalidates_a_ppid_exactly_as_its_dry_run_showed() {
    let w = world().await;
    let l = login(&w, "a1").await;
    let patch = Uuid::from_u128(0xfeed);
    let ppid_stream = format!("ppid-{}", l.ppid);
    let subject_stream = format!("subject-{}", l.subject);
    request(
        &w,
        patch,
        &[ppid_stream.clone(), subject_stream.clone()],
        vec![PatchAction::InvalidatePpid {
            ppid: l.ppid.clone(),
            reason: "wrong person".into(),
        }],
    )
    .await;
    let before = w.cmds.store().all_events().len();
    let dry = ok(w.cmds.dry_run_patch(&operator("op-1"), patch).await);
    // The dry-run writes only to the patch's own stream.
    let after_dry = w.cmds.store().all_events();
    assert_eq!(after_dry.len(), before + 1);
    assert_eq!(
        after_dry[before].stream_id.as_str(),
        format!("patch-{patch}")
    );
    let plan = dry.state.map(|p| p.plan).unwrap_or_default();
    assert_eq!(plan.len(), 2);

    assert_code(
        w.cmds.approve_patch(&operator("op-1"), patch).await,
        ErrorCode::PATCH_SELF_APPROVAL,
    );
    assert_code(
        w.cmds.apply_patch(&operator("op-2"), patch).await,
        ErrorCode::PATCH_NOT_APPROVED,
    );
    ok(w.cmds.approve_patch(&operator("op-2"), patch).await);
    let apply_meta = operator("op-2");
    let applied = ok(w.cmds.apply_patch(&apply_meta, patch).await);
    assert_eq!(applied.state.map(|p| p.status), Some(PatchStatus::Applied));
    // The answer's position is the last compensating event's (the append's last), and a
    // repeat of the same command, after others wrote, answers it again.
    let head = w
        .cmds
        .store()
        .all_events()
        .last()
        .map(|e| e.global_position);
    assert_eq!(Some(applied.position), head);
    login(&w, "a9").await;
    let repeated = ok(w.cmds.apply_patch(&apply_meta, patch).await);
    assert!(repeated.deduplicated);
    assert_eq!(repeated.position, applied.position);

    // Exactly the dry-run's events (ids and bytes), with the patch id, in one append.
    let events = w.cmds.store().all_events();
    let patched: Vec<_> = events
        .iter()
        .filter(|e| e.metadata.patch_id == Some(patch))
        .collect();
    let planned: Vec<_> = plan
        .iter()
        .flat_map(|a| a.events.iter().map(move |e| (a.stream.clone(), e)))
        .collect();
    let targets_written: Vec<_> = patched
        .iter()
        .filter(|e| !e.stream_id.as_str().starts_with("patch-"))
        .collect();
    assert_eq!(targets_written.len(), planned.len());
    for (env, (stream, p)) in targets_written.iter().zip(&planned) {
        assert_eq!(env.stream_id.as_str(), stream);
        assert_eq!(
            (env.event_id, &env.event_type, &env.payload),
            (p.event_id, &p.event_type, &p.payload)
        );
    }
    assert!(patched.iter().any(|e| matches!(
        mykey_schemas::decode_any(e),
        Ok(mykey_schemas::AnyEvent::Patch(
            mykey_domain::patch::PatchEvent::Applied { .. }
        ))
    )));
    assert_eq!(
        patched
            .iter()
            .map(|e| e.metadata.command_id)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1
    );

    let rec = ok(w.cmds.load_ppid(&l.ppid).await).map(|p| p.status);
    assert_eq!(rec, Some(PpidStatus::Invalidated { patch_id: patch }));
    assert_eq!(ok(w.cmds.active_ppid(l.subject, &w.city).await), None);
    let again = login(&w, "a1").await;
    assert!(again.newly_issued);
    assert_ne!(again.ppid, l.ppid);
    assert_code(
        w.cmds.apply_patch(&operator("op-2"), patch).await,
        ErrorCode::PATCH_CLOSED,
    );
}

#[tokio::test]
async fn a_patch_whose_target_moved_since_the_dry_run_is_refused_and_writes_nothing() {
    let w = world().await;
    let l = login(&w, "b1").await;
    let patch = Uuid::from_u128(0xbeef);
    request(
        &w,
        patch,
        &[format!("ppid-{}", l.ppid), format!("subject-{}", l.subject)],
        vec![PatchAction::InvalidatePpid {
            ppid: l.ppid.clone(),
            reason: "r".into(),
        }],
    )
    .await;
    ok(w.cmds.dry_run_patch(&operator("op-1"), patch).await);
    ok(w.cmds.approve_patch(&operator("op-2"), patch).await);
    // Meanwhile the citizen revokes the PPID: the target moved.
    ok(w.cmds.revoke_ppid(&as_citizen(l.subject), &l.ppid).await);
    let n = w.cmds.store().all_events().len();
    assert_code(
        w.cmds.apply_patch(&operator("op-2"), patch).await,
        ErrorCode::PATCH_TARGET_MOVED,
    );
    assert_eq!(w.cmds.store().all_events().len(), n);
    // A new dry-run sees the fresh state (and here refuses: already revoked).
    assert_code(
        w.cmds.dry_run_patch(&operator("op-1"), patch).await,
        ErrorCode::PPID_ALREADY_REVOKED,
    );
}

#[tokio::test]
async fn a_dry_run_may_not_touch_streams_the_request_did_not_name() {
    let w = world().await;
    let l = login(&w, "c1").await;
    let patch = Uuid::from_u128(0xc0c0);
    request(
        &w,
        patch,
        &[format!("ppid-{}", l.ppid)],
        vec![PatchAction::InvalidatePpid {
            ppid: l.ppid.clone(),
            reason: "r".into(),
        }],
    )
    .await;
    assert_code(
        w.cmds.dry_run_patch(&operator("op-1"), patch).await,
        ErrorCode::PATCH_TARGET_NOT_DECLARED,
    );
}

#[tokio::test]
async fn patches_expire_after_the_configured_time() {
    let (cmds, clock) = test_commands(new_store());
    let cmds = cmds.with_patch_ttl(Duration::hours(1));
    let city = chiyoda(&cmds).await;
    let cert = mykey_commands::CertificateRef::new("ca", "d1").unwrap_or_else(|e| panic!("{e}"));
    let l = ok(cmds.register_login(&system(), &cert, &city).await);
    let patch = Uuid::from_u128(0xd0d0);
    ok(cmds
        .request_patch(
            &operator("op-1"),
            RequestPatch {
                patch_id: patch,
                ticket_id: "INC-1".into(),
                reason: "r".into(),
                targets: targets(&[format!("ppid-{}", l.ppid), format!("subject-{}", l.subject)]),
                actions: vec![PatchAction::InvalidatePpid {
                    ppid: l.ppid.clone(),
                    reason: "r".into(),
                }],
            },
        )
        .await);
    ok(cmds.dry_run_patch(&operator("op-1"), patch).await);
    ok(cmds.approve_patch(&operator("op-2"), patch).await);
    let sys = CommandMeta::new("expiry-job", mykey_domain::Role::System, cid());
    assert_code(
        cmds.expire_patch(&sys, patch).await,
        ErrorCode::PATCH_NOT_EXPIRED,
    );
    clock.advance(Duration::hours(1));
    assert_code(
        cmds.apply_patch(&operator("op-2"), patch).await,
        ErrorCode::PATCH_EXPIRED,
    );
    let e = ok(cmds.expire_patch(&sys, patch).await);
    assert_eq!(e.state.map(|p| p.status), Some(PatchStatus::Expired));
}

#[tokio::test]
async fn a_patch_corrects_a_granted_review_and_records_the_reversal_owed() {
    let w = world().await;
    let s = citizen(5);
    approved_application(&w, s, 50_000).await;
    ok(w.cmds
        .grant_points(
            &CommandMeta::new("batch", mykey_domain::Role::System, cid()),
            &w.program,
            s,
        )
        .await);
    let patch = Uuid::from_u128(0xabcd);
    let app_stream = format!("application-{}.{}", w.program, s);
    request(
        &w,
        patch,
        &[app_stream],
        vec![PatchAction::CorrectReviewOutcome {
            program: w.program.clone(),
            subject: s,
            outcome: ReviewOutcome::Approved { points: 5_000 },
            reason: "extra zero".into(),
        }],
    )
    .await;
    ok(w.cmds.dry_run_patch(&operator("op-1"), patch).await);
    ok(w.cmds.approve_patch(&operator("op-2"), patch).await);
    ok(w.cmds.apply_patch(&operator("op-2"), patch).await);
    let a = ok(w.cmds.load_application(&w.program, s).await).unwrap_or_else(|| panic!("app"));
    assert_eq!(a.outcome, Some(ReviewOutcome::Approved { points: 5_000 }));
    assert_eq!((a.reversal_owed_points, a.granted_points), (50_000, None));
    // A municipality cannot correct outside a patch.
    assert_code(
        w.cmds
            .record_review(
                &as_rp(&w.city),
                &w.program,
                s,
                ReviewOutcome::Approved { points: 1 },
            )
            .await,
        ErrorCode::ALREADY_REVIEWED,
    );
}

#[tokio::test]
async fn a_patch_unlinks_a_payment_service_and_blocks_the_grant() {
    let w = world().await;
    let s = citizen(6);
    approved_application(&w, s, 100).await;
    let patch = Uuid::from_u128(0xaaaa);
    request(
        &w,
        patch,
        &[format!("application-{}.{}", w.program, s)],
        vec![PatchAction::UnlinkPaymentService {
            program: w.program.clone(),
            subject: s,
            reason: "fraud report".into(),
        }],
    )
    .await;
    ok(w.cmds.dry_run_patch(&operator("op-1"), patch).await);
    ok(w.cmds.approve_patch(&operator("op-3"), patch).await);
    ok(w.cmds.apply_patch(&operator("op-3"), patch).await);
    assert_code(
        w.cmds
            .grant_points(
                &CommandMeta::new("batch", mykey_domain::Role::System, cid()),
                &w.program,
                s,
            )
            .await,
        ErrorCode::PAYMENT_SERVICE_NOT_LINKED,
    );
}

// ---------------------------------------------------------------- notices and test cards

#[tokio::test]
async fn maintenance_notices_and_test_cards_through_handlers() {
    let (cmds, _) = setup();
    let id = NoticeId::parse("2026-04-maint").unwrap_or_else(|e| panic!("{e}"));
    let details = NoticeDetails {
        start: t0() + Duration::days(1),
        end: t0() + Duration::days(1) + Duration::hours(2),
        affected_services: vec!["login".into(), "points".into()],
        message_ja: "計画停止".into(),
        message_en: "Planned outage".into(),
    };
    ok(cmds
        .schedule_maintenance(&operator("op-1"), &id, details.clone())
        .await);
    let mut later = details.clone();
    later.start += Duration::hours(1);
    later.end += Duration::hours(1);
    ok(cmds
        .update_maintenance(&operator("op-1"), &id, later.clone())
        .await);
    assert_eq!(
        ok(cmds.load_notice(&id).await).map(|n| n.details),
        Some(later)
    );
    ok(cmds
        .cancel_maintenance(&operator("op-1"), &id, "not needed")
        .await);
    assert_code(
        cmds.cancel_maintenance(&operator("op-1"), &id, "again")
            .await,
        ErrorCode::NOTICE_CANCELLED,
    );

    let card = TestCardId::parse("card-7").unwrap_or_else(|e| panic!("{e}"));
    let vendor = Borrower {
        kind: BorrowerKind::Vendor,
        name: "Vendor".into(),
    };
    ok(cmds
        .register_test_card(&operator("op-1"), &card, "card 7")
        .await);
    ok(cmds
        .lend_test_card(&operator("op-1"), &card, vendor.clone())
        .await);
    assert_code(
        cmds.lend_test_card(&operator("op-1"), &card, vendor).await,
        ErrorCode::CARD_ALREADY_LENT,
    );
    ok(cmds.return_test_card(&operator("op-1"), &card).await);
    assert_code(
        cmds.return_test_card(&operator("op-1"), &card).await,
        ErrorCode::CARD_NOT_LENT,
    );
    ok(cmds
        .check_test_card_inventory(&operator("op-1"), &card)
        .await);
    ok(cmds
        .report_test_card_lost(&operator("op-1"), &card, "not found at inventory")
        .await);
    let lost = ok(cmds.load_test_card(&card).await);
    assert!(lost.is_some());
    assert_eq!(
        lost.map(|c| c.status),
        Some(mykey_domain::test_card::CardStatus::Lost)
    );
}

// ---------------------------------------------------------------- idempotency and retries

#[tokio::test]
async fn repeating_a_command_id_appends_nothing_and_succeeds() {
    let (cmds, _) = setup();
    let card = TestCardId::parse("card-1").unwrap_or_else(|e| panic!("{e}"));
    let meta = operator("op-1");
    let first = ok(cmds.register_test_card(&meta, &card, "c").await);
    let again = ok(cmds.register_test_card(&meta, &card, "c").await);
    assert!(!first.deduplicated && again.deduplicated);
    assert_eq!(cmds.store().all_events().len(), 1);
    assert_eq!((first.position, again.position), (1, 1));
}

#[tokio::test]
async fn a_command_reports_the_position_it_wrote_and_a_repeat_the_first_one() {
    let w = world().await;
    let s = citizen(1);
    approved_application(&w, s, 500).await;
    let grant = CommandMeta::new("batch", mykey_domain::Role::System, Uuid::new_v4());
    let first = ok(w.cmds.grant_points(&grant, &w.program, s).await);
    let written = w
        .cmds
        .store()
        .all_events()
        .last()
        .map(|e| e.global_position);
    assert_eq!(Some(first.position), written);
    // Others write; the log head moves past it; the repeat answers the first position.
    approved_application(&w, citizen(2), 500).await;
    let again = ok(w.cmds.grant_points(&grant, &w.program, s).await);
    assert!(again.deduplicated);
    assert_eq!(again.position, first.position);
    assert!(w.cmds.store().all_events().len() as u64 > first.position);
    // Each handler answers its own event's position.
    let unlink = CommandMeta::new(
        s.to_string(),
        mykey_domain::Role::Citizen(s),
        Uuid::new_v4(),
    );
    let unlinked = ok(w
        .cmds
        .unlink_payment_service(&unlink, &w.program, s, "moving banks")
        .await);
    assert_eq!(
        Some(unlinked.position),
        w.cmds
            .store()
            .all_events()
            .last()
            .map(|e| e.global_position)
    );
}

/// Appends a competing request right before the handler's first append.
#[derive(Debug)]
struct RacingStore {
    inner: InMemoryStore,
    interfere: Mutex<Option<AppendRequest>>,
    appends: AtomicU32,
}

impl EventStore for RacingStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        let competing = self.interfere.lock().map(|mut g| g.take()).unwrap_or(None);
        if let Some(c) = competing {
            self.inner.append(c).await?;
        }
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        s: &StreamId,
        f: u64,
        l: usize,
    ) -> Result<Vec<mykey_schemas::EventEnvelope>, StoreError> {
        self.inner.read_stream(s, f, l).await
    }
    async fn read_all(
        &self,
        f: u64,
        l: usize,
    ) -> Result<Vec<mykey_schemas::EventEnvelope>, StoreError> {
        self.inner.read_all(f, l).await
    }
    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.head().await
    }
    fn subscribe(&self, f: u64) -> Subscription {
        self.inner.subscribe(f)
    }
}

#[tokio::test]
async fn a_version_conflict_is_retried_on_fresh_state() {
    let inner = new_store();
    let (setup_cmds, _) = test_commands(inner.clone());
    let card = TestCardId::parse("card-2").unwrap_or_else(|e| panic!("{e}"));
    ok(setup_cmds
        .register_test_card(&operator("op-1"), &card, "c")
        .await);
    // Another writer checks the inventory between our read and our append.
    let stream = StreamId::parse("test_card-card-2").unwrap_or_else(|e| panic!("{e}"));
    let payload = format!("{{\"checked_at\":\"{}\"}}", t0().to_rfc3339());
    let competing = AppendRequest::single(
        stream.clone(),
        ExpectedVersion::Exact(1),
        vec![NewEvent {
            event_id: Uuid::from_u128(1),
            event_type: <mykey_schemas::stored::test_card::TestCardInventoryCheckedV1 as mykey_schemas::StoredEvent>::EVENT_TYPE.into(),
            schema_version: 1,
            payload,
        }],
        operator("op-9").event_metadata(None),
    );
    let store = RacingStore {
        inner: inner.clone(),
        interfere: Mutex::new(Some(competing)),
        appends: AtomicU32::new(0),
    };
    let (cmds, _) = test_commands_with_ids_from(store, 1_000_000);
    let lent = ok(cmds
        .lend_test_card(
            &operator("op-1"),
            &card,
            Borrower {
                kind: BorrowerKind::Municipality,
                name: "Chiyoda".into(),
            },
        )
        .await);
    assert_eq!(lent.version, 3);
    assert_eq!(cmds.store().appends.load(Ordering::Relaxed), 2);
    let st = lent.state.unwrap_or_else(|| panic!("card"));
    assert!(
        st.last_checked_at.is_some(),
        "the retry decided on the competing writer's state"
    );
}

/// Every append conflicts.
#[derive(Debug, Default)]
struct AlwaysConflict(AtomicU32);

impl EventStore for AlwaysConflict {
    async fn append(&self, r: AppendRequest) -> Result<AppendOutcome, AppendError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        let s = &r.streams[0];
        Err(AppendError::Conflict {
            stream: s.stream.clone(),
            expected: s.expected,
            actual: 99,
        })
    }
    async fn read_stream(
        &self,
        _: &StreamId,
        _: u64,
        _: usize,
    ) -> Result<Vec<mykey_schemas::EventEnvelope>, StoreError> {
        Ok(vec![])
    }
    async fn read_all(
        &self,
        _: u64,
        _: usize,
    ) -> Result<Vec<mykey_schemas::EventEnvelope>, StoreError> {
        Ok(vec![])
    }
    async fn head(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn subscribe(&self, _: u64) -> Subscription {
        tokio::sync::mpsc::channel(1).1
    }
}

#[tokio::test]
async fn retries_are_bounded_and_reported_as_contention() {
    let (cmds, _) = test_commands(AlwaysConflict::default());
    let card = TestCardId::parse("card-3").unwrap_or_else(|e| panic!("{e}"));
    let r = cmds.register_test_card(&operator("op-1"), &card, "c").await;
    assert!(
        matches!(r, Err(CommandError::Contention { attempts, .. }) if attempts == MAX_ATTEMPTS),
        "{r:?}"
    );
    assert_eq!(r.err().map(|e| e.code()), Some("CONTENTION"));
    assert_eq!(cmds.store().0.load(Ordering::Relaxed), MAX_ATTEMPTS);
}

#[tokio::test]
async fn a_command_id_reused_for_a_different_command_is_refused_not_silently_dropped() {
    let (cmds, _) = setup();
    let meta = operator("op-1");
    let a = TestCardId::parse("card-a").unwrap_or_else(|e| panic!("{e}"));
    let b = TestCardId::parse("card-b").unwrap_or_else(|e| panic!("{e}"));
    ok(cmds.register_test_card(&meta, &a, "a").await);
    assert_code(
        cmds.register_test_card(&meta, &b, "b").await,
        ErrorCode::COMMAND_ID_REUSED,
    );
    assert!(ok(cmds.load_test_card(&b).await).is_none());

    let city = chiyoda(&cmds).await;
    let login = system();
    let c1 = mykey_commands::CertificateRef::new("ca", "e1").unwrap_or_else(|e| panic!("{e}"));
    let c2 = mykey_commands::CertificateRef::new("ca", "e2").unwrap_or_else(|e| panic!("{e}"));
    ok(cmds.register_login(&login, &c1, &city).await);
    assert_code(
        cmds.register_login(&login, &c2, &city).await,
        ErrorCode::COMMAND_ID_REUSED,
    );
    assert_eq!(ok(cmds.resolve_certificate(&c2).await), None);
}

#[tokio::test]
async fn a_v1_registration_in_the_log_is_upcast_on_read_and_usable() {
    let (cmds, _) = setup();
    // Written by the first platform version: no `kind`.
    let payload = serde_json::json!({
        "relying_party_id": "city-011002",
        "code": "011002",
        "name": "Sapporo",
        "public_jwk": mykey_commands::testing::sample_jwk("k")
    })
    .to_string();
    let stream = StreamId::parse("relying_party-city-011002").unwrap_or_else(|e| panic!("{e}"));
    let legacy = AppendRequest::single(
        stream,
        ExpectedVersion::NoStream,
        vec![NewEvent {
            event_id: Uuid::from_u128(42),
            event_type: <mykey_schemas::stored::relying_party::RelyingPartyRegisteredV1 as mykey_schemas::StoredEvent>::EVENT_TYPE.into(),
            schema_version: 1,
            payload,
        }],
        operator("op-0").event_metadata(None),
    );
    ok(cmds
        .store()
        .append(legacy)
        .await
        .map_err(CommandError::from));
    let id = RelyingPartyId::parse("city-011002").unwrap_or_else(|e| panic!("{e}"));
    let rp = ok(cmds.load_relying_party(&id).await).unwrap_or_else(|| panic!("rp"));
    assert_eq!(rp.kind, RpKind::Municipality);
    // It can own a program, which requires a municipality.
    ok(cmds
        .create_program(
            &operator("op-1"),
            CreateProgram {
                id: prog("sapporo-1"),
                municipality: id,
                name: "Sapporo points".into(),
                period_start: t0(),
                period_end: t0() + Duration::days(10),
            },
        )
        .await);
}

#[tokio::test]
async fn production_handlers_give_events_time_ordered_v7_ids() {
    // The envelope specifies v7; random ids would also cost the log's indexes about a third
    // of its append throughput (docs/BENCHMARKS.md).
    let cmds = mykey_commands::Commands::new(new_store());
    let card = TestCardId::parse("card-v7").unwrap_or_else(|e| panic!("{e}"));
    ok(cmds.register_test_card(&operator("op-1"), &card, "c").await);
    let events = cmds.store().all_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id.get_version_num(), 7);
}
