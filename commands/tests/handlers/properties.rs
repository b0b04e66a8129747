//! Property test: random command sequences through the handlers. For every command the state
//! the handler decided on equals the state rebuilt by `evolve` from what the store holds, and
//! every stored event round-trips through its stored form byte for byte and validates against
//! its JSON Schema file (checked with `mykey_schemas::json_check`, a draft-07 subset checker
//! that refuses unknown keywords; no external validator crate).

use crate::support::*;
use chrono::Duration;
use mykey_commands::testing::{sample_jwk, t0};
use mykey_commands::{
    CertificateRef, CommandError, CommandMeta, Commands, CreateProgram, Executed, RequestPatch,
    RpKind,
};
use mykey_domain::application::{Application, ReviewOutcome};
use mykey_domain::certificate::Certificate;
use mykey_domain::maintenance::Maintenance;
use mykey_domain::patch::{Patch, PatchAction};
use mykey_domain::ppid::PpidAggregate;
use mykey_domain::program::Program;
use mykey_domain::relying_party::RelyingParty;
use mykey_domain::subject::Subject;
use mykey_domain::test_card::{Borrower, BorrowerKind, TestCard};
use mykey_domain::{
    Aggregate, ApplicationId, ProgramId, RelyingPartyId, Role, SubjectId, TestCardId,
};
use mykey_schemas::{EventCodec, EventEnvelope, SchemaError, StreamId};
use mykey_store::read_full_stream;
use proptest::prelude::*;
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Login { cert: u8, rp: u8 },
    RevokePpid { cert: u8, rp: u8, by_rp: bool },
    InvalidateByPatch { cert: u8, rp: u8 },
    Renew { old: u8, new: u8 },
    RevokeCert { cert: u8 },
    SuspendRp { rp: u8 },
    ResumeRp { rp: u8 },
    RotateKey { rp: u8 },
    PauseProgram,
    ResumeProgram,
    Submit { who: u8 },
    Link { who: u8 },
    Review { who: u8, points: u64, reject: bool },
    Grant { who: u8 },
    GrantFailed { who: u8 },
    Unlink { who: u8 },
    Card { card: u8, action: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u8, 0..2u8).prop_map(|(cert, rp)| Op::Login { cert, rp }),
        (0..4u8, 0..2u8, any::<bool>()).prop_map(|(cert, rp, by_rp)| Op::RevokePpid {
            cert,
            rp,
            by_rp
        }),
        (0..4u8, 0..2u8).prop_map(|(cert, rp)| Op::InvalidateByPatch { cert, rp }),
        (0..4u8, 0..6u8).prop_map(|(old, new)| Op::Renew { old, new }),
        (0..6u8).prop_map(|cert| Op::RevokeCert { cert }),
        (0..3u8).prop_map(|rp| Op::SuspendRp { rp }),
        (0..3u8).prop_map(|rp| Op::ResumeRp { rp }),
        (0..3u8).prop_map(|rp| Op::RotateKey { rp }),
        Just(Op::PauseProgram),
        Just(Op::ResumeProgram),
        (0..3u8).prop_map(|who| Op::Submit { who }),
        (0..3u8).prop_map(|who| Op::Link { who }),
        (0..3u8, 0..10_000u64, any::<bool>()).prop_map(|(who, points, reject)| Op::Review {
            who,
            points,
            reject
        }),
        (0..3u8).prop_map(|who| Op::Grant { who }),
        (0..3u8).prop_map(|who| Op::GrantFailed { who }),
        (0..3u8).prop_map(|who| Op::Unlink { who }),
        (0..2u8, 0..5u8).prop_map(|(card, action)| Op::Card { card, action }),
    ]
}

type Cmds = Commands<TestStore>;

fn id<T>(r: Result<T, mykey_domain::DomainError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Domain refusals are expected in random sequences; anything else is a bug.
fn tolerate<T>(r: Result<T, CommandError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(CommandError::Domain(_)) => None,
        Err(e) => panic!("infrastructure error in a property run: {e}"),
    }
}

