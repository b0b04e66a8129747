//! Point programs and the applications to each: status, linked payment service, the review
//! with its corrections and owed reversals, and grants — plus every application's history.
//!
//! One projection for both because the doors always read them together (a municipality's
//! applications are those of its programs) and neither needs the other's rows to apply.
//! Readers: the program's municipality (its programs' applications), the payment-service
//! provider (applications naming it), the citizen (their own), operators and auditors.

use crate::models::{checked, int, outcome_json, position, stream_id, text_enum, EXPECT_ROW};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use mykey_domain::application::{Application, ApplicationEvent, ReviewOutcome};
use mykey_domain::program::{Program, ProgramEvent};
use mykey_domain::Aggregate;
use mykey_schemas::AnyEvent;
use serde_json::json;
use sha2::{Digest, Sha256};

mod query;
pub use query::*;

#[derive(Debug, Clone, Copy)]
pub struct Programs;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE program (
        id            text PRIMARY KEY,
        municipality  text NOT NULL,
        name          text NOT NULL,
        period_start  timestamptz NOT NULL,
        period_end    timestamptz NOT NULL,
        status        text NOT NULL CHECK (status IN ('open', 'paused', 'closed')),
        status_reason text,
        created_at    timestamptz NOT NULL,
        changed_at    timestamptz NOT NULL,
        position      bigint NOT NULL
    );
    CREATE INDEX program_by_municipality ON program (municipality, id);
    CREATE TABLE application (
        id                   text PRIMARY KEY,
        reference            text NOT NULL UNIQUE,
        program              text NOT NULL,
        subject              uuid NOT NULL,
        municipality         text NOT NULL,
        payment_service      text NOT NULL,
        link_ref             text,
        status               text NOT NULL
                             CHECK (status IN ('submitted', 'approved', 'rejected', 'granted')),
        approved_points      bigint,
        reject_reason        text,
        granted_points       bigint,
        reversal_owed_points bigint NOT NULL DEFAULT 0,
        grant_failures       integer NOT NULL DEFAULT 0,
        last_grant_failure   text,
        submitted_at         timestamptz NOT NULL,
        changed_at           timestamptz NOT NULL,
        position             bigint NOT NULL
    );
    CREATE INDEX application_by_program ON application (program, id);
    CREATE INDEX application_by_service ON application (payment_service, status, id);
    CREATE INDEX application_by_subject ON application (subject, id);
    CREATE TABLE application_event (
        application text NOT NULL,
        position    bigint NOT NULL,
        at          timestamptz NOT NULL,
        event_type  text NOT NULL,
        actor_id    text NOT NULL,
        actor_role  text NOT NULL,
        patch_id    uuid,
        detail      jsonb NOT NULL,
        PRIMARY KEY (application, position)
    );",
];

text_enum!(
    /// Whether a program takes applications.
    ProgramStatus {
        Open => "open",
        Paused => "paused",
        Closed => "closed",
    }
);

text_enum!(
    /// Where an application stands. A correction moves it back to `approved` or `rejected`
    /// (points granted before a correction become owed reversals).
    ApplicationStatus {
        Submitted => "submitted",
        Approved => "approved",
        Rejected => "rejected",
        Granted => "granted",
    }
);

