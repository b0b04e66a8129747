//! One given/when/then test per business rule, including every rejection.

use chrono::Duration;
use mykey_commands::testing::{given, sample_jwk, t0};
use mykey_domain::application::{
    Application, ApplicationCommand as AC, ApplicationEvent as AE, ReviewOutcome,
};
use mykey_domain::certificate::{
    Certificate, CertificateCommand as CC, CertificateEvent as CE, CertificateRef,
};
use mykey_domain::maintenance::{
    Maintenance, MaintenanceCommand as MC, MaintenanceEvent as ME, NoticeDetails,
};
use mykey_domain::patch::{
    Patch, PatchAction, PatchCommand as XC, PatchEvent as XE, PlannedAppend, PlannedEvent,
};
use mykey_domain::ppid::{PpidAggregate, PpidCommand as PC, PpidEvent as PE, RevokedBy};
use mykey_domain::program::{Program, ProgramCommand as GC, ProgramEvent as GE, ProgramState};
use mykey_domain::relying_party::{
    RelyingParty, RelyingPartyCommand as RC, RelyingPartyEvent as RE, RelyingPartyState, RpKind,
};
use mykey_domain::test_card::{
    Borrower, BorrowerKind, TestCard, TestCardCommand as TC, TestCardEvent as TE,
};
use mykey_domain::{
    Aggregate, ErrorCode as E, NoticeId, Ppid, ProgramId, RelyingPartyId, Role, SubjectId,
    TestCardId,
};
use uuid::Uuid;

fn rp(s: &str) -> RelyingPartyId {
    RelyingPartyId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}
fn prog(s: &str) -> ProgramId {
    ProgramId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}