/// The handler's returned state must equal the stream folded from the store.
async fn check_state<A>(cmds: &Cmds, stream: &StreamId, r: Result<Executed<A::State>, CommandError>)
where
    A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
{
    if let Some(executed) = tolerate(r) {
        let rebuilt = fold::<A>(cmds, stream).await;
        assert_eq!(
            executed.state, rebuilt,
            "decided state differs from the rebuilt one on {stream}"
        );
    }
}

async fn fold<A>(cmds: &Cmds, stream: &StreamId) -> A::State
where
    A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
{
    let envs = read_full_stream(cmds.store(), stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    envs.iter().fold(A::State::default(), |s, e| {
        let ev = A::decode(&e.event_type, e.schema_version, &e.payload)
            .unwrap_or_else(|e| panic!("{e}"));
        A::evolve(s, &ev)
    })
}

fn roundtrip<A: EventCodec>(e: &EventEnvelope) -> Result<(), SchemaError> {
    let domain = A::decode(&e.event_type, e.schema_version, &e.payload)?;
    let again = A::encode(&domain)?;
    assert_eq!(
        (
            again.event_type,
            again.schema_version,
            again.payload.as_str()
        ),
        (e.event_type.as_str(), e.schema_version, e.payload.as_str()),
        "stored form does not round-trip"
    );
    Ok(())
}

fn schemas() -> HashMap<String, serde_json::Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/json");
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.insert(
            name,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    out
}

fn check_every_event(events: &[EventEnvelope], schemas: &HashMap<String, serde_json::Value>) {
    for e in events {
        let r = match e.stream_id.category() {
            "relying_party" => roundtrip::<RelyingParty>(e),
            "certificate" => roundtrip::<Certificate>(e),
            "subject" => roundtrip::<Subject>(e),
            "ppid" => roundtrip::<PpidAggregate>(e),
            "program" => roundtrip::<Program>(e),
            "application" => roundtrip::<Application>(e),
            "patch" => roundtrip::<Patch>(e),
            "maintenance" => roundtrip::<Maintenance>(e),
            "test_card" => roundtrip::<TestCard>(e),
            other => panic!("unknown category {other}"),
        };
        r.unwrap_or_else(|err| panic!("{}: {err}", e.event_type));
        let file = format!("{}.v{}.json", e.event_type, e.schema_version);
        let schema = schemas
            .get(&file)
            .unwrap_or_else(|| panic!("no schema file {file}"));
        let value: serde_json::Value =
            serde_json::from_str(&e.payload).unwrap_or_else(|err| panic!("{err}"));
        if let Err(why) = mykey_schemas::json_check::validate(schema, &value) {
            panic!("{} does not validate against {file}: {why}", e.payload);
        }
    }
}

struct Fixture {
    rps: Vec<RelyingPartyId>,
    psp: RelyingPartyId,
    city: RelyingPartyId,
    program: ProgramId,
}

async fn fixture(cmds: &Cmds) -> Fixture {
    let city = chiyoda(cmds).await;
    let lib = register_rp(cmds, "library-1", "lib1", RpKind::LibrarySystem).await;
    let psp = register_rp(cmds, "psp-1", "psp1", RpKind::PaymentServiceProvider).await;
    let program = ProgramId::parse("p1").unwrap_or_else(|e| panic!("{e}"));
    let created = cmds
        .create_program(
            &operator("op-1"),
            CreateProgram {
                id: program.clone(),
                municipality: city.clone(),
                name: "p".into(),
                period_start: t0(),
                period_end: t0() + Duration::days(30),
            },
        )
        .await;
    created.unwrap_or_else(|e| panic!("{e}"));
    Fixture {
        rps: vec![city.clone(), lib, psp.clone()],
        psp,
        city,
        program,
    }
}

fn cert(n: u8) -> CertificateRef {
    id(CertificateRef::new(
        "ca-2023",
        &format!("{:x}", 0x100 + u32::from(n)),
    ))
}

fn who(n: u8) -> SubjectId {
    SubjectId(Uuid::from_u128(0x5000 + u128::from(n)))
}

async fn run(cmds: &Cmds, f: &Fixture, op: Op) {
    let app_stream = |w: u8| {
        id(
            StreamId::new("application", ApplicationId::of(&f.program, &who(w))).map_err(|_| {
                mykey_domain::DomainError::new(mykey_domain::ErrorCode::INVALID_INPUT, "stream")
            }),
        )
    };
    let batch = || CommandMeta::new("batch", Role::System, cid());
    match op {
        Op::Login { cert: c, rp } => {
            let rp = &f.rps[usize::from(rp)];
            if let Some(l) = tolerate(cmds.register_login(&system(), &cert(c), rp).await) {
                let active = cmds
                    .active_ppid(l.subject, rp)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    active,
                    Some(l.ppid),
                    "login returned a PPID that is not the active one"
                );
            }
        }
        Op::RevokePpid { cert: c, rp, by_rp } => {
            let rp = &f.rps[usize::from(rp)];
            let Some(Some(s)) = tolerate(cmds.resolve_certificate(&cert(c)).await) else {
                return;
            };
            let Some(Some(p)) = tolerate(cmds.active_ppid(s, rp).await) else {
                return;
            };
            let meta = if by_rp { as_rp(rp) } else { as_citizen(s) };
            tolerate(cmds.revoke_ppid(&meta, &p).await);
        }
        Op::InvalidateByPatch { cert: c, rp } => {
            let rp = &f.rps[usize::from(rp)];
            let Some(Some(s)) = tolerate(cmds.resolve_certificate(&cert(c)).await) else {
                return;
            };
            let Some(Some(p)) = tolerate(cmds.active_ppid(s, rp).await) else {
                return;
            };
            let patch = cid();
            let targets = vec![
                id(StreamId::new("ppid", &p).map_err(|_| {
                    mykey_domain::DomainError::new(mykey_domain::ErrorCode::INVALID_INPUT, "s")
                })),
                id(StreamId::new("subject", s).map_err(|_| {
                    mykey_domain::DomainError::new(mykey_domain::ErrorCode::INVALID_INPUT, "s")
                })),
            ];
            let pstream = id(StreamId::new("patch", patch).map_err(|_| {
                mykey_domain::DomainError::new(mykey_domain::ErrorCode::INVALID_INPUT, "s")
            }));
            let req = RequestPatch {
                patch_id: patch,
                ticket_id: "T".into(),
                reason: "r".into(),
                targets,
                actions: vec![PatchAction::InvalidatePpid {
                    ppid: p,
                    reason: "r".into(),
                }],
            };
            check_state::<Patch>(
                cmds,
                &pstream,
                cmds.request_patch(&operator("op-1"), req).await,
            )
            .await;
            check_state::<Patch>(
                cmds,
                &pstream,
                cmds.dry_run_patch(&operator("op-1"), patch).await,
            )
            .await;
            check_state::<Patch>(
                cmds,
                &pstream,
                cmds.approve_patch(&operator("op-2"), patch).await,
            )
            .await;
            check_state::<Patch>(
                cmds,
                &pstream,
                cmds.apply_patch(&operator("op-2"), patch).await,
            )
            .await;
        }
        Op::Renew { old, new } => {
            tolerate(cmds.link_renewal(&system(), &cert(old), &cert(new)).await);
        }
        Op::RevokeCert { cert: c } => {
            tolerate(
                cmds.mark_certificate_revoked(&system(), &cert(c), "keyCompromise")
                    .await,
            );
        }
        Op::SuspendRp { rp } => {
            tolerate(
                cmds.suspend_relying_party(&operator("op-1"), &f.rps[usize::from(rp)], "r")
                    .await,
            );
        }
        Op::ResumeRp { rp } => {
            tolerate(
                cmds.resume_relying_party(&operator("op-1"), &f.rps[usize::from(rp)])
                    .await,
            );
        }
        Op::RotateKey { rp } => {
            let rp = &f.rps[usize::from(rp)];
            tolerate(
                cmds.rotate_relying_party_key(&as_rp(rp), rp, sample_jwk(&cid().to_string()))
                    .await,
            );
        }
        Op::PauseProgram => {
            let s = id(StreamId::new("program", &f.program).map_err(|_| {
                mykey_domain::DomainError::new(mykey_domain::ErrorCode::INVALID_INPUT, "s")
            }));
            check_state::<Program>(
                cmds,
                &s,
                cmds.pause_program(&operator("op-1"), &f.program, "r").await,
            )
            .await;
        }
        Op::ResumeProgram => {
            let s = id(StreamId::new("program", &f.program).map_err(|_| {
                mykey_domain::DomainError::new(mykey_domain::ErrorCode::INVALID_INPUT, "s")
            }));
            check_state::<Program>(
                cmds,
                &s,
                cmds.resume_program(&operator("op-1"), &f.program).await,
            )
            .await;
        }
        Op::Submit { who: w } => {
            let r = cmds
                .submit_application(&as_citizen(who(w)), who(w), &f.program, &f.psp)
                .await;
            check_state::<Application>(cmds, &app_stream(w), r).await;
        }
        Op::Link { who: w } => {
            let r = cmds
                .link_payment_service(&as_rp(&f.psp), &f.program, who(w), "acct")
                .await;
            check_state::<Application>(cmds, &app_stream(w), r).await;
        }
        Op::Review {
            who: w,
            points,
            reject,
        } => {
            let outcome = if reject {
                ReviewOutcome::Rejected {
                    reason: "no".into(),
                }
            } else {
                ReviewOutcome::Approved { points }
            };
            let r = cmds
                .record_review(&as_rp(&f.city), &f.program, who(w), outcome)
                .await;
            check_state::<Application>(cmds, &app_stream(w), r).await;
        }
        Op::Grant { who: w } => {
            let r = cmds.grant_points(&batch(), &f.program, who(w)).await;
            check_state::<Application>(cmds, &app_stream(w), r).await;
        }
        Op::GrantFailed { who: w } => {
            let r = cmds
                .report_grant_failed(&batch(), &f.program, who(w), "account closed")
                .await;
            check_state::<Application>(cmds, &app_stream(w), r).await;
        }
        Op::Unlink { who: w } => {
            let r = cmds
                .unlink_payment_service(&as_citizen(who(w)), &f.program, who(w), "r")
                .await;
            check_state::<Application>(cmds, &app_stream(w), r).await;
        }
        Op::Card { card, action } => {
            let c = id(TestCardId::parse(&format!("card-{card}")));
            let s = id(StreamId::new("test_card", &c).map_err(|_| {
                mykey_domain::DomainError::new(mykey_domain::ErrorCode::INVALID_INPUT, "s")
            }));
            let m = operator("op-1");
            let r = match action {
                0 => cmds.register_test_card(&m, &c, "label").await,
                1 => {
                    cmds.lend_test_card(
                        &m,
                        &c,
                        Borrower {
                            kind: BorrowerKind::Vendor,
                            name: "v".into(),
                        },
                    )
                    .await
                }
                2 => cmds.return_test_card(&m, &c).await,
                3 => cmds.check_test_card_inventory(&m, &c).await,
                _ => cmds.report_test_card_lost(&m, &c, "n").await,
            };
            check_state::<TestCard>(cmds, &s, r).await;
        }
    }
}

