//! A fast generated workload for benchmarks and runner tests (feature `workload`): appends that
//! hold **every event type**, consistent with the write model's rules (a PPID is issued before
//! it is revoked, a notice scheduled before it is cancelled, a patch's compensations carry its
//! patch id, ...), built directly with the stored codecs — no command handler, no read of the
//! log — so a million events can be generated at append speed.
//!
//! The read models refuse events they cannot place (see `expect_row`), so a workload for them
//! must be consistent; random events are not. Rounds are independent (their own relying
//! parties, subjects, programs, ...): append `round(0)`, `round(1)`, ... in any number, in order
//! within a round. The command-handler workload of the integration tests
//! (`mykey_tests::workload`) produces the same shapes through the real handlers.

use chrono::{DateTime, Duration, TimeZone, Utc};
use mykey_domain::application::{Application, ApplicationEvent, ReviewOutcome};
use mykey_domain::certificate::{Certificate, CertificateEvent, CertificateRef};
use mykey_domain::maintenance::{Maintenance, MaintenanceEvent, NoticeDetails};
use mykey_domain::patch::{Patch, PatchAction, PatchEvent, PlannedAppend, PlannedEvent};
use mykey_domain::ppid::{PpidAggregate, PpidEvent, RevokedBy};
use mykey_domain::program::{Program, ProgramEvent};
use mykey_domain::relying_party::{RelyingParty, RelyingPartyEvent, RpKind};
use mykey_domain::subject::{ReleaseReason, Subject, SubjectEvent};
use mykey_domain::test_card::{Borrower, BorrowerKind, TestCard, TestCardEvent};
use mykey_domain::{
    Aggregate, ApplicationId, DomainError, NoticeId, Ppid, ProgramId, RelyingPartyId, SubjectId,
    TestCardId,
};
use mykey_schemas::{EnvelopeError, EventCodec, EventMetadata, NewEvent, SchemaError, StreamId};
use mykey_store::{AppendRequest, ExpectedVersion, StreamAppend};
use std::fmt::Display;
use uuid::Uuid;

/// Events in one [`round`].
pub const EVENTS_PER_ROUND: usize = 60;

/// Why a round could not be built (a bug in this generator, not in the caller's input).
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

type Result<T> = std::result::Result<T, WorkloadError>;

/// Tags the generator's ids so they never meet the handlers' ids in one log.
const ID_TAG: u128 = 0x3017_u128 << 112;

struct Round {
    r: u64,
    n: u64,
    out: Vec<AppendRequest>,
}

/// One event of aggregate `A`'s stream `id`.
fn ev<A>(id: impl Display, event: &A::Event) -> Result<(StreamId, mykey_schemas::Encoded)>
where
    A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
{
    Ok((StreamId::new(A::CATEGORY, id)?, A::encode(event)?))
}

impl Round {
    fn uuid(&mut self) -> Uuid {
        self.n += 1;
        Uuid::from_u128(ID_TAG | (u128::from(self.r) << 40) | u128::from(self.n))
    }

