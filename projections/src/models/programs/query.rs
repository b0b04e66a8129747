//! The programs read model's queries: programs, applications with filters, an application's
//! history.

use super::{ApplicationStatus, ProgramStatus};
use crate::models::{schema, Page, PageRequest, QueryError};
use chrono::{DateTime, Utc};
use mykey_domain::{ApplicationId, ProgramId, RelyingPartyId, SubjectId};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

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
    /// `<program>.<subject>`: for the citizen, operators and auditors only (see `subject`).
    pub id: String,
    /// Opaque id for relying parties ([`super::reference`]).
    pub reference: String,
    pub program: String,
    /// The platform-internal subject id. Only the citizen themself, operators and auditors may
    /// see it: given to relying parties it would link one citizen across RPs, which pairwise
    /// PPIDs exist to prevent. The municipal and provider doors must leave it out.
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
    /// Grants the payment provider reported failed since the current link was made.
    pub grant_failures: i32,
    /// The provider's reason for the last of those failures.
    pub last_grant_failure: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub position: i64,
}

const APPLICATION_COLUMNS: &str =
    "id, reference, program, subject, municipality, payment_service, \
     link_ref, status, approved_points, reject_reason, granted_points, reversal_owed_points, \
     submitted_at, changed_at, position, grant_failures, last_grant_failure";

fn application_view(r: &Row) -> Result<ApplicationView, QueryError> {
    Ok(ApplicationView {
        id: r.try_get(0)?,
        reference: r.try_get(1)?,
        program: r.try_get(2)?,
        subject: r.try_get(3)?,
        municipality: r.try_get(4)?,
        payment_service: r.try_get(5)?,
        link_ref: r.try_get(6)?,
        status: ApplicationStatus::parse(r.try_get(7)?)?,
        approved_points: r.try_get(8)?,
        reject_reason: r.try_get(9)?,
        granted_points: r.try_get(10)?,
        reversal_owed_points: r.try_get(11)?,
        submitted_at: r.try_get(12)?,
        changed_at: r.try_get(13)?,
        position: r.try_get(14)?,
        grant_failures: r.try_get(15)?,
        last_grant_failure: r.try_get(16)?,
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

/// An application by its opaque reference (what the RP-facing doors take).
pub async fn application_by_reference(
    client: &impl GenericClient,
    schema_name: &str,
    reference: &str,
) -> Result<Option<ApplicationView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {APPLICATION_COLUMNS} FROM {s}.application WHERE reference = $1"),
            &[&reference],
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
    /// For a citizen's step this is their subject id: RP-facing doors must leave it out.
    pub actor_id: String,
    pub actor_role: String,
    /// Set for a compensating event appended by a data patch.
    pub patch_id: Option<Uuid>,
    pub detail: Value,
}

/// An application's whole history, oldest first. Bounded: an application has a handful of
/// events (submission, link, review, grant, at most a few patches, and at most
/// `MAX_GRANT_FAILURES` failed grants per link).
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