proptest! {
    // Default case count (256, or PROPTEST_CASES): about a second on the in-memory log.

    #[test]
    fn decided_state_equals_rebuilt_state_and_events_roundtrip_and_validate(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let (cmds, clock) = setup();
            let f = fixture(&cmds).await;
            for o in ops {
                clock.advance(Duration::minutes(7));
                run(&cmds, &f, o).await;
            }
            // Also a notice, so its events are checked too.
            let n = id(mykey_domain::NoticeId::parse("n1"));
            let details = mykey_domain::maintenance::NoticeDetails {
                start: clock.now() + Duration::days(1),
                end: clock.now() + Duration::days(2),
                affected_services: vec!["login".into()],
                message_ja: "停止".into(),
                message_en: "outage".into(),
            };
            let s = id(StreamId::new("maintenance", &n).map_err(|_| mykey_domain::DomainError::new(mykey_domain::ErrorCode::INVALID_INPUT, "s")));
            check_state::<Maintenance>(&cmds, &s, cmds.schedule_maintenance(&operator("op-1"), &n, details).await).await;
            check_state::<Maintenance>(&cmds, &s, cmds.cancel_maintenance(&operator("op-1"), &n, "r").await).await;
            check_every_event(&cmds.store().all_events(), &schemas());
        });
    }
}