fn subject(n: u128) -> SubjectId {
    SubjectId(Uuid::from_u128(n))
}
fn cert(serial: &str) -> CertificateRef {
    CertificateRef::new("ca", serial).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------- relying party

fn registered(id: &str, code: &str, kind: RpKind) -> RE {
    RE::Registered {
        id: rp(id),
        code: code.into(),
        name: "Name".into(),
        kind,
        public_jwk: sample_jwk("k1"),
    }
}

fn register(id: &str, code: &str, kind: RpKind) -> RC {
    RC::Register {
        id: rp(id),
        code: code.into(),
        name: "Name".into(),
        kind,
        public_jwk: sample_jwk("k1"),
    }
}

fn rp_state(events: &[RE]) -> Option<RelyingPartyState> {
    RelyingParty::fold(events)
}

#[test]
fn rp_operator_registers_with_valid_codes() {
    for (code, kind) in [
        ("131016", RpKind::Municipality),
        ("011002", RpKind::Municipality),
        ("271004", RpKind::Municipality),
        ("PSP-01", RpKind::PaymentServiceProvider),
    ] {
        given::<RelyingParty>([])
            .when(register("x", code, kind))
            .then_expect([registered("x", code, kind)]);
    }
}

#[test]
fn rp_register_rejections() {
    given::<RelyingParty>([])
        .when(register("x", "131017", RpKind::Municipality))
        .then_reject(E::INVALID_LOCAL_GOVERNMENT_CODE);
    given::<RelyingParty>([])
        .when(register("x", "13101", RpKind::Municipality))
        .then_reject(E::INVALID_LOCAL_GOVERNMENT_CODE);
    given::<RelyingParty>([])
        .when(register("x", "bad code!", RpKind::PrivateBusiness))
        .then_reject(E::INVALID_INPUT);
    given::<RelyingParty>([])
        .by("city", Role::RelyingParty(rp("city")))
        .when(register("x", "131016", RpKind::Municipality))
        .then_reject(E::NOT_AUTHORISED);
    given::<RelyingParty>([registered("x", "131016", RpKind::Municipality)])
        .when(register("x", "131016", RpKind::Municipality))
        .then_reject(E::RP_ALREADY_REGISTERED);
    let mut with_private = sample_jwk("k");
    with_private["d"] = "secret".into();
    given::<RelyingParty>([])
        .when(RC::Register {
            id: rp("x"),
            code: "131016".into(),
            name: "n".into(),
            kind: RpKind::Municipality,
            public_jwk: with_private,
        })
        .then_reject(E::INVALID_JWK);
    given::<RelyingParty>([])
        .when(RC::Register {
            id: rp("x"),
            code: "131016".into(),
            name: " ".into(),
            kind: RpKind::Municipality,
            public_jwk: sample_jwk("k"),
        })
        .then_reject(E::INVALID_INPUT);
}

#[test]
fn rp_key_rotation_by_operator_or_itself_while_active() {
    let base = [registered("x", "131016", RpKind::Municipality)];
    let s = given::<RelyingParty>(base.clone())
        .when(RC::RotateKey {
            public_jwk: sample_jwk("k2"),
        })
        .then_expect([RE::KeyRotated {
            public_jwk: sample_jwk("k2"),
        }]);
    assert_eq!(s.map(|r| r.key_version), Some(2));
    given::<RelyingParty>(base.clone())
        .by("x", Role::RelyingParty(rp("x")))
        .when(RC::RotateKey {
            public_jwk: sample_jwk("k2"),
        })
        .then_expect([RE::KeyRotated {
            public_jwk: sample_jwk("k2"),
        }]);
    given::<RelyingParty>(base.clone())
        .by("y", Role::RelyingParty(rp("y")))
        .when(RC::RotateKey {
            public_jwk: sample_jwk("k2"),
        })
        .then_reject(E::NOT_AUTHORISED);
    let suspended = [base[0].clone(), RE::Suspended { reason: "r".into() }];
    given::<RelyingParty>(suspended.clone())
        .by("x", Role::RelyingParty(rp("x")))
        .when(RC::RotateKey {
            public_jwk: sample_jwk("k2"),
        })
        .then_reject(E::RP_SUSPENDED);
    let retired = [base[0].clone(), RE::Retired { reason: "r".into() }];
    given::<RelyingParty>(retired)
        .when(RC::RotateKey {
            public_jwk: sample_jwk("k2"),
        })
        .then_reject(E::RP_RETIRED);
    given::<RelyingParty>([])
        .when(RC::RotateKey {
            public_jwk: sample_jwk("k2"),
        })
        .then_reject(E::RP_NOT_FOUND);
}

#[test]
fn rp_suspend_resume_retire() {
    let base = vec![registered("x", "131016", RpKind::Municipality)];
    given::<RelyingParty>(base.clone())
        .when(RC::Suspend { reason: "r".into() })
        .then_expect([RE::Suspended { reason: "r".into() }]);
    given::<RelyingParty>(base.clone())
        .when(RC::Resume)
        .then_reject(E::RP_NOT_SUSPENDED);
    let mut suspended = base.clone();
    suspended.push(RE::Suspended { reason: "r".into() });
    given::<RelyingParty>(suspended.clone())
        .when(RC::Suspend { reason: "r".into() })
        .then_reject(E::RP_SUSPENDED);
    given::<RelyingParty>(suspended.clone())
        .when(RC::Resume)
        .then_expect([RE::Resumed]);
    given::<RelyingParty>(suspended.clone())
        .by("x", Role::RelyingParty(rp("x")))
        .when(RC::Resume)
        .then_reject(E::NOT_AUTHORISED);
    given::<RelyingParty>(suspended)
        .when(RC::Retire { reason: "r".into() })
        .then_expect([RE::Retired { reason: "r".into() }]);
    let mut retired = base;
    retired.push(RE::Retired { reason: "r".into() });
    for cmd in [
        RC::Retire { reason: "r".into() },
        RC::Resume,
        RC::Suspend { reason: "r".into() },
    ] {
        given::<RelyingParty>(retired.clone())
            .when(cmd)
            .then_reject(E::RP_RETIRED);
    }
}

// ---------------------------------------------------------------- program

fn city() -> Option<RelyingPartyState> {
    rp_state(&[registered("city", "131016", RpKind::Municipality)])
}

fn created() -> GE {
    GE::Created {
        id: prog("p1"),
        municipality: rp("city"),
        name: "Points".into(),
        period_start: t0(),
        period_end: t0() + Duration::days(30),
    }
}

fn create(municipality_rp: Option<RelyingPartyState>, days: i64) -> GC {
    GC::Create {
        id: prog("p1"),
        municipality: rp("city"),
        municipality_rp,
        name: "Points".into(),
        period_start: t0(),
        period_end: t0() + Duration::days(days),
    }
}

fn program_state(events: &[GE]) -> Option<ProgramState> {
    Program::fold(events)
}

#[test]
fn program_created_by_operator_for_an_active_municipality() {
    given::<Program>([])
        .when(create(city(), 30))
        .then_expect([created()]);
    given::<Program>([])
        .by("city", Role::RelyingParty(rp("city")))
        .when(create(city(), 30))
        .then_reject(E::NOT_AUTHORISED);
    given::<Program>([created()])
        .when(create(city(), 30))
        .then_reject(E::PROGRAM_ALREADY_EXISTS);
    given::<Program>([])
        .when(create(city(), 0))
        .then_reject(E::INVALID_PERIOD);
    given::<Program>([])
        .when(create(None, 30))
        .then_reject(E::RP_NOT_FOUND);
    let library = rp_state(&[registered("city", "lib", RpKind::LibrarySystem)]);
    given::<Program>([])
        .when(create(library, 30))
        .then_reject(E::RP_WRONG_KIND);
    let suspended = rp_state(&[
        registered("city", "131016", RpKind::Municipality),
        RE::Suspended { reason: "r".into() },
    ]);
    given::<Program>([])
        .when(create(suspended, 30))
        .then_reject(E::RP_SUSPENDED);
}

#[test]
fn program_extend_pause_resume_close() {
    let later = t0() + Duration::days(60);
    given::<Program>([created()])
        .when(GC::Extend { new_end: later })
        .then_expect([GE::Extended { new_end: later }]);
    given::<Program>([created()])
        .when(GC::Extend { new_end: t0() })
        .then_reject(E::INVALID_PERIOD);
    given::<Program>([])
        .when(GC::Extend { new_end: later })
        .then_reject(E::PROGRAM_NOT_FOUND);
    given::<Program>([created()])
        .when(GC::Pause { reason: "r".into() })
        .then_expect([GE::Paused { reason: "r".into() }]);
    let paused = [created(), GE::Paused { reason: "r".into() }];
    given::<Program>(paused.clone())
        .when(GC::Pause { reason: "r".into() })
        .then_reject(E::PROGRAM_PAUSED);
    given::<Program>(paused.clone())
        .when(GC::Resume)
        .then_expect([GE::Resumed]);
    given::<Program>([created()])
        .when(GC::Resume)
        .then_reject(E::PROGRAM_NOT_PAUSED);
    given::<Program>(paused)
        .when(GC::Close)
        .then_expect([GE::Closed]);
    let closed = [created(), GE::Closed];
    for cmd in [
        GC::Close,
        GC::Resume,
        GC::Pause { reason: "r".into() },
        GC::Extend { new_end: later },
    ] {
        given::<Program>(closed.clone())
            .when(cmd)
            .then_reject(E::PROGRAM_CLOSED);
    }
}

// ---------------------------------------------------------------- certificate, PPID

#[test]
fn certificate_link_revoke_renew_rules() {
    let s = subject(1);
    given::<Certificate>([])
        .by("login", Role::System)
        .when(CC::Link {
            certificate: cert("1"),
            subject: s,
        })
        .then_expect([CE::Linked {
            certificate: cert("1"),
            subject: s,
        }]);
    let linked = [CE::Linked {
        certificate: cert("1"),
        subject: s,
    }];
    given::<Certificate>(linked.clone())
        .by("login", Role::System)
        .when(CC::Link {
            certificate: cert("1"),
            subject: subject(2),
        })
        .then_reject(E::CERTIFICATE_ALREADY_LINKED);
    let revoked = [CE::Revoked {
        certificate: cert("1"),
        reason: "crl".into(),
    }];
    given::<Certificate>(revoked.clone())
        .by("login", Role::System)
        .when(CC::Link {
            certificate: cert("1"),
            subject: s,
        })
        .then_reject(E::CERTIFICATE_REVOKED);
    given::<Certificate>(revoked.clone())
        .by("jlis", Role::System)
        .when(CC::LinkFromRenewal {
            certificate: cert("1"),
            subject: s,
            previous: cert("0"),
        })
        .then_reject(E::CERTIFICATE_REVOKED);
    given::<Certificate>(revoked)
        .by("crl", Role::System)
        .when(CC::Revoke {
            certificate: cert("1"),
            reason: "crl".into(),
        })
        .then_reject(E::CERTIFICATE_ALREADY_REVOKED);
    given::<Certificate>([])
        .by("c", Role::Citizen(s))
        .when(CC::Revoke {
            certificate: cert("1"),
            reason: "crl".into(),
        })
        .then_reject(E::NOT_AUTHORISED);
    given::<Certificate>([])
        .by("crl", Role::System)
        .when(CC::RecordRenewal { new: cert("2") })
        .then_reject(E::CERTIFICATE_NOT_LINKED);
    given::<Certificate>(linked)
        .by("jlis", Role::System)
        .when(CC::RecordRenewal { new: cert("2") })
        .then_expect([CE::Renewed { new: cert("2") }]);
}

fn issued() -> PE {
    PE::Issued {
        ppid: Ppid::from_uuid(Uuid::from_u128(9)),
        subject: subject(1),
        relying_party: rp("city"),
    }
}

#[test]
fn ppid_revocation_by_its_rp_or_citizen_only() {
    given::<PpidAggregate>([issued()])
        .by("city", Role::RelyingParty(rp("city")))
        .when(PC::Revoke)
        .then_expect([PE::Revoked {
            by: RevokedBy::RelyingParty,
        }]);
    given::<PpidAggregate>([issued()])
        .by("c", Role::Citizen(subject(1)))
        .when(PC::Revoke)
        .then_expect([PE::Revoked {
            by: RevokedBy::Citizen,
        }]);
    given::<PpidAggregate>([issued()])
        .by("c", Role::Citizen(subject(2)))
        .when(PC::Revoke)
        .then_reject(E::NOT_AUTHORISED);
    given::<PpidAggregate>([issued()])
        .when(PC::Revoke)
        .then_reject(E::NOT_AUTHORISED);
    given::<PpidAggregate>([
        issued(),
        PE::Revoked {
            by: RevokedBy::Citizen,
        },
    ])
    .by("c", Role::Citizen(subject(1)))
    .when(PC::Revoke)
    .then_reject(E::PPID_ALREADY_REVOKED);
    given::<PpidAggregate>([])
        .by("c", Role::Citizen(subject(1)))
        .when(PC::Revoke)
        .then_reject(E::PPID_NOT_FOUND);
}

#[test]
fn ppid_value_issued_only_once() {
    given::<PpidAggregate>([issued()])
        .by("login", Role::System)
        .when(PC::Issue {
            ppid: Ppid::from_uuid(Uuid::from_u128(9)),
            subject: subject(2),
            relying_party: rp("city"),
        })
        .then_reject(E::PPID_ALREADY_ISSUED);
}

#[test]
fn ppid_invalidation_only_by_a_data_patch() {
    let patch = Uuid::from_u128(77);
    given::<PpidAggregate>([issued()])
        .when(PC::Invalidate { reason: "r".into() })
        .then_reject(E::ONLY_BY_DATA_PATCH);
    given::<PpidAggregate>([issued()])
        .in_patch(patch)
        .when(PC::Invalidate { reason: "r".into() })
        .then_expect([PE::Invalidated {
            patch_id: patch,
            reason: "r".into(),
        }]);
    let invalidated = [
        issued(),
        PE::Invalidated {
            patch_id: patch,
            reason: "r".into(),
        },
    ];
    given::<PpidAggregate>(invalidated.clone())
        .in_patch(patch)
        .when(PC::Invalidate { reason: "r".into() })
        .then_reject(E::PPID_ALREADY_INVALIDATED);
    given::<PpidAggregate>(invalidated)
        .by("c", Role::Citizen(subject(1)))
        .when(PC::Revoke)
        .then_reject(E::PPID_ALREADY_INVALIDATED);
}

// ---------------------------------------------------------------- application

fn psp() -> Option<RelyingPartyState> {
    rp_state(&[registered("psp", "psp", RpKind::PaymentServiceProvider)])
}

fn submit(program: Option<ProgramState>, provider: Option<RelyingPartyState>) -> AC {
    AC::Submit {
        subject: subject(1),
        program_id: prog("p1"),
        program,
        payment_service: rp("psp"),
        payment_provider: provider,
    }
}

fn submitted() -> AE {
    AE::Submitted {
        subject: subject(1),
        program: prog("p1"),
        municipality: rp("city"),
        payment_service: rp("psp"),
    }
}

fn linked() -> AE {
    AE::PaymentServiceLinked {
        payment_service: rp("psp"),
        link_ref: "acct-1".into(),
    }
}

fn approved(points: u64) -> AE {
    AE::ReviewRecorded {
        outcome: ReviewOutcome::Approved { points },
    }
}

const CITIZEN: fn() -> Role = || Role::Citizen(SubjectId(Uuid::from_u128(1)));

#[test]
fn application_submitted_only_inside_the_period_while_open() {
    let open = program_state(&[created()]);
    given::<Application>([])
        .by("c", CITIZEN())
        .at(t0() + Duration::days(1))
        .when(submit(open.clone(), psp()))
        .then_expect([submitted()]);
    given::<Application>([])
        .by("c", CITIZEN())
        .at(t0() - Duration::seconds(1))
        .when(submit(open.clone(), psp()))
        .then_reject(E::OUTSIDE_PROGRAM_PERIOD);
    given::<Application>([])
        .by("c", CITIZEN())
        .at(t0() + Duration::days(30))
        .when(submit(open.clone(), psp()))
        .then_reject(E::OUTSIDE_PROGRAM_PERIOD);
    let paused = program_state(&[created(), GE::Paused { reason: "r".into() }]);
    given::<Application>([])
        .by("c", CITIZEN())
        .when(submit(paused, psp()))
        .then_reject(E::PROGRAM_PAUSED);
    let closed = program_state(&[created(), GE::Closed]);
    given::<Application>([])
        .by("c", CITIZEN())
        .when(submit(closed, psp()))
        .then_reject(E::PROGRAM_CLOSED);
    given::<Application>([])
        .by("c", CITIZEN())
        .when(submit(None, psp()))
        .then_reject(E::PROGRAM_NOT_FOUND);
    given::<Application>([submitted()])
        .by("c", CITIZEN())
        .when(submit(open.clone(), psp()))
        .then_reject(E::APPLICATION_ALREADY_SUBMITTED);
    given::<Application>([])
        .by("c", Role::Citizen(subject(2)))
        .when(submit(open.clone(), psp()))
        .then_reject(E::NOT_AUTHORISED);
    given::<Application>([])
        .by("c", CITIZEN())
        .when(submit(open.clone(), city()))
        .then_reject(E::RP_WRONG_KIND);
    let suspended_psp = rp_state(&[
        registered("psp", "psp", RpKind::PaymentServiceProvider),
        RE::Suspended { reason: "r".into() },
    ]);
    given::<Application>([])
        .by("c", CITIZEN())
        .when(submit(open, suspended_psp))
        .then_reject(E::RP_SUSPENDED);
}

#[test]
fn application_link_by_the_chosen_provider() {
    let link = || AC::LinkPaymentService {
        link_ref: "acct-1".into(),
    };
    given::<Application>([submitted()])
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(link())
        .then_expect([linked()]);
    given::<Application>([submitted()])
        .by("other", Role::RelyingParty(rp("other")))
        .when(link())
        .then_reject(E::NOT_AUTHORISED);
    given::<Application>([submitted()])
        .by("c", CITIZEN())
        .when(link())
        .then_expect([linked()]);
    given::<Application>([submitted()])
        .by("someone", Role::Citizen(SubjectId(Uuid::from_u128(99))))
        .when(link())
        .then_reject(E::NOT_AUTHORISED);
    given::<Application>([submitted(), linked()])
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(link())
        .then_reject(E::PAYMENT_SERVICE_ALREADY_LINKED);
    given::<Application>([])
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(link())
        .then_reject(E::APPLICATION_NOT_FOUND);
}

#[test]
fn application_review_by_the_municipality_while_not_paused() {
    let open = program_state(&[created()]);
    let review = |outcome, program| AC::RecordReview { outcome, program };
    let city_role = || Role::RelyingParty(rp("city"));
    given::<Application>([submitted(), linked()])
        .by("city", city_role())
        .when(review(
            ReviewOutcome::Approved { points: 5000 },
            open.clone(),
        ))
        .then_expect([approved(5000)]);
    given::<Application>([submitted()])
        .by("city", city_role())
        .when(review(
            ReviewOutcome::Rejected {
                reason: "not resident".into(),
            },
            open.clone(),
        ))
        .then_expect([AE::ReviewRecorded {
            outcome: ReviewOutcome::Rejected {
                reason: "not resident".into(),
            },
        }]);
    given::<Application>([submitted()])
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(review(ReviewOutcome::Approved { points: 1 }, open.clone()))
        .then_reject(E::NOT_AUTHORISED);
    given::<Application>([submitted()])
        .by("city", city_role())
        .when(review(ReviewOutcome::Approved { points: 0 }, open.clone()))
        .then_reject(E::POINTS_MUST_BE_POSITIVE);
    given::<Application>([submitted(), approved(1)])
        .by("city", city_role())
        .when(review(ReviewOutcome::Approved { points: 2 }, open))
        .then_reject(E::ALREADY_REVIEWED);
    let paused = program_state(&[created(), GE::Paused { reason: "r".into() }]);
    given::<Application>([submitted()])
        .by("city", city_role())
        .when(review(ReviewOutcome::Approved { points: 2 }, paused))
        .then_reject(E::PROGRAM_PAUSED);
    given::<Application>([submitted()])
        .by("city", city_role())
        .when(review(ReviewOutcome::Approved { points: 2 }, None))
        .then_reject(E::PROGRAM_NOT_FOUND);
}

#[test]
fn points_granted_once_for_an_approved_linked_application() {
    let sys = || ("batch", Role::System);
    let grant = |h: Vec<AE>| {
        let (id, role) = sys();
        given::<Application>(h).by(id, role).when(AC::GrantPoints)
    };
    grant(vec![submitted(), linked(), approved(5000)]).then_expect([AE::PointsGranted {
        points: 5000,
        payment_service: rp("psp"),
    }]);
    grant(vec![submitted(), linked()]).then_reject(E::NOT_REVIEWED);
    grant(vec![
        submitted(),
        linked(),
        AE::ReviewRecorded {
            outcome: ReviewOutcome::Rejected { reason: "r".into() },
        },
    ])
    .then_reject(E::APPLICATION_REJECTED);
    grant(vec![submitted(), approved(5)]).then_reject(E::PAYMENT_SERVICE_NOT_LINKED);
    grant(vec![
        submitted(),
        linked(),
        approved(5),
        AE::PointsGranted {
            points: 5,
            payment_service: rp("psp"),
        },
    ])
    .then_reject(E::POINTS_ALREADY_GRANTED);
    given::<Application>([submitted(), linked(), approved(5)])
        .by("c", CITIZEN())
        .when(AC::GrantPoints)
        .then_reject(E::NOT_AUTHORISED);
}

#[test]
fn unlinking_blocks_every_grant_not_yet_made() {
    let unlinked = AE::PaymentServiceUnlinked {
        reason: "changed my mind".into(),
        patch_id: None,
    };
    given::<Application>([submitted(), linked(), approved(5)])
        .by("c", CITIZEN())
        .when(AC::UnlinkPaymentService {
            reason: "changed my mind".into(),
        })
        .then_expect([unlinked.clone()]);
    given::<Application>([submitted(), linked(), approved(5), unlinked.clone()])
        .by("batch", Role::System)
        .when(AC::GrantPoints)
        .then_reject(E::PAYMENT_SERVICE_NOT_LINKED);
    given::<Application>([submitted()])
        .by("c", CITIZEN())
        .when(AC::UnlinkPaymentService { reason: "r".into() })
        .then_reject(E::PAYMENT_SERVICE_NOT_LINKED);
    given::<Application>([submitted(), linked()])
        .by("c", Role::Citizen(subject(2)))
        .when(AC::UnlinkPaymentService { reason: "r".into() })
        .then_reject(E::NOT_AUTHORISED);
    // An operator outside a patch cannot unlink.
    given::<Application>([submitted(), linked()])
        .when(AC::UnlinkPaymentService { reason: "r".into() })
        .then_reject(E::ONLY_BY_DATA_PATCH);
    let patch = Uuid::from_u128(5);
    given::<Application>([submitted(), linked()])
        .in_patch(patch)
        .when(AC::UnlinkPaymentService { reason: "r".into() })
        .then_expect([AE::PaymentServiceUnlinked {
            reason: "r".into(),
            patch_id: Some(patch),
        }]);
}

#[test]
fn review_correction_only_by_patch_and_records_the_reversal_owed() {
    let patch = Uuid::from_u128(5);
    let correct = |points| AC::CorrectReview {
        outcome: ReviewOutcome::Approved { points },
        reason: "typo".into(),
    };
    given::<Application>([submitted(), linked(), approved(50_000)])
        .when(correct(5_000))
        .then_reject(E::ONLY_BY_DATA_PATCH);
    given::<Application>([submitted(), linked(), approved(50_000)])
        .by("city", Role::RelyingParty(rp("city")))
        .in_patch(patch)
        .when(correct(5_000))
        .then_reject(E::ONLY_BY_DATA_PATCH);
    given::<Application>([submitted(), linked(), approved(50_000)])
        .in_patch(patch)
        .when(correct(5_000))
        .then_expect([AE::ReviewCorrected {
            previous: ReviewOutcome::Approved { points: 50_000 },
            outcome: ReviewOutcome::Approved { points: 5_000 },
            reversal_owed_points: 0,
            patch_id: patch,
            reason: "typo".into(),
        }]);
    let granted = AE::PointsGranted {
        points: 50_000,
        payment_service: rp("psp"),
    };
    let after = given::<Application>([submitted(), linked(), approved(50_000), granted.clone()])
        .in_patch(patch)
        .when(correct(5_000))
        .then_expect([AE::ReviewCorrected {
            previous: ReviewOutcome::Approved { points: 50_000 },
            outcome: ReviewOutcome::Approved { points: 5_000 },
            reversal_owed_points: 50_000,
            patch_id: patch,
            reason: "typo".into(),
        }]);
    // The reversal is owed, the grant is not erased, and the corrected amount can be granted.
    let a = after.unwrap_or_else(|| panic!("application"));
    assert_eq!((a.reversal_owed_points, a.granted_points), (50_000, None));
    given::<Application>([submitted(), linked(), approved(5)])
        .in_patch(patch)
        .when(correct(5))
        .then_reject(E::SAME_OUTCOME);
    given::<Application>([submitted()])
        .in_patch(patch)
        .when(correct(5))
        .then_reject(E::NOT_REVIEWED);
    given::<Application>([])
        .in_patch(patch)
        .when(correct(5))
        .then_reject(E::APPLICATION_NOT_FOUND);
    given::<Application>([submitted(), linked(), approved(5)])
        .in_patch(patch)
        .when(correct(0))
        .then_reject(E::POINTS_MUST_BE_POSITIVE);
}

// ---------------------------------------------------------------- patch

fn plan(stream: &str) -> Vec<PlannedAppend> {
    vec![PlannedAppend {
        stream: stream.into(),
        expected_version: 1,
        events: vec![PlannedEvent {
            event_id: Uuid::from_u128(1),
            event_type: <mykey_schemas::stored::ppid::PpidInvalidatedV1 as mykey_schemas::StoredEvent>::EVENT_TYPE.into(),
            schema_version: 1,
            payload: "{}".into(),
        }],
    }]
}

fn requested() -> XE {
    XE::Requested {
        patch_id: Uuid::from_u128(1),
        ticket_id: "INC-1".into(),
        reason: "wrong PPID".into(),
        targets: vec!["ppid-x".into()],
        actions: vec![PatchAction::InvalidatePpid {
            ppid: Ppid::from_uuid(Uuid::from_u128(9)),
            reason: "r".into(),
        }],
        requested_by: "op-1".into(),
        expires_at: t0() + Duration::hours(72),
    }
}

fn dry_run() -> XE {
    XE::DryRunRecorded {
        plan: plan("ppid-x"),
        by: "op-1".into(),
    }
}

#[test]
fn patch_request_and_dry_run() {
    let XE::Requested { actions, .. } = requested() else {
        unreachable!()
    };
    let request = |targets: Vec<String>, actions| XC::Request {
        patch_id: Uuid::from_u128(1),
        ticket_id: "INC-1".into(),
        reason: "wrong PPID".into(),
        targets,
        actions,
        ttl: Duration::hours(72),
    };
    given::<Patch>([])
        .when(request(vec!["ppid-x".into()], actions.clone()))
        .then_expect([requested()]);
    given::<Patch>([])
        .by("c", Role::Citizen(subject(1)))
        .when(request(vec!["ppid-x".into()], actions.clone()))
        .then_reject(E::NOT_AUTHORISED);
    given::<Patch>([])
        .when(request(vec![], actions.clone()))
        .then_reject(E::PATCH_EMPTY);
    given::<Patch>([requested()])
        .when(request(vec!["ppid-x".into()], actions))
        .then_reject(E::PATCH_ALREADY_REQUESTED);
    given::<Patch>([requested()])
        .when(XC::RecordDryRun {
            plan: plan("ppid-x"),
        })
        .then_expect([dry_run()]);
    given::<Patch>([requested()])
        .when(XC::RecordDryRun {
            plan: plan("ppid-other"),
        })
        .then_reject(E::PATCH_TARGET_NOT_DECLARED);
    given::<Patch>([requested()])
        .when(XC::RecordDryRun { plan: vec![] })
        .then_reject(E::PATCH_EMPTY);
}

#[test]
fn patch_four_eyes_approval() {
    given::<Patch>([requested(), dry_run()])
        .by("op-2", Role::Operator)
        .when(XC::Approve)
        .then_expect([XE::Approved { by: "op-2".into() }]);
    given::<Patch>([requested(), dry_run()])
        .by("op-1", Role::Operator)
        .when(XC::Approve)
        .then_reject(E::PATCH_SELF_APPROVAL);
    given::<Patch>([requested()])
        .by("op-2", Role::Operator)
        .when(XC::Approve)
        .then_reject(E::PATCH_NOT_DRY_RUN);
    given::<Patch>([requested(), dry_run()])
        .by("city", Role::RelyingParty(rp("city")))
        .when(XC::Approve)
        .then_reject(E::NOT_AUTHORISED);
    given::<Patch>([requested(), dry_run()])
        .by("op-2", Role::Operator)
        .at(t0() + Duration::hours(72))
        .when(XC::Approve)
        .then_reject(E::PATCH_EXPIRED);
}

#[test]
fn patch_apply_needs_a_current_approval_and_time_left() {
    let approved = [requested(), dry_run(), XE::Approved { by: "op-2".into() }];
    given::<Patch>(approved.clone())
        .by("op-2", Role::Operator)
        .when(XC::Apply)
        .then_expect([XE::Applied { by: "op-2".into() }]);
    given::<Patch>([requested(), dry_run()])
        .when(XC::Apply)
        .then_reject(E::PATCH_NOT_APPROVED);
    // A new dry-run voids the approval.
    let mut redone = approved.to_vec();
    redone.push(dry_run());
    given::<Patch>(redone)
        .when(XC::Apply)
        .then_reject(E::PATCH_NOT_APPROVED);
    given::<Patch>(approved.clone())
        .at(t0() + Duration::hours(72))
        .when(XC::Apply)
        .then_reject(E::PATCH_EXPIRED);
    let mut applied = approved.to_vec();
    applied.push(XE::Applied { by: "op-2".into() });
    given::<Patch>(applied)
        .when(XC::Apply)
        .then_reject(E::PATCH_CLOSED);
}

#[test]
fn patch_reject_and_expire() {
    given::<Patch>([requested()])
        .by("op-2", Role::Operator)
        .when(XC::Reject {
            reason: "wrong target".into(),
        })
        .then_expect([XE::Rejected {
            by: "op-2".into(),
            reason: "wrong target".into(),
        }]);
    given::<Patch>([
        requested(),
        XE::Rejected {
            by: "x".into(),
            reason: "r".into(),
        },
    ])
    .by("op-2", Role::Operator)
    .when(XC::Approve)
    .then_reject(E::PATCH_CLOSED);
    given::<Patch>([requested()])
        .by("expiry", Role::System)
        .when(XC::Expire)
        .then_reject(E::PATCH_NOT_EXPIRED);
    given::<Patch>([requested()])
        .by("expiry", Role::System)
        .at(t0() + Duration::hours(72))
        .when(XC::Expire)
        .then_expect([XE::Expired]);
    given::<Patch>([])
        .when(XC::Expire)
        .then_reject(E::PATCH_NOT_FOUND);
    for role in [Role::RelyingParty(rp("city")), Role::Citizen(subject(1))] {
        given::<Patch>([requested()])
            .by("x", role)
            .at(t0() + Duration::hours(72))
            .when(XC::Expire)
            .then_reject(E::NOT_AUTHORISED);
    }
}

// ---------------------------------------------------------------- maintenance

fn details(start_h: i64, end_h: i64) -> NoticeDetails {
    NoticeDetails {
        start: t0() + Duration::hours(start_h),
        end: t0() + Duration::hours(end_h),
        affected_services: vec!["login".into()],
        message_ja: "メンテナンスを行います".into(),
        message_en: "Planned maintenance".into(),
    }
}

fn notice() -> NoticeId {
    NoticeId::parse("n1").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn maintenance_schedule_update_cancel() {
    let scheduled = ME::Scheduled {
        id: notice(),
        details: details(1, 3),
    };
    given::<Maintenance>([])
        .when(MC::Schedule {
            id: notice(),
            details: details(1, 3),
        })
        .then_expect([scheduled.clone()]);
    given::<Maintenance>([])
        .when(MC::Schedule {
            id: notice(),
            details: details(3, 1),
        })
        .then_reject(E::MAINTENANCE_END_BEFORE_START);
    given::<Maintenance>([])
        .when(MC::Schedule {
            id: notice(),
            details: details(-1, 3),
        })
        .then_reject(E::MAINTENANCE_IN_PAST);
    let mut no_en = details(1, 3);
    no_en.message_en = String::new();
    given::<Maintenance>([])
        .when(MC::Schedule {
            id: notice(),
            details: no_en,
        })
        .then_reject(E::INVALID_INPUT);
    given::<Maintenance>([])
        .by("city", Role::RelyingParty(rp("city")))
        .when(MC::Schedule {
            id: notice(),
            details: details(1, 3),
        })
        .then_reject(E::NOT_AUTHORISED);
    given::<Maintenance>([scheduled.clone()])
        .when(MC::Schedule {
            id: notice(),
            details: details(1, 3),
        })
        .then_reject(E::NOTICE_ALREADY_SCHEDULED);
    given::<Maintenance>([scheduled.clone()])
        .when(MC::Update {
            details: details(2, 4),
        })
        .then_expect([ME::Updated {
            details: details(2, 4),
        }]);
    given::<Maintenance>([scheduled.clone()])
        .when(MC::Update {
            details: details(4, 2),
        })
        .then_reject(E::MAINTENANCE_END_BEFORE_START);
    given::<Maintenance>([])
        .when(MC::Update {
            details: details(2, 4),
        })
        .then_reject(E::NOTICE_NOT_FOUND);
    given::<Maintenance>([scheduled.clone()])
        .when(MC::Cancel { reason: "r".into() })
        .then_expect([ME::Cancelled { reason: "r".into() }]);
    let cancelled = [scheduled, ME::Cancelled { reason: "r".into() }];
    given::<Maintenance>(cancelled.clone())
        .when(MC::Cancel { reason: "r".into() })
        .then_reject(E::NOTICE_CANCELLED);
    given::<Maintenance>(cancelled)
        .when(MC::Update {
            details: details(2, 4),
        })
        .then_reject(E::NOTICE_CANCELLED);
}

// ---------------------------------------------------------------- test cards

fn card() -> TestCardId {
    TestCardId::parse("card-001").unwrap_or_else(|e| panic!("{e}"))
}

fn vendor() -> Borrower {
    Borrower {
        kind: BorrowerKind::Vendor,
        name: "Vendor K.K.".into(),
    }
}

#[test]
fn test_card_register_lend_return_check_lose() {
    let reg = TE::Registered {
        id: card(),
        label: "JPKI test card 1".into(),
    };
    given::<TestCard>([])
        .when(TC::Register {
            id: card(),
            label: "JPKI test card 1".into(),
        })
        .then_expect([reg.clone()]);
    given::<TestCard>([reg.clone()])
        .when(TC::Register {
            id: card(),
            label: "again".into(),
        })
        .then_reject(E::CARD_ALREADY_REGISTERED);
    given::<TestCard>([reg.clone()])
        .when(TC::Lend { borrower: vendor() })
        .then_expect([TE::Lent { borrower: vendor() }]);
    let lent = [reg.clone(), TE::Lent { borrower: vendor() }];
    given::<TestCard>(lent.clone())
        .when(TC::Lend { borrower: vendor() })
        .then_reject(E::CARD_ALREADY_LENT);
    given::<TestCard>([reg.clone()])
        .when(TC::Return)
        .then_reject(E::CARD_NOT_LENT);
    given::<TestCard>(lent.clone())
        .when(TC::Return)
        .then_expect([TE::Returned]);
    given::<TestCard>([reg.clone()])
        .when(TC::CheckInventory)
        .then_expect([TE::InventoryChecked { checked_at: t0() }]);
    given::<TestCard>(lent)
        .when(TC::ReportLost { note: "n".into() })
        .then_expect([TE::ReportedLost { note: "n".into() }]);
    let lost = [reg, TE::ReportedLost { note: "n".into() }];
    for cmd in [
        TC::Lend { borrower: vendor() },
        TC::Return,
        TC::CheckInventory,
        TC::ReportLost { note: "n".into() },
    ] {
        given::<TestCard>(lost.clone())
            .when(cmd)
            .then_reject(E::CARD_LOST);
    }
    given::<TestCard>([])
        .when(TC::Return)
        .then_reject(E::CARD_NOT_FOUND);
    given::<TestCard>([])
        .by("v", Role::System)
        .when(TC::CheckInventory)
        .then_reject(E::NOT_AUTHORISED);
}

#[test]
fn error_codes_are_unique_and_screaming_snake_case() {
    let mut seen = std::collections::HashSet::new();
    for c in E::ALL {
        assert!(seen.insert(c.as_str()), "{c} twice");
        assert!(c
            .as_str()
            .chars()
            .all(|ch| ch.is_ascii_uppercase() || ch == '_'));
    }
}

// ---------------------------------------------------------------- subject

use mykey_domain::subject::{ReleaseReason, Subject, SubjectCommand as SC, SubjectEvent as SE};

fn subject_created() -> SE {
    SE::Created {
        subject: subject(1),
        certificate: cert("1"),
    }
}

#[test]
fn subject_created_only_once() {
    given::<Subject>([subject_created()])
        .by("login", Role::System)
        .when(SC::Create {
            subject: subject(1),
            certificate: cert("2"),
        })
        .then_reject(E::INVALID_INPUT);
}

#[test]
fn one_active_ppid_per_subject_and_relying_party() {
    let p1 = Ppid::from_uuid(Uuid::from_u128(1));
    let p2 = Ppid::from_uuid(Uuid::from_u128(2));
    let assigned = SE::PpidAssigned {
        relying_party: rp("city"),
        ppid: p1.clone(),
    };
    given::<Subject>([subject_created()])
        .by("login", Role::System)
        .when(SC::AssignPpid {
            relying_party: rp("city"),
            ppid: p1.clone(),
        })
        .then_expect([assigned.clone()]);
    given::<Subject>([subject_created(), assigned.clone()])
        .by("login", Role::System)
        .when(SC::AssignPpid {
            relying_party: rp("city"),
            ppid: p2.clone(),
        })
        .then_reject(E::PPID_ALREADY_ISSUED);
    given::<Subject>([subject_created(), assigned.clone()])
        .by("login", Role::System)
        .when(SC::ReleasePpid {
            relying_party: rp("city"),
            ppid: p2.clone(),
            reason: ReleaseReason::Revoked,
        })
        .then_reject(E::PPID_NOT_FOUND);
    let released = SE::PpidReleased {
        relying_party: rp("city"),
        ppid: p1.clone(),
        reason: ReleaseReason::Revoked,
    };
    // After a release a new PPID may be assigned for the same RP.
    given::<Subject>([subject_created(), assigned, released])
        .by("login", Role::System)
        .when(SC::AssignPpid {
            relying_party: rp("city"),
            ppid: p2.clone(),
        })
        .then_expect([SE::PpidAssigned {
            relying_party: rp("city"),
            ppid: p2,
        }]);
    given::<Subject>([])
        .by("login", Role::System)
        .when(SC::AssignPpid {
            relying_party: rp("city"),
            ppid: p1,
        })
        .then_reject(E::SUBJECT_NOT_FOUND);
}

#[test]
fn patch_dry_runner_cannot_approve_either_and_oversized_patches_are_refused() {
    let by_op3 = XE::DryRunRecorded {
        plan: plan("ppid-x"),
        by: "op-3".into(),
    };
    given::<Patch>([requested(), by_op3])
        .by("op-3", Role::Operator)
        .when(XC::Approve)
        .then_reject(E::PATCH_SELF_APPROVAL);
    let XE::Requested { actions, .. } = requested() else {
        unreachable!()
    };
    given::<Patch>([])
        .when(XC::Request {
            patch_id: Uuid::from_u128(1),
            ticket_id: "INC-1".into(),
            reason: "r".into(),
            targets: (0..=mykey_domain::patch::MAX_PATCH_TARGETS)
                .map(|i| format!("ppid-{i}"))
                .collect(),
            actions: actions.clone(),
            ttl: Duration::hours(1),
        })
        .then_reject(E::INVALID_INPUT);
    given::<Patch>([])
        .when(XC::Request {
            patch_id: Uuid::from_u128(1),
            ticket_id: "INC-1".into(),
            reason: "r".into(),
            targets: vec!["ppid-x".into()],
            actions: actions
                .iter()
                .cycle()
                .take(mykey_domain::patch::MAX_PATCH_TARGETS + 1)
                .cloned()
                .collect(),
            ttl: Duration::hours(1),
        })
        .then_reject(E::INVALID_INPUT);
    given::<Patch>([])
        .when(XC::Request {
            patch_id: Uuid::from_u128(1),
            ticket_id: "INC-1".into(),
            reason: "r".into(),
            targets: vec!["ppid-x".into()],
            actions: vec![],
            ttl: Duration::hours(1),
        })
        .then_reject(E::PATCH_EMPTY);
    given::<Patch>([requested()])
        .at(t0() + Duration::hours(73))
        .when(XC::RecordDryRun {
            plan: plan("ppid-x"),
        })
        .then_reject(E::PATCH_EXPIRED);
}

#[test]
fn the_provider_records_a_reversal_paid_up_to_the_points_owed() {
    let corrected = |owed| AE::ReviewCorrected {
        previous: ReviewOutcome::Approved { points: 50_000 },
        outcome: ReviewOutcome::Approved { points: 5_000 },
        reversal_owed_points: owed,
        patch_id: Uuid::from_u128(5),
        reason: "typo".into(),
    };
    let granted = AE::PointsGranted {
        points: 50_000,
        payment_service: rp("psp"),
    };
    let owing = || {
        vec![
            submitted(),
            linked(),
            approved(50_000),
            granted.clone(),
            corrected(50_000),
        ]
    };
    let paid = |points| AC::RecordReversalPaid { points };
    let after = given::<Application>(owing())
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(paid(20_000))
        .then_expect([AE::ReversalPaid {
            points: 20_000,
            payment_service: rp("psp"),
        }]);
    let a = after.unwrap_or_else(|| panic!("application"));
    assert_eq!(a.reversal_owed_points, 30_000);
    // Paid in full, nothing more is owed.
    let mut settled = owing();
    settled.push(AE::ReversalPaid {
        points: 50_000,
        payment_service: rp("psp"),
    });
    given::<Application>(settled)
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(paid(1))
        .then_reject(E::NO_REVERSAL_OWED);
    given::<Application>(owing())
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(paid(50_001))
        .then_reject(E::REVERSAL_EXCEEDS_OWED);
    given::<Application>(owing())
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(paid(0))
        .then_reject(E::POINTS_MUST_BE_POSITIVE);
    given::<Application>([submitted(), linked(), approved(5)])
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(paid(5))
        .then_reject(E::NO_REVERSAL_OWED);
    // Only the application's own payment service (or the platform) records it.
    given::<Application>(owing())
        .by("other", Role::RelyingParty(rp("other-psp")))
        .when(paid(1))
        .then_reject(E::NOT_AUTHORISED);
    given::<Application>(owing())
        .by("city", Role::RelyingParty(rp("city")))
        .when(paid(1))
        .then_reject(E::NOT_AUTHORISED);
    given::<Application>(owing())
        .by("c", CITIZEN())
        .when(paid(1))
        .then_reject(E::NOT_AUTHORISED);
    given::<Application>([])
        .by("psp", Role::RelyingParty(rp("psp")))
        .when(paid(1))
        .then_reject(E::APPLICATION_NOT_FOUND);
}

#[test]
fn the_provider_reports_a_failed_grant_and_the_application_awaits_a_grant_again() {
    let psp = || Role::RelyingParty(rp("psp"));
    let failed = || AE::GrantFailed {
        reason: "account closed".into(),
        payment_service: rp("psp"),
    };
    let report = || AC::ReportGrantFailed {
        reason: "account closed".into(),
    };
    let awaiting = || vec![submitted(), linked(), approved(5_000)];
    let a = given::<Application>(awaiting())
        .by("psp", psp())
        .when(report())
        .then_expect([failed()]);
    let a = a.unwrap_or_else(|| panic!("application"));
    assert_eq!(a.grant_failures, 1);
    assert_eq!(a.granted_points, None, "a failure grants nothing");
    // The provider may try again: the grant is still open after a failure.
    let mut after_failure = awaiting();
    after_failure.push(failed());
    given::<Application>(after_failure.clone())
        .by("psp", psp())
        .when(AC::GrantPoints)
        .then_expect([AE::PointsGranted {
            points: 5_000,
            payment_service: rp("psp"),
        }]);
    // ... and report another failure (the platform's payment batch too).
    given::<Application>(after_failure)
        .by("batch", Role::System)
        .when(report())
        .then_expect([failed()]);
    // At most MAX_GRANT_FAILURES per link; a new link starts the count afresh.
    let max = mykey_domain::application::MAX_GRANT_FAILURES;
    let mut exhausted = awaiting();
    exhausted.extend((0..max).map(|_| failed()));
    given::<Application>(exhausted.clone())
        .by("psp", psp())
        .when(report())
        .then_reject(E::GRANT_FAILURES_EXHAUSTED);
    exhausted.push(AE::PaymentServiceUnlinked {
        reason: "wrong account".into(),
        patch_id: None,
    });
    exhausted.push(linked());
    let relinked = given::<Application>(exhausted)
        .by("psp", psp())
        .when(report())
        .then_expect([failed()]);
    assert_eq!(relinked.map(|a| a.grant_failures), Some(1));
    // Only where a grant could be made now.
    given::<Application>([submitted(), linked()])
        .by("psp", psp())
        .when(report())
        .then_reject(E::NOT_REVIEWED);
    given::<Application>([
        submitted(),
        linked(),
        AE::ReviewRecorded {
            outcome: ReviewOutcome::Rejected {
                reason: "not resident".into(),
            },
        },
    ])
    .by("psp", psp())
    .when(report())
    .then_reject(E::APPLICATION_REJECTED);
    let mut granted = awaiting();
    granted.push(AE::PointsGranted {
        points: 5_000,
        payment_service: rp("psp"),
    });
    given::<Application>(granted)
        .by("psp", psp())
        .when(report())
        .then_reject(E::POINTS_ALREADY_GRANTED);
    given::<Application>([submitted(), approved(5_000)])
        .by("psp", psp())
        .when(report())
        .then_reject(E::PAYMENT_SERVICE_NOT_LINKED);
    for reason in [
        "",
        "   ",
        "a\0b",
        &"x".repeat(mykey_domain::MAX_TEXT_LEN + 1),
    ] {
        given::<Application>(awaiting())
            .by("psp", psp())
            .when(AC::ReportGrantFailed {
                reason: reason.to_owned(),
            })
            .then_reject(E::INVALID_INPUT);
    }
    // Only the application's own payment service (or the platform) reports it.
    for (id, role) in [
        ("other", Role::RelyingParty(rp("other-psp"))),
        ("city", Role::RelyingParty(rp("city"))),
        ("c", CITIZEN()),
        ("op", Role::Operator),
    ] {
        given::<Application>(awaiting())
            .by(id, role)
            .when(report())
            .then_reject(E::NOT_AUTHORISED);
    }
    given::<Application>([])
        .by("psp", psp())
        .when(report())
        .then_reject(E::APPLICATION_NOT_FOUND);
}
