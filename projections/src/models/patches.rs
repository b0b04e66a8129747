//! Data patches with their whole history: the request (ticket, reason, targets, actions), the
//! dry-run's planned events, approval or rejection, and the outcome — including every event the
//! applied patch appended anywhere in the log (events whose metadata carries its patch id).
//! Readers: operators and auditors.

use super::{
    checked, outcome_json, position, schema, stream_id, text_enum, Page, PageRequest, QueryError,
    EXPECT_ROW,
};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use chrono::{DateTime, Utc};
use mykey_domain::application::Application;
use mykey_domain::patch::{Patch, PatchAction, PatchEvent, PlannedAppend};
use mykey_domain::ppid::PpidAggregate;
use mykey_domain::subject::Subject;
use mykey_domain::Aggregate;
use mykey_schemas::AnyEvent;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct Patches;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE patch (
        patch_id      uuid PRIMARY KEY,
        ticket_id     text NOT NULL,
        reason        text NOT NULL,
        targets       jsonb NOT NULL,
        actions       jsonb NOT NULL,
        requested_by  text NOT NULL,
        requested_at  timestamptz NOT NULL,
        expires_at    timestamptz NOT NULL,
        status        text NOT NULL CHECK (status IN
                      ('requested', 'dry_run', 'approved', 'applied', 'rejected', 'expired')),
        plan          jsonb,
        dry_run_by    text,
        approved_by   text,
        closed_by     text,
        close_reason  text,
        changed_at    timestamptz NOT NULL,
        position      bigint NOT NULL
    );
    CREATE INDEX patch_by_status ON patch (status, patch_id);
    CREATE TABLE patch_step (
        patch_id   uuid NOT NULL,
        position   bigint NOT NULL,
        at         timestamptz NOT NULL,
        event_type text NOT NULL,
        actor_id   text NOT NULL,
        detail     jsonb NOT NULL,
        PRIMARY KEY (patch_id, position)
    );
    CREATE TABLE patch_effect (
        patch_id   uuid NOT NULL,
        position   bigint NOT NULL,
        at         timestamptz NOT NULL,
        stream_id  text NOT NULL,
        event_type text NOT NULL,
        PRIMARY KEY (patch_id, position)
    );",
];

text_enum!(
    /// Where a patch stands.
    PatchStatus {
        Requested => "requested",
        DryRun => "dry_run",
        Approved => "approved",
        Applied => "applied",
        Rejected => "rejected",
        Expired => "expired",
    }
);

fn action_json(a: &PatchAction) -> Value {
    match a {
        PatchAction::InvalidatePpid { ppid, reason } => {
            json!({ "action": "invalidate_ppid", "ppid": ppid.as_str(), "reason": reason })
        }
        PatchAction::UnlinkPaymentService {
            program,
            subject,
            reason,
        } => json!({
            "action": "unlink_payment_service",
            "program": program.as_str(),
            "subject": subject.0,
            "reason": reason,
        }),
        PatchAction::CorrectReviewOutcome {
            program,
            subject,
            outcome,
            reason,
        } => json!({
            "action": "correct_review_outcome",
            "program": program.as_str(),
            "subject": subject.0,
            "outcome": outcome_json(outcome),
            "reason": reason,
        }),
    }
}

