//! A generated workload that produces **every event type** of the write model through the real
//! command handlers, deterministically (sequential ids, a clock the script moves).
//!
//! Reused by the read-model fixture tests, the runner's live-vs-rebuild test and the rebuild
//! benchmark: [`Workload::round`] can be run any number of times on one log (each round uses
//! its own relying parties, programs, cards, ... so rounds never collide), and each round
//! spans several Asia/Tokyo days so day boundaries are exercised.

use chrono::Duration;
use mykey_commands::testing::{sample_jwk, t0, SequentialIds, TestClock};
use mykey_commands::{
    CertificateRef, CommandError, CommandMeta, Commands, CreateProgram, RegisterRelyingParty,
    RequestPatch, RpKind,
};
use mykey_domain::application::ReviewOutcome;
use mykey_domain::maintenance::NoticeDetails;
use mykey_domain::patch::PatchAction;
use mykey_domain::test_card::{Borrower, BorrowerKind};
use mykey_domain::{NoticeId, ProgramId, RelyingPartyId, Role, SubjectId, TestCardId};
use mykey_schemas::StreamId;
use mykey_store::memory::InMemoryStore;
use mykey_store::EventStore;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// Events one [`Workload::round`] appends (checked by the fixture test).
pub const EVENTS_PER_ROUND: usize = 77;

/// The command handlers and the clock a workload drives.
#[derive(Debug)]
pub struct Workload<S> {
    pub cmds: Commands<S>,
    pub clock: TestClock,
    commands: AtomicU64,
}

/// A workload over a fresh in-memory log whose `recorded_at` follows the workload's clock.
pub fn in_memory() -> Workload<InMemoryStore> {
    let clock = TestClock::at(t0());
    let c = clock.clone();
    Workload::new(InMemoryStore::with_clock(move || c.now()), clock)
}

#[track_caller]
fn ok<T>(what: &str, r: Result<T, CommandError>) -> T {
    r.unwrap_or_else(|e| panic!("workload step {what}: {e}"))
}

fn parse<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("workload id {what}: {e}"))
}

impl<S: EventStore> Workload<S> {
    /// Handlers over `store` whose clock is `clock` (event ids from 1, sequential). A
    /// PostgreSQL log stamps `recorded_at` itself; an in-memory one should read `clock`.
    pub fn new(store: S, clock: TestClock) -> Workload<S> {
        let ids = SequentialIds::starting_at(1);
        let c = clock.clone();
        Workload {
            cmds: Commands::with_env(store, move || c.now(), move || ids.next()),
            clock,
            commands: AtomicU64::new(1),
        }
    }

    fn meta(&self, actor: &str, role: Role) -> CommandMeta {
        // Command ids live in their own range: the log refuses a reused event id, and the
        // handlers draw event ids from 1 upwards.
        let n = self.commands.fetch_add(1, Ordering::Relaxed);
        CommandMeta::new(
            actor,
            role,
            Uuid::from_u128((0xc0de_u128 << 64) | u128::from(n)),
        )
    }

    fn operator(&self, id: &str) -> CommandMeta {
        self.meta(id, Role::Operator)
    }

    fn system(&self) -> CommandMeta {
        self.meta("platform", Role::System)
    }

    fn rp(&self, rp: &RelyingPartyId) -> CommandMeta {
        self.meta(rp.as_str(), Role::RelyingParty(rp.clone()))
    }

    fn citizen(&self, s: SubjectId) -> CommandMeta {
        self.meta(&s.to_string(), Role::Citizen(s))
    }

    async fn register(&self, id: &str, code: &str, kind: RpKind) -> RelyingPartyId {
        let id = parse("rp", RelyingPartyId::parse(id));
        ok(
            "register rp",
            self.cmds
                .register_relying_party(
                    &self.operator("op-1"),
                    RegisterRelyingParty {
                        id: id.clone(),
                        code: code.into(),
                        name: format!("RP {id}"),
                        kind,
                        public_jwk: sample_jwk("key-1"),
                    },
                )
                .await,
        );
        id
    }

