//! Point programs and the applications to each: status, linked payment service, the review
//! with its corrections and owed reversals, and grants — plus every application's history.
//!
//! One projection for both because the doors always read them together (a municipality's
//! applications are those of its programs) and neither needs the other's rows to apply.
//! Readers: the program's municipality (its programs' applications), the payment-service
//! provider (applications naming it), the citizen (their own), operators and auditors.

use super::{
    checked, int, outcome_json, position, schema, stream_id, text_enum, Page, PageRequest,
    QueryError, EXPECT_ROW,
};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use chrono::{DateTime, Utc};
use mykey_domain::application::Application;
use mykey_domain::application::{ApplicationEvent, ReviewOutcome};
use mykey_domain::program::Program;
use mykey_domain::program::ProgramEvent;
use mykey_domain::Aggregate;
use mykey_domain::{ApplicationId, ProgramId, RelyingPartyId, SubjectId};
use mykey_schemas::AnyEvent;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

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
                     payment_service, status, submitted_at, changed_at, position) \
                     VALUES ($1, $2, $3, $4, $5, 'submitted', $6, $6, $7)",
                    vec![
                        id.clone(),
                        program.as_str().into(),
                        subject.0.into(),
                        municipality.as_str().into(),
                        payment_service.as_str().into(),
                        at.clone(),
                        pos.clone(),
                    ],
                ));
                json!({ "program": program.as_str(), "payment_service": payment_service.as_str() })
            }
            E::PaymentServiceLinked {
                payment_service,
                link_ref,
            } => {
                out.push(Change::new(
                    checked!("UPDATE application SET payment_service = $2, link_ref = $3, changed_at = $4, \
                     position = $5 WHERE id = $1", "application"),
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
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        &[Program::CATEGORY, Application::CATEGORY]
    }
    fn source(&self) -> &'static str {
        include_str!("programs.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        match e.event {
            AnyEvent::Program(p) => Programs::program(&e, p, out),
            AnyEvent::Application(a) => Programs::application(&e, a, out),
            _ => Ok(()),
        }
    }
}

/// A program.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramView {
    pub id: String,
    pub municipality: String,
    pub name: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub status: ProgramStatus,
    /// Why it was paused (None otherwise).
    pub status_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub position: i64,
}

const PROGRAM_COLUMNS: &str = "id, municipality, name, period_start, period_end, status, \
                               status_reason, created_at, changed_at, position";

fn program_view(r: &Row) -> Result<ProgramView, QueryError> {
    Ok(ProgramView {
        id: r.try_get(0)?,
        municipality: r.try_get(1)?,
        name: r.try_get(2)?,
        period_start: r.try_get(3)?,
        period_end: r.try_get(4)?,
        status: ProgramStatus::parse(r.try_get(5)?)?,
        status_reason: r.try_get(6)?,
        created_at: r.try_get(7)?,
        changed_at: r.try_get(8)?,
        position: r.try_get(9)?,
    })
}

pub async fn program(
    client: &impl GenericClient,
    schema_name: &str,
    id: &ProgramId,
) -> Result<Option<ProgramView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {PROGRAM_COLUMNS} FROM {s}.program WHERE id = $1"),
            &[&id.as_str()],
        )
        .await?;
    row.as_ref().map(program_view).transpose()
}

/// Which programs to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgramFilter {
    pub municipality: Option<RelyingPartyId>,
    pub status: Option<ProgramStatus>,
    /// Only programs open and within their period at this instant (the citizen's list).
    pub accepting_at: Option<DateTime<Utc>>,
}

pub async fn list_programs(
    client: &impl GenericClient,
    schema_name: &str,
    f: &ProgramFilter,
    page: &PageRequest,
) -> Result<Page<ProgramView>, QueryError> {
    let s = schema(schema_name)?;
    let after = page.after(1)?;
    let rows = client
        .query(
            &format!(
                "SELECT {PROGRAM_COLUMNS} FROM {s}.program \
                 WHERE ($1::text IS NULL OR municipality = $1) \
                 AND ($2::text IS NULL OR status = $2) \
                 AND ($3::timestamptz IS NULL OR (status = 'open' AND period_start <= $3 \
                      AND $3 < period_end)) \
                 AND id > $4 ORDER BY id LIMIT $5"
            ),
            &[
                &f.municipality.as_ref().map(RelyingPartyId::as_str),
                &f.status.map(ProgramStatus::as_str),
                &f.accepting_at,
                &after[0],
                &page.fetch(),
            ],
        )
        .await?;
    let items = rows
        .iter()
        .map(program_view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(items, |p| vec![p.id.clone()]))
}

/// An application.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplicationView {
    pub id: String,
    pub program: String,
    pub subject: Uuid,
    pub municipality: String,
    pub payment_service: String,
    /// The provider's account reference while a payment service is linked.
    pub link_ref: Option<String>,
    pub status: ApplicationStatus,
    pub approved_points: Option<i64>,
    pub reject_reason: Option<String>,
    pub granted_points: Option<i64>,
    /// Points granted under an outcome a data patch later corrected, owed back.
    pub reversal_owed_points: i64,
    pub submitted_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub position: i64,
}

