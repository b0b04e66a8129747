//! Data patch events. The dry-run event stores the exact stored events the patch will
//! append (type, version, payload text, event id) and the stream versions it expects.

use super::application::StoredOutcome;
use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile, StoredEvent,
};
use chrono::{DateTime, Utc};
use mykey_domain::patch::{Patch, PatchAction, PatchEvent, PlannedAppend, PlannedEvent};
use mykey_domain::{Ppid, ProgramId, SubjectId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum StoredPatchAction {
    InvalidatePpid {
        ppid: String,
        reason: String,
    },
    UnlinkPaymentService {
        program_id: String,
        subject_id: Uuid,
        reason: String,
    },
    CorrectReviewOutcome {
        program_id: String,
        subject_id: Uuid,
        outcome: StoredOutcome,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredPlannedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// The payload's exact JSON text, as it will be stored and hashed.
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredPlannedAppend {
    pub stream_id: String,
    /// 0: the stream must not exist yet.
    pub expected_version: u64,
    pub events: Vec<StoredPlannedEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchRequestedV1 {
    pub patch_id: Uuid,
    pub ticket_id: String,
    pub reason: String,
    pub target_streams: Vec<String>,
    pub actions: Vec<StoredPatchAction>,
    pub requested_by: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchDryRunRecordedV1 {
    pub plan: Vec<StoredPlannedAppend>,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchApprovedV1 {
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchRejectedV1 {
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchAppliedV1 {
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchExpiredV1 {}

stored! {
    PatchRequestedV1 => "PatchRequested" v 1,
    PatchDryRunRecordedV1 => "PatchDryRunRecorded" v 1,
    PatchApprovedV1 => "PatchApproved" v 1,
    PatchRejectedV1 => "PatchRejected" v 1,
    PatchAppliedV1 => "PatchApplied" v 1,
    PatchExpiredV1 => "PatchExpired" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<PatchRequestedV1>(),
        schema_file::<PatchDryRunRecordedV1>(),
        schema_file::<PatchApprovedV1>(),
        schema_file::<PatchRejectedV1>(),
        schema_file::<PatchAppliedV1>(),
        schema_file::<PatchExpiredV1>(),
    ]
}

fn action_out(a: &PatchAction) -> StoredPatchAction {
    match a {
        PatchAction::InvalidatePpid { ppid, reason } => StoredPatchAction::InvalidatePpid {
            ppid: ppid.to_string(),
            reason: reason.clone(),
        },
        PatchAction::UnlinkPaymentService {
            program,
            subject,
            reason,
        } => StoredPatchAction::UnlinkPaymentService {
            program_id: program.to_string(),
            subject_id: subject.0,
            reason: reason.clone(),
        },
        PatchAction::CorrectReviewOutcome {
            program,
            subject,
            outcome,
            reason,
        } => StoredPatchAction::CorrectReviewOutcome {
            program_id: program.to_string(),
            subject_id: subject.0,
            outcome: outcome.into(),
            reason: reason.clone(),
        },
    }
}

fn action_in<T: StoredEvent>(a: StoredPatchAction) -> Result<PatchAction, SchemaError> {
    let program = |s: &str| ProgramId::parse(s).map_err(invalid::<T>);
    Ok(match a {
        StoredPatchAction::InvalidatePpid { ppid, reason } => PatchAction::InvalidatePpid {
            ppid: Ppid::parse(&ppid).map_err(invalid::<T>)?,
            reason,
        },
        StoredPatchAction::UnlinkPaymentService {
            program_id,
            subject_id,
            reason,
        } => PatchAction::UnlinkPaymentService {
            program: program(&program_id)?,
            subject: SubjectId(subject_id),
            reason,
        },
        StoredPatchAction::CorrectReviewOutcome {
            program_id,
            subject_id,
            outcome,
            reason,
        } => PatchAction::CorrectReviewOutcome {
            program: program(&program_id)?,
            subject: SubjectId(subject_id),
            outcome: outcome.into(),
            reason,
        },
    })
}

fn plan_out(plan: &[PlannedAppend]) -> Vec<StoredPlannedAppend> {
    plan.iter()
        .map(|a| StoredPlannedAppend {
            stream_id: a.stream.clone(),
            expected_version: a.expected_version,
            events: a
                .events
                .iter()
                .map(|e| StoredPlannedEvent {
                    event_id: e.event_id,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    payload: e.payload.clone(),
                })
                .collect(),
        })
        .collect()
}

fn plan_in(plan: Vec<StoredPlannedAppend>) -> Vec<PlannedAppend> {
    plan.into_iter()
        .map(|a| PlannedAppend {
            stream: a.stream_id,
            expected_version: a.expected_version,
            events: a
                .events
                .into_iter()
                .map(|e| PlannedEvent {
                    event_id: e.event_id,
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    payload: e.payload,
                })
                .collect(),
        })
        .collect()
}

impl EventCodec for Patch {
    type DomainEvent = PatchEvent;

    fn encode(event: &PatchEvent) -> Result<Encoded, SchemaError> {
        use PatchEvent as E;
        match event {
            E::Requested {
                patch_id,
                ticket_id,
                reason,
                targets,
                actions,
                requested_by,
                expires_at,
            } => encode(&PatchRequestedV1 {
                patch_id: *patch_id,
                ticket_id: ticket_id.clone(),
                reason: reason.clone(),
                target_streams: targets.clone(),
                actions: actions.iter().map(action_out).collect(),
                requested_by: requested_by.clone(),
                expires_at: *expires_at,
            }),
            E::DryRunRecorded { plan, by } => encode(&PatchDryRunRecordedV1 {
                plan: plan_out(plan),
                by: by.clone(),
            }),
            E::Approved { by } => encode(&PatchApprovedV1 { by: by.clone() }),
            E::Rejected { by, reason } => encode(&PatchRejectedV1 {
                by: by.clone(),
                reason: reason.clone(),
            }),
            E::Applied { by } => encode(&PatchAppliedV1 { by: by.clone() }),
            E::Expired => encode(&PatchExpiredV1 {}),
        }
    }

    fn decode(event_type: &str, version: u32, payload: &str) -> Result<PatchEvent, SchemaError> {
        use PatchEvent as E;
        match (event_type, version) {
            ("PatchRequested", 1) => {
                let p = parse::<PatchRequestedV1>(payload)?;
                Ok(E::Requested {
                    patch_id: p.patch_id,
                    ticket_id: p.ticket_id,
                    reason: p.reason,
                    targets: p.target_streams,
                    actions: p
                        .actions
                        .into_iter()
                        .map(action_in::<PatchRequestedV1>)
                        .collect::<Result<_, _>>()?,
                    requested_by: p.requested_by,
                    expires_at: p.expires_at,
                })
            }
            ("PatchDryRunRecorded", 1) => {
                let p = parse::<PatchDryRunRecordedV1>(payload)?;
                Ok(E::DryRunRecorded {
                    plan: plan_in(p.plan),
                    by: p.by,
                })
            }
            ("PatchApproved", 1) => Ok(E::Approved {
                by: parse::<PatchApprovedV1>(payload)?.by,
            }),
            ("PatchRejected", 1) => {
                let p = parse::<PatchRejectedV1>(payload)?;
                Ok(E::Rejected {
                    by: p.by,
                    reason: p.reason,
                })
            }
            ("PatchApplied", 1) => Ok(E::Applied {
                by: parse::<PatchAppliedV1>(payload)?.by,
            }),
            ("PatchExpired", 1) => {
                parse::<PatchExpiredV1>(payload)?;
                Ok(E::Expired)
            }
            _ => Err(unknown(event_type, version)),
        }
    }
}