    /// One append (one command): `events` in order, grouped by stream in first-seen order.
    fn append(
        &mut self,
        actor: &str,
        role: &str,
        patch_id: Option<Uuid>,
        events: Vec<(StreamId, mykey_schemas::Encoded)>,
    ) {
        let command = self.uuid();
        let mut streams: Vec<StreamAppend> = Vec::new();
        for (stream, e) in events {
            let event = NewEvent {
                event_id: self.uuid(),
                event_type: e.event_type.to_owned(),
                schema_version: e.schema_version,
                payload: e.payload,
            };
            match streams.iter_mut().find(|s| s.stream == stream) {
                Some(s) => s.events.push(event),
                None => streams.push(StreamAppend {
                    stream,
                    expected: ExpectedVersion::Any,
                    events: vec![event],
                }),
            }
        }
        self.out.push(AppendRequest {
            metadata: EventMetadata {
                actor_id: actor.to_owned(),
                actor_role: role.to_owned(),
                command_id: command,
                correlation_id: command,
                causation_id: command,
                patch_id,
                client_addr: None,
            },
            streams,
        });
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// The appends of round `r`: every event type at least once.
pub fn round(r: u64) -> Result<Vec<AppendRequest>> {
    use ApplicationEvent as AE;
    let mut w = Round {
        r,
        n: 0,
        out: Vec::new(),
    };
    let jwk = |n: &str| serde_json::json!({ "kty": "RSA", "e": "AQAB", "n": n });
    let city = RelyingPartyId::parse(&format!("wcity-{r}"))?;
    let psp = RelyingPartyId::parse(&format!("wpsp-{r}"))?;
    let lib = RelyingPartyId::parse(&format!("wlib-{r}"))?;
    for (id, code, kind) in [
        (&city, "131016", RpKind::Municipality),
        (&psp, "psp", RpKind::PaymentServiceProvider),
        (&lib, "lib", RpKind::LibrarySystem),
    ] {
        let e = RelyingPartyEvent::Registered {
            id: id.clone(),
            code: code.into(),
            name: format!("RP {id}"),
            kind,
            public_jwk: jwk("k1"),
        };
        w.append("op-1", "operator", None, vec![ev::<RelyingParty>(id, &e)?]);
    }
    let rp_events = [
        (
            &city,
            RelyingPartyEvent::KeyRotated {
                public_jwk: jwk("k2"),
            },
        ),
        (
            &lib,
            RelyingPartyEvent::Suspended {
                reason: "audit".into(),
            },
        ),
        (&lib, RelyingPartyEvent::Resumed),
        (
            &lib,
            RelyingPartyEvent::Retired {
                reason: "replaced".into(),
            },
        ),
    ];
    for (id, e) in &rp_events {
        w.append("op-1", "operator", None, vec![ev::<RelyingParty>(id, e)?]);
    }

    let program = ProgramId::parse(&format!("wpoints-{r}"))?;
    let closed = ProgramId::parse(&format!("wclosed-{r}"))?;
    for p in [&program, &closed] {
        let e = ProgramEvent::Created {
            id: p.clone(),
            municipality: city.clone(),
            name: format!("Points {p}"),
            period_start: start(),
            period_end: start() + Duration::days(90),
        };
        w.append("op-1", "operator", None, vec![ev::<Program>(p, &e)?]);
    }
    let program_events = [
        (
            &program,
            ProgramEvent::Extended {
                new_end: start() + Duration::days(120),
            },
        ),
        (
            &program,
            ProgramEvent::Paused {
                reason: "incident".into(),
            },
        ),
        (&program, ProgramEvent::Resumed),
        (&closed, ProgramEvent::Closed),
    ];
    for (id, e) in &program_events {
        w.append("op-1", "operator", None, vec![ev::<Program>(id, e)?]);
    }

    // Three citizens log in at the city: certificate linked, subject created, PPID issued.
    let mut citizens = Vec::new();
    for k in 1..=3u64 {
        let subject = SubjectId(w.uuid());
        let certificate = CertificateRef::new("wca", &format!("{r:x}0{k:x}"))?;
        let ppid = Ppid::from_uuid(w.uuid());
        let events = vec![
            ev::<Certificate>(
                certificate.stream_key(),
                &CertificateEvent::Linked {
                    certificate: certificate.clone(),
                    subject,
                },
            )?,
            ev::<Subject>(
                subject,
                &SubjectEvent::Created {
                    subject,
                    certificate: certificate.clone(),
                },
            )?,
            ev::<PpidAggregate>(
                &ppid,
                &PpidEvent::Issued {
                    ppid: ppid.clone(),
                    subject,
                    relying_party: city.clone(),
                },
            )?,
            ev::<Subject>(
                subject,
                &SubjectEvent::PpidAssigned {
                    relying_party: city.clone(),
                    ppid: ppid.clone(),
                },
            )?,
        ];
        w.append("login", "system", None, events);
        citizens.push((subject, certificate, ppid));
    }
    let (s1, c1, _) = citizens[0].clone();
    let (s2, _, p2) = citizens[1].clone();
    let (s3, c3, p3) = citizens[2].clone();

    // A renewal of citizen 1's card, a revocation of citizen 3's.
    let renewed = CertificateRef::new("wca", &format!("{r:x}0ff"))?;
    w.append(
        "jlis",
        "system",
        None,
        vec![
            ev::<Certificate>(
                c1.stream_key(),
                &CertificateEvent::Renewed {
                    new: renewed.clone(),
                },
            )?,
            ev::<Certificate>(
                renewed.stream_key(),
                &CertificateEvent::LinkedFromRenewal {
                    certificate: renewed.clone(),
                    subject: s1,
                    previous: c1.clone(),
                },
            )?,
            ev::<Subject>(
                s1,
                &SubjectEvent::CertificateAdded {
                    certificate: renewed,
                },
            )?,
        ],
    );
    let revoked = CertificateEvent::Revoked {
        certificate: c3.clone(),
        reason: "keyCompromise".into(),
    };
    w.append(
        "crl",
        "system",
        None,
        vec![ev::<Certificate>(c3.stream_key(), &revoked)?],
    );

    // The city revokes citizen 2's PPID.
    w.append(
        city.as_str(),
        "relying_party",
        None,
        vec![
            ev::<PpidAggregate>(
                &p2,
                &PpidEvent::Revoked {
                    by: RevokedBy::RelyingParty,
                },
            )?,
            ev::<Subject>(
                s2,
                &SubjectEvent::PpidReleased {
                    relying_party: city.clone(),
                    ppid: p2.clone(),
                    reason: ReleaseReason::Revoked,
                },
            )?,
        ],
    );

    // Applications: citizen 1 approved and granted; citizen 2 rejected, then unlinks.
    let app1 = ApplicationId::of(&program, &s1);
    let app2 = ApplicationId::of(&program, &s2);
    for (app, s) in [(&app1, s1), (&app2, s2)] {
        let submitted = AE::Submitted {
            subject: s,
            program: program.clone(),
            municipality: city.clone(),
            payment_service: psp.clone(),
        };
        w.append(
            &s.to_string(),
            "citizen",
            None,
            vec![ev::<Application>(app, &submitted)?],
        );
        let linked = AE::PaymentServiceLinked {
            payment_service: psp.clone(),
            link_ref: format!("acct-{s}"),
        };
        w.append(
            psp.as_str(),
            "relying_party",
            None,
            vec![ev::<Application>(app, &linked)?],
        );
    }
    let approved = ReviewOutcome::Approved { points: 5_000 };
    let reviews = [
        (
            &app1,
            AE::ReviewRecorded {
                outcome: approved.clone(),
            },
        ),
        (
            &app2,
            AE::ReviewRecorded {
                outcome: ReviewOutcome::Rejected {
                    reason: "not resident".into(),
                },
            },
        ),
    ];
    for (app, e) in &reviews {
        w.append(
            city.as_str(),
            "relying_party",
            None,
            vec![ev::<Application>(app, e)?],
        );
    }
    // The first grant fails (the provider reports it); the retry succeeds.
    let failed = AE::GrantFailed {
        reason: "account temporarily frozen".into(),
        payment_service: psp.clone(),
    };
    w.append(
        psp.as_str(),
        "relying_party",
        None,
        vec![ev::<Application>(&app1, &failed)?],
    );
    let granted = AE::PointsGranted {
        points: 5_000,
        payment_service: psp.clone(),
    };
    w.append(
        "batch",
        "system",
        None,
        vec![ev::<Application>(&app1, &granted)?],
    );
    let unlinked = AE::PaymentServiceUnlinked {
        reason: "changed my mind".into(),
        patch_id: None,
    };
    w.append(
        &s2.to_string(),
        "citizen",
        None,
        vec![ev::<Application>(&app2, &unlinked)?],
    );

    // A patch invalidating citizen 3's PPID and correcting citizen 1's review; one rejected,
    // one expired.
    let patch = w.uuid();
    let rejected_patch = w.uuid();
    let expired_patch = w.uuid();
    let actions = vec![
        PatchAction::InvalidatePpid {
            ppid: p3.clone(),
            reason: "wrong person".into(),
        },
        PatchAction::CorrectReviewOutcome {
            program: program.clone(),
            subject: s1,
            outcome: ReviewOutcome::Approved { points: 1_000 },
            reason: "miscounted".into(),
        },
    ];
    let compensations = vec![
        ev::<PpidAggregate>(
            &p3,
            &PpidEvent::Invalidated {
                patch_id: patch,
                reason: "wrong person".into(),
            },
        )?,
        ev::<Subject>(
            s3,
            &SubjectEvent::PpidReleased {
                relying_party: city.clone(),
                ppid: p3.clone(),
                reason: ReleaseReason::Invalidated,
            },
        )?,
        ev::<Application>(
            &app1,
            &AE::ReviewCorrected {
                previous: approved,
                outcome: ReviewOutcome::Approved { points: 1_000 },
                reversal_owed_points: 5_000,
                patch_id: patch,
                reason: "miscounted".into(),
            },
        )?,
    ];
    let plan = vec![PlannedAppend {
        stream: compensations[0].0.to_string(),
        expected_version: 1,
        events: vec![PlannedEvent {
            event_id: Uuid::nil(),
            event_type: compensations[0].1.event_type.to_owned(),
            schema_version: compensations[0].1.schema_version,
            payload: compensations[0].1.payload.clone(),
        }],
    }];
    for p in [patch, rejected_patch, expired_patch] {
        let requested = PatchEvent::Requested {
            patch_id: p,
            ticket_id: format!("INC-{r}"),
            reason: "municipality registered the wrong person".into(),
            targets: compensations.iter().map(|(s, _)| s.to_string()).collect(),
            actions: actions.clone(),
            requested_by: "op-1".into(),
            expires_at: start() + Duration::days(3),
        };
        w.append("op-1", "operator", None, vec![ev::<Patch>(p, &requested)?]);
    }
    let steps = [
        (
            patch,
            "op-1",
            PatchEvent::DryRunRecorded {
                plan,
                by: "op-1".into(),
            },
        ),
        (patch, "op-2", PatchEvent::Approved { by: "op-2".into() }),
        (
            rejected_patch,
            "op-2",
            PatchEvent::Rejected {
                by: "op-2".into(),
                reason: "not needed".into(),
            },
        ),
        (expired_patch, "expiry", PatchEvent::Expired),
    ];
    for (p, by, e) in &steps {
        w.append(by, "operator", None, vec![ev::<Patch>(p, e)?]);
    }
    let mut applied = vec![ev::<Patch>(
        patch,
        &PatchEvent::Applied { by: "op-2".into() },
    )?];
    applied.extend(compensations);
    w.append("op-2", "operator", Some(patch), applied);
    // The provider takes back part of the 5,000 points now owed.
    w.append(
        psp.as_str(),
        "relying_party",
        None,
        vec![ev::<Application>(
            &app1,
            &AE::ReversalPaid {
                points: 1_000,
                payment_service: psp.clone(),
            },
        )?],
    );

    // Maintenance notices and the test-card register.
    let notice = NoticeId::parse(&format!("wm-{r}"))?;
    let details = |h: i64| NoticeDetails {
        start: start() + Duration::hours(h),
        end: start() + Duration::hours(h + 2),
        affected_services: vec!["login".into()],
        message_ja: "メンテナンス".into(),
        message_en: "Maintenance".into(),
    };
    let notice_events = [
        MaintenanceEvent::Scheduled {
            id: notice.clone(),
            details: details(24),
        },
        MaintenanceEvent::Updated {
            details: details(48),
        },
        MaintenanceEvent::Cancelled {
            reason: "postponed".into(),
        },
    ];
    for e in &notice_events {
        w.append(
            "op-1",
            "operator",
            None,
            vec![ev::<Maintenance>(&notice, e)?],
        );
    }
    let card = TestCardId::parse(&format!("wcard-{r}"))?;
    let card_events = [
        TestCardEvent::Registered {
            id: card.clone(),
            label: "JPKI test card".into(),
        },
        TestCardEvent::Lent {
            borrower: Borrower {
                kind: BorrowerKind::Vendor,
                name: "Vendor".into(),
            },
        },
        TestCardEvent::Returned,
        TestCardEvent::InventoryChecked {
            checked_at: start(),
        },
        TestCardEvent::ReportedLost {
            note: "left on a train".into(),
        },
    ];
    for e in &card_events {
        w.append("op-1", "operator", None, vec![ev::<TestCard>(&card, e)?]);
    }
    Ok(w.out)
}

/// Rounds `rounds` in few, large appends (for generating a million events quickly): the
/// appends of consecutive rounds are merged while they share a patch id (the patch's
/// compensations keep theirs, so patch effects stay visible) and stay within
/// [`MAX_EVENTS_PER_APPEND`](mykey_store::MAX_EVENTS_PER_APPEND). Merging keeps each stream's
/// events in order; the read models depend only on order within a stream.
pub fn batched(rounds: std::ops::Range<u64>) -> Result<Vec<AppendRequest>> {
    let mut out: Vec<AppendRequest> = Vec::new();
    for r in rounds {
        for request in round(r)? {
            match out.last_mut() {
                Some(last)
                    if last.metadata.patch_id == request.metadata.patch_id
                        && last.event_count() + request.event_count()
                            <= mykey_store::MAX_EVENTS_PER_APPEND =>
                {
                    for s in request.streams {
                        match last.streams.iter_mut().find(|l| l.stream == s.stream) {
                            Some(l) => l.events.extend(s.events),
                            None => last.streams.push(s),
                        }
                    }
                }
                _ => out.push(request),
            }
        }
    }
    Ok(out)
}