    /// One round: every event type at least once, over about five Asia/Tokyo days
    /// (the clock ends five days and some hours later than it started).
    pub async fn round(&self, r: u32) {
        let op = |id: &str| self.operator(id);
        // Relying parties: every kind; key rotation, suspension, resumption, retirement.
        let city = self
            .register(&format!("city-{r}"), "131016", RpKind::Municipality)
            .await;
        let psp = self
            .register(&format!("psp-{r}"), "psp1", RpKind::PaymentServiceProvider)
            .await;
        let lib = self
            .register(&format!("lib-{r}"), "lib1", RpKind::LibrarySystem)
            .await;
        let biz = self
            .register(&format!("biz-{r}"), "biz1", RpKind::PrivateBusiness)
            .await;
        ok(
            "rotate",
            self.cmds
                .rotate_relying_party_key(&op("op-1"), &city, sample_jwk("key-2"))
                .await,
        );
        ok(
            "suspend",
            self.cmds
                .suspend_relying_party(&op("op-1"), &biz, "audit")
                .await,
        );
        ok(
            "resume",
            self.cmds.resume_relying_party(&op("op-1"), &biz).await,
        );
        ok(
            "retire",
            self.cmds
                .retire_relying_party(&op("op-1"), &lib, "replaced")
                .await,
        );

        // Programs: created, extended, paused, resumed; a second one closed.
        let program = parse("program", ProgramId::parse(&format!("points-{r}")));
        let other = parse("program", ProgramId::parse(&format!("closed-{r}")));
        let now = self.clock.now();
        for p in [&program, &other] {
            ok(
                "create program",
                self.cmds
                    .create_program(
                        &op("op-1"),
                        CreateProgram {
                            id: p.clone(),
                            municipality: city.clone(),
                            name: format!("Points {p}"),
                            period_start: now,
                            period_end: now + Duration::days(90),
                        },
                    )
                    .await,
            );
        }
        ok(
            "extend",
            self.cmds
                .extend_program(&op("op-1"), &program, now + Duration::days(120))
                .await,
        );
        ok(
            "pause",
            self.cmds
                .pause_program(&op("op-1"), &program, "incident")
                .await,
        );
        ok(
            "resume",
            self.cmds.resume_program(&op("op-1"), &program).await,
        );
        ok("close", self.cmds.close_program(&op("op-1"), &other).await);

        // Logins: four citizens at the city, the first also at the provider.
        let cert = |i: u32| parse("cert", CertificateRef::new("ca", &format!("a{r:x}0{i:x}")));
        let mut logins = Vec::new();
        for i in 1..=4 {
            logins.push(ok(
                "login",
                self.cmds
                    .register_login(&self.system(), &cert(i), &city)
                    .await,
            ));
        }
        let at_psp = ok(
            "login psp",
            self.cmds
                .register_login(&self.system(), &cert(1), &psp)
                .await,
        );
        let s: Vec<SubjectId> = logins.iter().map(|l| l.subject).collect();

        // Certificates: a renewal and a revocation (of a certificate never logged in with, too).
        ok(
            "renewal",
            self.cmds
                .link_renewal(&op("op-1"), &cert(1), &cert(9))
                .await,
        );
        ok(
            "revoke cert",
            self.cmds
                .mark_certificate_revoked(&self.system(), &cert(4), "keyCompromise")
                .await,
        );
        ok(
            "revoke unseen",
            self.cmds
                .mark_certificate_revoked(&self.system(), &cert(10), "lost")
                .await,
        );

        // PPIDs revoked by the RP and by the citizen.
        ok(
            "rp revokes",
            self.cmds
                .revoke_ppid(&self.rp(&city), &logins[1].ppid)
                .await,
        );
        ok(
            "citizen revokes",
            self.cmds
                .revoke_ppid(&self.citizen(s[0]), &at_psp.ppid)
                .await,
        );

        // Applications: two approved and granted, one rejected and unlinked by its citizen.
        for (i, subject) in s.iter().take(3).enumerate() {
            ok(
                "submit",
                self.cmds
                    .submit_application(&self.citizen(*subject), *subject, &program, &psp)
                    .await,
            );
            ok(
                "link",
                self.cmds
                    .link_payment_service(&self.rp(&psp), &program, *subject, &format!("acct-{i}"))
                    .await,
            );
        }
        let approve = |points| ReviewOutcome::Approved { points };
        ok(
            "review",
            self.cmds
                .record_review(&self.rp(&city), &program, s[0], approve(5_000))
                .await,
        );
        ok(
            "review",
            self.cmds
                .record_review(&self.rp(&city), &program, s[1], approve(3_000))
                .await,
        );
        let rejected = ReviewOutcome::Rejected {
            reason: "not resident".into(),
        };
        ok(
            "review",
            self.cmds
                .record_review(&self.rp(&city), &program, s[2], rejected)
                .await,
        );
        ok(
            "grant",
            self.cmds.grant_points(&self.system(), &program, s[0]).await,
        );
        // The provider's first attempt fails; its retry succeeds.
        ok(
            "failed grant",
            self.cmds
                .report_grant_failed(&self.rp(&psp), &program, s[1], "account frozen")
                .await,
        );
        ok(
            "grant",
            self.cmds.grant_points(&self.rp(&psp), &program, s[1]).await,
        );
        ok(
            "unlink",
            self.cmds
                .unlink_payment_service(&self.citizen(s[2]), &program, s[2], "changed my mind")
                .await,
        );

        // The next Asia/Tokyo day: a data patch with all three compensations.
        self.clock.advance(Duration::hours(26));
        let patch = |n: u128| Uuid::from_u128((u128::from(r) << 32) | n);
        let app = |subject: SubjectId| format!("application-{program}.{subject}");
        let targets = [
            format!("ppid-{}", logins[2].ppid),
            format!("subject-{}", s[2]),
            app(s[0]),
            app(s[1]),
        ];
        let request = |id: Uuid, actions: Vec<PatchAction>| RequestPatch {
            patch_id: id,
            ticket_id: format!("INC-{r}"),
            reason: "municipality registered the wrong person".into(),
            targets: targets
                .iter()
                .map(|t| parse("target", StreamId::parse(t)))
                .collect(),
            actions,
        };
        let actions = vec![
            PatchAction::InvalidatePpid {
                ppid: logins[2].ppid.clone(),
                reason: "wrong person".into(),
            },
            PatchAction::UnlinkPaymentService {
                program: program.clone(),
                subject: s[1],
                reason: "wrong account".into(),
            },
            PatchAction::CorrectReviewOutcome {
                program: program.clone(),
                subject: s[0],
                outcome: approve(1_000),
                reason: "miscounted".into(),
            },
        ];
        ok(
            "request",
            self.cmds
                .request_patch(&op("op-1"), request(patch(1), actions.clone()))
                .await,
        );
        ok(
            "dry-run",
            self.cmds.dry_run_patch(&op("op-1"), patch(1)).await,
        );
        ok(
            "approve",
            self.cmds.approve_patch(&op("op-2"), patch(1)).await,
        );
        ok("apply", self.cmds.apply_patch(&op("op-2"), patch(1)).await);
        // The provider takes back part of the 5,000 points owed after the correction.
        ok(
            "reversal paid",
            self.cmds
                .record_reversal_paid(&self.rp(&psp), &program, s[0], 1_000)
                .await,
        );
        ok(
            "request",
            self.cmds
                .request_patch(&op("op-1"), request(patch(2), actions.clone()))
                .await,
        );
        ok(
            "reject",
            self.cmds
                .reject_patch(&op("op-2"), patch(2), "not needed")
                .await,
        );
        ok(
            "request",
            self.cmds
                .request_patch(&op("op-1"), request(patch(3), actions))
                .await,
        );

        // Maintenance notices: one scheduled, updated, cancelled; one left scheduled.
        let details = |hours: i64| NoticeDetails {
            start: self.clock.now() + Duration::hours(hours),
            end: self.clock.now() + Duration::hours(hours + 2),
            affected_services: vec!["login".into()],
            message_ja: "メンテナンス".into(),
            message_en: "Maintenance".into(),
        };
        let n1 = parse("notice", NoticeId::parse(&format!("m-{r}-1")));
        let n2 = parse("notice", NoticeId::parse(&format!("m-{r}-2")));
        ok(
            "schedule",
            self.cmds
                .schedule_maintenance(&op("op-1"), &n1, details(24))
                .await,
        );
        ok(
            "update",
            self.cmds
                .update_maintenance(&op("op-1"), &n1, details(48))
                .await,
        );
        ok(
            "cancel",
            self.cmds
                .cancel_maintenance(&op("op-1"), &n1, "postponed")
                .await,
        );
        ok(
            "schedule",
            self.cmds
                .schedule_maintenance(&op("op-1"), &n2, details(72))
                .await,
        );

        // Test cards: lent, returned, inventoried, lent again and lost.
        let card = parse("card", TestCardId::parse(&format!("card-{r}")));
        let vendor = Borrower {
            kind: BorrowerKind::Vendor,
            name: "Vendor K.K.".into(),
        };
        let town = Borrower {
            kind: BorrowerKind::Municipality,
            name: "Chiyoda".into(),
        };
        ok(
            "card",
            self.cmds
                .register_test_card(&op("op-1"), &card, "JPKI test card")
                .await,
        );
        ok(
            "lend",
            self.cmds.lend_test_card(&op("op-1"), &card, vendor).await,
        );
        ok(
            "return",
            self.cmds.return_test_card(&op("op-1"), &card).await,
        );
        ok(
            "inventory",
            self.cmds
                .check_test_card_inventory(&op("op-1"), &card)
                .await,
        );
        ok(
            "lend",
            self.cmds.lend_test_card(&op("op-1"), &card, town).await,
        );
        ok(
            "lost",
            self.cmds
                .report_test_card_lost(&op("op-1"), &card, "left on a train")
                .await,
        );

        // Four days later the third patch has outlived its time to live.
        self.clock.advance(Duration::hours(96));
        ok(
            "expire",
            self.cmds.expire_patch(&self.system(), patch(3)).await,
        );
    }
}
