//! Program events.

use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile,
};
use chrono::{DateTime, Utc};
use mykey_domain::program::{Program, ProgramEvent};
use mykey_domain::{ProgramId, RelyingPartyId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgramCreatedV1 {
    pub program_id: String,
    pub municipality_id: String,
    pub name: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgramExtendedV1 {
    pub new_end: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgramPausedV1 {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgramResumedV1 {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgramClosedV1 {}

stored! {
    ProgramCreatedV1 => "ProgramCreated" v 1,
    ProgramExtendedV1 => "ProgramExtended" v 1,
    ProgramPausedV1 => "ProgramPaused" v 1,
    ProgramResumedV1 => "ProgramResumed" v 1,
    ProgramClosedV1 => "ProgramClosed" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<ProgramCreatedV1>(),
        schema_file::<ProgramExtendedV1>(),
        schema_file::<ProgramPausedV1>(),
        schema_file::<ProgramResumedV1>(),
        schema_file::<ProgramClosedV1>(),
    ]
}

impl EventCodec for Program {
    type DomainEvent = ProgramEvent;

    fn encode(event: &ProgramEvent) -> Result<Encoded, SchemaError> {
        use ProgramEvent as E;
        match event {
            E::Created {
                id,
                municipality,
                name,
                period_start,
                period_end,
            } => encode(&ProgramCreatedV1 {
                program_id: id.to_string(),
                municipality_id: municipality.to_string(),
                name: name.clone(),
                period_start: *period_start,
                period_end: *period_end,
            }),
            E::Extended { new_end } => encode(&ProgramExtendedV1 { new_end: *new_end }),
            E::Paused { reason } => encode(&ProgramPausedV1 {
                reason: reason.clone(),
            }),
            E::Resumed => encode(&ProgramResumedV1 {}),
            E::Closed => encode(&ProgramClosedV1 {}),
        }
    }

    fn decode(event_type: &str, version: u32, payload: &str) -> Result<ProgramEvent, SchemaError> {
        use ProgramEvent as E;
        match (event_type, version) {
            ("ProgramCreated", 1) => {
                let p = parse::<ProgramCreatedV1>(payload)?;
                Ok(E::Created {
                    id: ProgramId::parse(&p.program_id).map_err(invalid::<ProgramCreatedV1>)?,
                    municipality: RelyingPartyId::parse(&p.municipality_id)
                        .map_err(invalid::<ProgramCreatedV1>)?,
                    name: p.name,
                    period_start: p.period_start,
                    period_end: p.period_end,
                })
            }
            ("ProgramExtended", 1) => Ok(E::Extended {
                new_end: parse::<ProgramExtendedV1>(payload)?.new_end,
            }),
            ("ProgramPaused", 1) => Ok(E::Paused {
                reason: parse::<ProgramPausedV1>(payload)?.reason,
            }),
            ("ProgramResumed", 1) => {
                parse::<ProgramResumedV1>(payload)?;
                Ok(E::Resumed)
            }
            ("ProgramClosed", 1) => {
                parse::<ProgramClosedV1>(payload)?;
                Ok(E::Closed)
            }
            _ => Err(unknown(event_type, version)),
        }
    }
}