/// An application's opaque reference for relying parties: its id (`<program>.<subject>`)
/// embeds the platform-internal subject id, which must not reach an RP. An unkeyed hash is
/// enough: the subject id is random (122 bits), so the reference cannot be inverted.
pub fn reference(application_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"mykey application reference\0");
    h.update(application_id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The row change of a (possibly corrected) review outcome.
fn outcome_change(
    id: Param,
    o: &ReviewOutcome,
    owed: i64,
    at: Param,
    pos: Param,
) -> Result<Change, ApplyError> {
    let (status, points, reason) = match o {
        ReviewOutcome::Approved { points } => {
            (ApplicationStatus::Approved, Param::I64(int(*points)?), None)
        }
        ReviewOutcome::Rejected { reason } => (
            ApplicationStatus::Rejected,
            Param::Null,
            Some(reason.clone()),
        ),
    };
    // A correction voids the grant (its points are owed back); a first review has no grant.
    Ok(Change::new(
        checked!(
            "UPDATE application SET status = $2, approved_points = $3, reject_reason = $4, \
         granted_points = NULL, reversal_owed_points = reversal_owed_points + $5, \
         changed_at = $6, position = $7 WHERE id = $1",
            "application"
        ),
        vec![
            id,
            status.as_str().into(),
            points,
            reason.into(),
            owed.into(),
            at,
            pos,
        ],
    ))
}

impl Programs {
    fn program(
        e: &Recorded<'_>,
        event: &ProgramEvent,
        out: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        use ProgramEvent as E;
        let id = Param::Text(stream_id(e));
        let at = Param::Time(e.envelope.recorded_at);
        let pos = Param::I64(position(e)?);
        let status = |s: ProgramStatus, reason: Option<&String>| {
            Change::new(
                checked!(
                    "UPDATE program SET status = $2, status_reason = $3, changed_at = $4, \
                 position = $5 WHERE id = $1",
                    "program"
                ),
                vec![
                    id.clone(),
                    s.as_str().into(),
                    reason.cloned().into(),
                    at.clone(),
                    pos.clone(),
                ],
            )
        };
        out.push(match event {
            E::Created {
                id,
                municipality,
                name,
                period_start,
                period_end,
            } => Change::new(
                "INSERT INTO program (id, municipality, name, period_start, period_end, status, \
                 created_at, changed_at, position) VALUES ($1, $2, $3, $4, $5, 'open', $6, $6, $7)",
                vec![
                    id.as_str().into(),
                    municipality.as_str().into(),
                    name.as_str().into(),
                    (*period_start).into(),
                    (*period_end).into(),
                    at,
                    pos,
                ],
            ),
            E::Extended { new_end } => Change::new(
                checked!("UPDATE program SET period_end = $2, changed_at = $3, position = $4 WHERE id = $1", "program"),
                vec![id, (*new_end).into(), at, pos],
            ),
            E::Paused { reason } => status(ProgramStatus::Paused, Some(reason)),
            E::Resumed => status(ProgramStatus::Open, None),
            E::Closed => status(ProgramStatus::Closed, None),
        });
        Ok(())
    }

    fn application(
        e: &Recorded<'_>,
        event: &ApplicationEvent,
        out: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        use ApplicationEvent as E;
        let id = Param::Text(stream_id(e));
        let at = Param::Time(e.envelope.recorded_at);
        let pos = Param::I64(position(e)?);
        let detail = match event {
            E::Submitted {
                subject,
                program,
                municipality,
                payment_service,
            } => {
                out.push(Change::new(
                    "INSERT INTO application (id, program, subject, municipality, \
                     payment_service, status, submitted_at, changed_at, position, reference) \
                     VALUES ($1, $2, $3, $4, $5, 'submitted', $6, $6, $7, $8)",
                    vec![
                        id.clone(),
                        program.as_str().into(),
                        subject.0.into(),
                        municipality.as_str().into(),
                        payment_service.as_str().into(),
                        at.clone(),
                        pos.clone(),
                        reference(&stream_id(e)).into(),
                    ],
                ));
                json!({ "program": program.as_str(), "payment_service": payment_service.as_str() })
            }
            E::PaymentServiceLinked {
                payment_service,
                link_ref,
            } => {
                out.push(Change::new(
                    // A new link starts the failed-grant count afresh, as in the write model.
                    checked!(
                        "UPDATE application SET payment_service = $2, link_ref = $3, \
                     grant_failures = 0, last_grant_failure = NULL, changed_at = $4, \
                     position = $5 WHERE id = $1",
                        "application"
                    ),
                    vec![
                        id.clone(),
                        payment_service.as_str().into(),
                        link_ref.as_str().into(),
                        at.clone(),
                        pos.clone(),
                    ],
                ));
                json!({ "payment_service": payment_service.as_str(), "link_ref": link_ref })
            }
            E::ReviewRecorded { outcome } => {
                out.push(outcome_change(
                    id.clone(),
                    outcome,
                    0,
                    at.clone(),
                    pos.clone(),
                )?);
                outcome_json(outcome)
            }
            E::PointsGranted {
                points,
                payment_service,
            } => {
                out.push(Change::new(
                    checked!(
                        "UPDATE application SET status = 'granted', granted_points = $2, \
                     changed_at = $3, position = $4 WHERE id = $1",
                        "application"
                    ),
                    vec![id.clone(), int(*points)?.into(), at.clone(), pos.clone()],
                ));
                json!({ "points": points, "payment_service": payment_service.as_str() })
            }
            E::PaymentServiceUnlinked { reason, patch_id } => {
                out.push(Change::new(
                    checked!(
                        "UPDATE application SET link_ref = NULL, changed_at = $2, position = $3 \
                     WHERE id = $1",
                        "application"
                    ),
                    vec![id.clone(), at.clone(), pos.clone()],
                ));
                json!({ "reason": reason, "patch_id": patch_id })
            }
            E::ReviewCorrected {
                previous,
                outcome,
                reversal_owed_points,
                patch_id,
                reason,
            } => {
                out.push(outcome_change(
                    id.clone(),
                    outcome,
                    int(*reversal_owed_points)?,
                    at.clone(),
                    pos.clone(),
                )?);
                json!({
                    "previous": outcome_json(previous),
                    "outcome": outcome_json(outcome),
                    "reversal_owed_points": reversal_owed_points,
                    "patch_id": patch_id,
                    "reason": reason,
                })
            }
            E::ReversalPaid {
                points,
                payment_service,
            } => {
                out.push(Change::new(
                    checked!(
                        "UPDATE application SET reversal_owed_points = \
                     GREATEST(reversal_owed_points - $2, 0), changed_at = $3, position = $4 \
                     WHERE id = $1",
                        "application"
                    ),
                    vec![id.clone(), int(*points)?.into(), at.clone(), pos.clone()],
                ));
                json!({ "points": points, "payment_service": payment_service.as_str() })
            }
            E::GrantFailed {
                reason,
                payment_service,
            } => {
                // The status stays `approved`: the application still awaits a grant.
                out.push(Change::new(
                    checked!(
                        "UPDATE application SET grant_failures = grant_failures + 1, \
                     last_grant_failure = $2, changed_at = $3, position = $4 WHERE id = $1",
                        "application"
                    ),
                    vec![id.clone(), reason.as_str().into(), at.clone(), pos.clone()],
                ));
                json!({ "reason": reason, "payment_service": payment_service.as_str() })
            }
        };
        let m = &e.envelope.metadata;
        out.push(Change::new(
            "INSERT INTO application_event (application, position, at, event_type, actor_id, \
             actor_role, patch_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                id,
                pos,
                at,
                e.envelope.event_type.as_str().into(),
                m.actor_id.as_str().into(),
                m.actor_role.as_str().into(),
                m.patch_id.into(),
                detail.into(),
            ],
        ));
        Ok(())
    }
}

impl Projection for Programs {
    fn name(&self) -> &'static str {
        "programs"
    }
    fn version(&self) -> u32 {
        // 2: applies ReversalPaid (the owed balance goes down).
        // 3: applies GrantFailed (grant_failures, last_grant_failure).
        3
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        &[Program::CATEGORY, Application::CATEGORY]
    }
    fn source(&self) -> &'static str {
        include_str!("mod.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        match e.event {
            AnyEvent::Program(p) => Programs::program(&e, p, out),
            AnyEvent::Application(a) => Programs::application(&e, a, out),
            _ => Ok(()),
        }
    }
}
