//! PPID events.

use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile,
};
use mykey_domain::ppid::{PpidAggregate, PpidEvent, RevokedBy};
use mykey_domain::{Ppid, RelyingPartyId, SubjectId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PpidIssuedV1 {
    pub ppid: String,
    pub subject_id: Uuid,
    pub relying_party_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoredRevokedBy {
    RelyingParty,
    Citizen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PpidRevokedV1 {
    pub by: StoredRevokedBy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PpidInvalidatedV1 {
    pub patch_id: Uuid,
    pub reason: String,
}

stored! {
    PpidIssuedV1 => "PpidIssued" v 1,
    PpidRevokedV1 => "PpidRevoked" v 1,
    PpidInvalidatedV1 => "PpidInvalidated" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<PpidIssuedV1>(),
        schema_file::<PpidRevokedV1>(),
        schema_file::<PpidInvalidatedV1>(),
    ]
}

impl EventCodec for PpidAggregate {
    type DomainEvent = PpidEvent;

    fn encode(event: &PpidEvent) -> Result<Encoded, SchemaError> {
        match event {
            PpidEvent::Issued {
                ppid,
                subject,
                relying_party,
            } => encode(&PpidIssuedV1 {
                ppid: ppid.to_string(),
                subject_id: subject.0,
                relying_party_id: relying_party.to_string(),
            }),
            PpidEvent::Revoked { by } => encode(&PpidRevokedV1 {
                by: match by {
                    RevokedBy::RelyingParty => StoredRevokedBy::RelyingParty,
                    RevokedBy::Citizen => StoredRevokedBy::Citizen,
                },
            }),
            PpidEvent::Invalidated { patch_id, reason } => encode(&PpidInvalidatedV1 {
                patch_id: *patch_id,
                reason: reason.clone(),
            }),
        }
    }

    fn decode(event_type: &str, version: u32, payload: &str) -> Result<PpidEvent, SchemaError> {
        match (event_type, version) {
            ("PpidIssued", 1) => {
                let p = parse::<PpidIssuedV1>(payload)?;
                Ok(PpidEvent::Issued {
                    ppid: Ppid::parse(&p.ppid).map_err(invalid::<PpidIssuedV1>)?,
                    subject: SubjectId(p.subject_id),
                    relying_party: RelyingPartyId::parse(&p.relying_party_id)
                        .map_err(invalid::<PpidIssuedV1>)?,
                })
            }
            ("PpidRevoked", 1) => Ok(PpidEvent::Revoked {
                by: match parse::<PpidRevokedV1>(payload)?.by {
                    StoredRevokedBy::RelyingParty => RevokedBy::RelyingParty,
                    StoredRevokedBy::Citizen => RevokedBy::Citizen,
                },
            }),
            ("PpidInvalidated", 1) => {
                let p = parse::<PpidInvalidatedV1>(payload)?;
                Ok(PpidEvent::Invalidated {
                    patch_id: p.patch_id,
                    reason: p.reason,
                })
            }
            _ => Err(unknown(event_type, version)),
        }
    }
}