const APPLICATION_COLUMNS: &str = "id, program, subject, municipality, payment_service, \
     link_ref, status, approved_points, reject_reason, granted_points, reversal_owed_points, \
     submitted_at, changed_at, position";

fn application_view(r: &Row) -> Result<ApplicationView, QueryError> {
    Ok(ApplicationView {
        id: r.try_get(0)?,
        program: r.try_get(1)?,
        subject: r.try_get(2)?,
        municipality: r.try_get(3)?,
        payment_service: r.try_get(4)?,
        link_ref: r.try_get(5)?,
        status: ApplicationStatus::parse(r.try_get(6)?)?,
        approved_points: r.try_get(7)?,
        reject_reason: r.try_get(8)?,
        granted_points: r.try_get(9)?,
        reversal_owed_points: r.try_get(10)?,
        submitted_at: r.try_get(11)?,
        changed_at: r.try_get(12)?,
        position: r.try_get(13)?,
    })
}

pub async fn application(
    client: &impl GenericClient,
    schema_name: &str,
    id: &ApplicationId,
) -> Result<Option<ApplicationView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {APPLICATION_COLUMNS} FROM {s}.application WHERE id = $1"),
            &[&id.as_str()],
        )
        .await?;
    row.as_ref().map(application_view).transpose()
}

/// Which applications to list; every field narrows. The doors always set the caller's own
/// scope (municipality, payment service or subject) before the user's filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplicationFilter {
    pub program: Option<ProgramId>,
    pub municipality: Option<RelyingPartyId>,
    pub payment_service: Option<RelyingPartyId>,
    pub subject: Option<SubjectId>,
    pub status: Option<ApplicationStatus>,
    /// Only those with a payment service linked (what a provider can grant to).
    pub linked: Option<bool>,
    pub submitted_from: Option<DateTime<Utc>>,
    pub submitted_before: Option<DateTime<Utc>>,
}

pub async fn list_applications(
    client: &impl GenericClient,
    schema_name: &str,
    f: &ApplicationFilter,
    page: &PageRequest,
) -> Result<Page<ApplicationView>, QueryError> {
    let s = schema(schema_name)?;
    let after = page.after(1)?;
    let rows = client
        .query(
            &format!(
                "SELECT {APPLICATION_COLUMNS} FROM {s}.application \
                 WHERE ($1::text IS NULL OR program = $1) \
                 AND ($2::text IS NULL OR municipality = $2) \
                 AND ($3::text IS NULL OR payment_service = $3) \
                 AND ($4::uuid IS NULL OR subject = $4) \
                 AND ($5::text IS NULL OR status = $5) \
                 AND ($6::bool IS NULL OR (link_ref IS NOT NULL) = $6) \
                 AND ($7::timestamptz IS NULL OR submitted_at >= $7) \
                 AND ($8::timestamptz IS NULL OR submitted_at < $8) \
                 AND id > $9 ORDER BY id LIMIT $10"
            ),
            &[
                &f.program.as_ref().map(ProgramId::as_str),
                &f.municipality.as_ref().map(RelyingPartyId::as_str),
                &f.payment_service.as_ref().map(RelyingPartyId::as_str),
                &f.subject.map(|s| s.0),
                &f.status.map(ApplicationStatus::as_str),
                &f.linked,
                &f.submitted_from,
                &f.submitted_before,
                &after[0],
                &page.fetch(),
            ],
        )
        .await?;
    let items = rows
        .iter()
        .map(application_view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(items, |a| vec![a.id.clone()]))
}

/// One step of an application's history: review, correction (with owed reversal), grant, ...
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplicationStep {
    pub position: i64,
    pub at: DateTime<Utc>,
    pub event_type: String,
    pub actor_id: String,
    pub actor_role: String,
    /// Set for a compensating event appended by a data patch.
    pub patch_id: Option<Uuid>,
    pub detail: Value,
}

/// An application's whole history, oldest first. Bounded: an application has a handful of
/// events (submission, link, review, grant, and at most a few patches).
pub async fn application_history(
    client: &impl GenericClient,
    schema_name: &str,
    id: &ApplicationId,
) -> Result<Vec<ApplicationStep>, QueryError> {
    let s = schema(schema_name)?;
    let rows = client
        .query(
            &format!(
                "SELECT position, at, event_type, actor_id, actor_role, patch_id, detail \
                 FROM {s}.application_event WHERE application = $1 ORDER BY position"
            ),
            &[&id.as_str()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ApplicationStep {
                position: r.try_get(0)?,
                at: r.try_get(1)?,
                event_type: r.try_get(2)?,
                actor_id: r.try_get(3)?,
                actor_role: r.try_get(4)?,
                patch_id: r.try_get(5)?,
                detail: r.try_get(6)?,
            })
        })
        .collect()
}