/// The planned appends as JSON; each payload is embedded as JSON (it is JSON text in the log).
fn plan_json(plan: &[PlannedAppend]) -> Value {
    Value::Array(
        plan.iter()
            .map(|a| {
                json!({
                    "stream": a.stream,
                    "expected_version": a.expected_version,
                    "events": a.events.iter().map(|e| json!({
                        "event_id": e.event_id,
                        "event_type": e.event_type,
                        "schema_version": e.schema_version,
                        "payload": serde_json::from_str::<Value>(&e.payload)
                            .unwrap_or_else(|_| Value::String(e.payload.clone())),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

impl Projection for Patches {
    fn name(&self) -> &'static str {
        "patches"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        // Patch effects land on these streams (the compensations a patch can make).
        &[
            Patch::CATEGORY,
            PpidAggregate::CATEGORY,
            Subject::CATEGORY,
            Application::CATEGORY,
        ]
    }
    fn source(&self) -> &'static str {
        include_str!("patches.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        let at = Param::Time(e.envelope.recorded_at);
        let pos = Param::I64(position(&e)?);
        let AnyEvent::Patch(event) = e.event else {
            // A compensating event elsewhere in the log: part of its patch's outcome.
            if let Some(patch_id) = e.envelope.metadata.patch_id {
                out.push(Change::new(
                    "INSERT INTO patch_effect (patch_id, position, at, stream_id, event_type) \
                     VALUES ($1, $2, $3, $4, $5)",
                    vec![
                        patch_id.into(),
                        pos,
                        at,
                        e.envelope.stream_id.to_string().into(),
                        e.envelope.event_type.as_str().into(),
                    ],
                ));
            }
            return Ok(());
        };
        let id = Uuid::parse_str(&stream_id(&e)).map_err(|_| {
            ApplyError::Inconsistent(format!("patch stream {}", e.envelope.stream_id))
        })?;
        let status = |s: PatchStatus, by: &str, reason: Option<&String>, column: &'static str| {
            Change::new(
                column,
                vec![
                    Param::Uuid(id),
                    s.as_str().into(),
                    by.into(),
                    reason.cloned().into(),
                    at.clone(),
                    pos.clone(),
                ],
            )
        };
        const CLOSE: &str = checked!(
            "UPDATE patch SET status = $2, closed_by = $3, close_reason = $4, \
                             changed_at = $5, position = $6 WHERE patch_id = $1",
            "patch"
        );
        let detail = match event {
            PatchEvent::Requested {
                patch_id,
                ticket_id,
                reason,
                targets,
                actions,
                requested_by,
                expires_at,
            } => {
                out.push(Change::new(
                    "INSERT INTO patch (patch_id, ticket_id, reason, targets, actions, \
                     requested_by, requested_at, expires_at, status, changed_at, position) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'requested', $7, $9)",
                    vec![
                        (*patch_id).into(),
                        ticket_id.as_str().into(),
                        reason.as_str().into(),
                        json!(targets).into(),
                        Value::Array(actions.iter().map(action_json).collect()).into(),
                        requested_by.as_str().into(),
                        at.clone(),
                        (*expires_at).into(),
                        pos.clone(),
                    ],
                ));
                json!({ "ticket_id": ticket_id, "reason": reason, "expires_at": expires_at })
            }
            PatchEvent::DryRunRecorded { plan, by } => {
                let plan = plan_json(plan);
                out.push(Change::new(
                    checked!(
                        "UPDATE patch SET status = 'dry_run', plan = $2, dry_run_by = $3, \
                     changed_at = $4, position = $5 WHERE patch_id = $1",
                        "patch"
                    ),
                    vec![
                        id.into(),
                        plan.clone().into(),
                        by.as_str().into(),
                        at.clone(),
                        pos.clone(),
                    ],
                ));
                json!({ "by": by, "plan": plan })
            }
            PatchEvent::Approved { by } => {
                out.push(Change::new(
                    checked!(
                        "UPDATE patch SET status = 'approved', approved_by = $2, changed_at = $3, \
                     position = $4 WHERE patch_id = $1",
                        "patch"
                    ),
                    vec![id.into(), by.as_str().into(), at.clone(), pos.clone()],
                ));
                json!({ "by": by })
            }
            PatchEvent::Rejected { by, reason } => {
                out.push(status(PatchStatus::Rejected, by, Some(reason), CLOSE));
                json!({ "by": by, "reason": reason })
            }
            PatchEvent::Applied { by } => {
                out.push(status(PatchStatus::Applied, by, None, CLOSE));
                json!({ "by": by })
            }
            PatchEvent::Expired => {
                let by = e.envelope.metadata.actor_id.as_str();
                out.push(status(PatchStatus::Expired, by, None, CLOSE));
                json!({})
            }
        };
        out.push(Change::new(
            "INSERT INTO patch_step (patch_id, position, at, event_type, actor_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                id.into(),
                pos,
                at,
                e.envelope.event_type.as_str().into(),
                e.envelope.metadata.actor_id.as_str().into(),
                detail.into(),
            ],
        ));
        Ok(())
    }
}

/// A patch's current record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchView {
    pub patch_id: Uuid,
    pub ticket_id: String,
    pub reason: String,
    pub targets: Value,
    pub actions: Value,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub status: PatchStatus,
    /// The dry-run's exact planned appends (None before the dry-run).
    pub plan: Option<Value>,
    pub dry_run_by: Option<String>,
    pub approved_by: Option<String>,
    /// Who applied, rejected or expired it, and why (rejection).
    pub closed_by: Option<String>,
    pub close_reason: Option<String>,
    pub changed_at: DateTime<Utc>,
    pub position: i64,
}

/// One step of a patch's workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchStep {
    pub position: i64,
    pub at: DateTime<Utc>,
    pub event_type: String,
    pub actor_id: String,
    pub detail: Value,
}

/// One event the applied patch appended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchEffect {
    pub position: i64,
    pub at: DateTime<Utc>,
    pub stream_id: String,
    pub event_type: String,
}

/// A patch with its workflow and its effects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchHistory {
    pub patch: PatchView,
    pub steps: Vec<PatchStep>,
    pub effects: Vec<PatchEffect>,
}

const COLUMNS: &str = "patch_id, ticket_id, reason, targets, actions, requested_by, requested_at, \
     expires_at, status, plan, dry_run_by, approved_by, closed_by, close_reason, changed_at, \
     position";

fn view(r: &Row) -> Result<PatchView, QueryError> {
    Ok(PatchView {
        patch_id: r.try_get(0)?,
        ticket_id: r.try_get(1)?,
        reason: r.try_get(2)?,
        targets: r.try_get(3)?,
        actions: r.try_get(4)?,
        requested_by: r.try_get(5)?,
        requested_at: r.try_get(6)?,
        expires_at: r.try_get(7)?,
        status: PatchStatus::parse(r.try_get(8)?)?,
        plan: r.try_get(9)?,
        dry_run_by: r.try_get(10)?,
        approved_by: r.try_get(11)?,
        closed_by: r.try_get(12)?,
        close_reason: r.try_get(13)?,
        changed_at: r.try_get(14)?,
        position: r.try_get(15)?,
    })
}

/// A patch with its whole history (steps and effects are bounded: a patch has at most six
/// workflow events and touches at most `MAX_PATCH_TARGETS` streams, a few events each).
pub async fn patch(
    client: &impl GenericClient,
    schema_name: &str,
    patch_id: Uuid,
) -> Result<Option<PatchHistory>, QueryError> {
    let s = schema(schema_name)?;
    let Some(row) = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM {s}.patch WHERE patch_id = $1"),
            &[&patch_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let steps = client
        .query(
            &format!(
                "SELECT position, at, event_type, actor_id, detail FROM {s}.patch_step \
                 WHERE patch_id = $1 ORDER BY position"
            ),
            &[&patch_id],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(PatchStep {
                position: r.try_get(0)?,
                at: r.try_get(1)?,
                event_type: r.try_get(2)?,
                actor_id: r.try_get(3)?,
                detail: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    let effects = client
        .query(
            &format!(
                "SELECT position, at, stream_id, event_type FROM {s}.patch_effect \
                 WHERE patch_id = $1 ORDER BY position"
            ),
            &[&patch_id],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(PatchEffect {
                position: r.try_get(0)?,
                at: r.try_get(1)?,
                stream_id: r.try_get(2)?,
                event_type: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    Ok(Some(PatchHistory {
        patch: view(&row)?,
        steps,
        effects,
    }))
}

/// Patches by id, optionally of one status.
pub async fn list(
    client: &impl GenericClient,
    schema_name: &str,
    status: Option<PatchStatus>,
    page: &PageRequest,
) -> Result<Page<PatchView>, QueryError> {
    let s = schema(schema_name)?;
    let after = page.after(1)?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {s}.patch WHERE ($1::text IS NULL OR status = $1) \
                 AND patch_id::text > $2 ORDER BY patch_id::text LIMIT $3"
            ),
            &[&status.map(PatchStatus::as_str), &after[0], &page.fetch()],
        )
        .await?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(items, |p| vec![p.patch_id.to_string()]))
}
