//! Point application events.

use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile, StoredEvent,
};
use mykey_domain::application::{Application, ApplicationEvent, ReviewOutcome};
use mykey_domain::{ProgramId, RelyingPartyId, SubjectId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A review outcome: `{"decision":"approved","points":5000}` or
/// `{"decision":"rejected","reason":"..."}`. Points are integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum StoredOutcome {
    Approved { points: u64 },
    Rejected { reason: String },
}

impl From<&ReviewOutcome> for StoredOutcome {
    fn from(o: &ReviewOutcome) -> Self {
        match o {
            ReviewOutcome::Approved { points } => StoredOutcome::Approved { points: *points },
            ReviewOutcome::Rejected { reason } => StoredOutcome::Rejected {
                reason: reason.clone(),
            },
        }
    }
}

impl From<StoredOutcome> for ReviewOutcome {
    fn from(o: StoredOutcome) -> Self {
        match o {
            StoredOutcome::Approved { points } => ReviewOutcome::Approved { points },
            StoredOutcome::Rejected { reason } => ReviewOutcome::Rejected { reason },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationSubmittedV1 {
    pub subject_id: Uuid,
    pub program_id: String,
    pub municipality_id: String,
    pub payment_service_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentServiceLinkedV1 {
    pub payment_service_id: String,
    pub link_ref: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReviewOutcomeRecordedV1 {
    pub outcome: StoredOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PointsGrantedV1 {
    pub points: u64,
    pub payment_service_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentServiceUnlinkedV1 {
    pub reason: String,
    /// Present when a data patch unlinked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReviewOutcomeCorrectedV1 {
    pub previous: StoredOutcome,
    pub outcome: StoredOutcome,
    pub reversal_owed_points: u64,
    pub patch_id: Uuid,
    pub reason: String,
}

/// Points of an owed reversal (after a corrected review) that the payment service took back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReversalPaidV1 {
    pub points: u64,
    pub payment_service_id: String,
}

/// The payment service could not grant the approved points (the application still awaits a
/// grant; the provider may try again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GrantFailedV1 {
    pub reason: String,
    pub payment_service_id: String,
}

stored! {
    ApplicationSubmittedV1 => "ApplicationSubmitted" v 1,
    PaymentServiceLinkedV1 => "PaymentServiceLinked" v 1,
    ReviewOutcomeRecordedV1 => "ReviewOutcomeRecorded" v 1,
    PointsGrantedV1 => "PointsGranted" v 1,
    PaymentServiceUnlinkedV1 => "PaymentServiceUnlinked" v 1,
    ReviewOutcomeCorrectedV1 => "ReviewOutcomeCorrected" v 1,
    ReversalPaidV1 => "ReversalPaid" v 1,
    GrantFailedV1 => "GrantFailed" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<ApplicationSubmittedV1>(),
        schema_file::<PaymentServiceLinkedV1>(),
        schema_file::<ReviewOutcomeRecordedV1>(),
        schema_file::<PointsGrantedV1>(),
        schema_file::<PaymentServiceUnlinkedV1>(),
        schema_file::<ReviewOutcomeCorrectedV1>(),
        schema_file::<ReversalPaidV1>(),
        schema_file::<GrantFailedV1>(),
    ]
}

fn rp<T: StoredEvent>(s: &str) -> Result<RelyingPartyId, SchemaError> {
    RelyingPartyId::parse(s).map_err(invalid::<T>)
}

impl EventCodec for Application {
    type DomainEvent = ApplicationEvent;

    fn encode(event: &ApplicationEvent) -> Result<Encoded, SchemaError> {
        use ApplicationEvent as E;
        match event {
            E::Submitted {
                subject,
                program,
                municipality,
                payment_service,
            } => encode(&ApplicationSubmittedV1 {
                subject_id: subject.0,
                program_id: program.to_string(),
                municipality_id: municipality.to_string(),
                payment_service_id: payment_service.to_string(),
            }),
            E::PaymentServiceLinked {
                payment_service,
                link_ref,
            } => encode(&PaymentServiceLinkedV1 {
                payment_service_id: payment_service.to_string(),
                link_ref: link_ref.clone(),
            }),
            E::ReviewRecorded { outcome } => encode(&ReviewOutcomeRecordedV1 {
                outcome: outcome.into(),
            }),
            E::PointsGranted {
                points,
                payment_service,
            } => encode(&PointsGrantedV1 {
                points: *points,
                payment_service_id: payment_service.to_string(),
            }),
            E::PaymentServiceUnlinked { reason, patch_id } => encode(&PaymentServiceUnlinkedV1 {
                reason: reason.clone(),
                patch_id: *patch_id,
            }),
            E::ReviewCorrected {
                previous,
                outcome,
                reversal_owed_points,
                patch_id,
                reason,
            } => encode(&ReviewOutcomeCorrectedV1 {
                previous: previous.into(),
                outcome: outcome.into(),
                reversal_owed_points: *reversal_owed_points,
                patch_id: *patch_id,
                reason: reason.clone(),
            }),
            E::ReversalPaid {
                points,
                payment_service,
            } => encode(&ReversalPaidV1 {
                points: *points,
                payment_service_id: payment_service.to_string(),
            }),
            E::GrantFailed {
                reason,
                payment_service,
            } => encode(&GrantFailedV1 {
                reason: reason.clone(),
                payment_service_id: payment_service.to_string(),
            }),
        }
    }

    fn decode(
        event_type: &str,
        version: u32,
        payload: &str,
    ) -> Result<ApplicationEvent, SchemaError> {
        use ApplicationEvent as E;
        match (event_type, version) {
            ("ApplicationSubmitted", 1) => {
                let p = parse::<ApplicationSubmittedV1>(payload)?;
                Ok(E::Submitted {
                    subject: SubjectId(p.subject_id),
                    program: ProgramId::parse(&p.program_id)
                        .map_err(invalid::<ApplicationSubmittedV1>)?,
                    municipality: rp::<ApplicationSubmittedV1>(&p.municipality_id)?,
                    payment_service: rp::<ApplicationSubmittedV1>(&p.payment_service_id)?,
                })
            }
            ("PaymentServiceLinked", 1) => {
                let p = parse::<PaymentServiceLinkedV1>(payload)?;
                Ok(E::PaymentServiceLinked {
                    payment_service: rp::<PaymentServiceLinkedV1>(&p.payment_service_id)?,
                    link_ref: p.link_ref,
                })
            }
            ("ReviewOutcomeRecorded", 1) => Ok(E::ReviewRecorded {
                outcome: parse::<ReviewOutcomeRecordedV1>(payload)?.outcome.into(),
            }),
            ("PointsGranted", 1) => {
                let p = parse::<PointsGrantedV1>(payload)?;
                Ok(E::PointsGranted {
                    points: p.points,
                    payment_service: rp::<PointsGrantedV1>(&p.payment_service_id)?,
                })
            }
            ("PaymentServiceUnlinked", 1) => {
                let p = parse::<PaymentServiceUnlinkedV1>(payload)?;
                Ok(E::PaymentServiceUnlinked {
                    reason: p.reason,
                    patch_id: p.patch_id,
                })
            }
            ("ReviewOutcomeCorrected", 1) => {
                let p = parse::<ReviewOutcomeCorrectedV1>(payload)?;
                Ok(E::ReviewCorrected {
                    previous: p.previous.into(),
                    outcome: p.outcome.into(),
                    reversal_owed_points: p.reversal_owed_points,
                    patch_id: p.patch_id,
                    reason: p.reason,
                })
            }
            ("ReversalPaid", 1) => {
                let p = parse::<ReversalPaidV1>(payload)?;
                Ok(E::ReversalPaid {
                    points: p.points,
                    payment_service: rp::<ReversalPaidV1>(&p.payment_service_id)?,
                })
            }
            ("GrantFailed", 1) => {
                let p = parse::<GrantFailedV1>(payload)?;
                Ok(E::GrantFailed {
                    reason: p.reason,
                    payment_service: rp::<GrantFailedV1>(&p.payment_service_id)?,
                })
            }
            _ => Err(unknown(event_type, version)),
        }
    }
}
