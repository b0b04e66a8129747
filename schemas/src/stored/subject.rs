//! Subject events.

use super::certificate::{cert, StoredCertificate};
use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile, StoredEvent,
};
use mykey_domain::subject::{ReleaseReason, Subject, SubjectEvent};
use mykey_domain::{Ppid, RelyingPartyId, SubjectId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubjectCreatedV1 {
    pub subject_id: Uuid,
    pub certificate: StoredCertificate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubjectCertificateAddedV1 {
    pub certificate: StoredCertificate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubjectPpidAssignedV1 {
    pub relying_party_id: String,
    pub ppid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoredReleaseReason {
    Revoked,
    Invalidated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubjectPpidReleasedV1 {
    pub relying_party_id: String,
    pub ppid: String,
    pub reason: StoredReleaseReason,
}

stored! {
    SubjectCreatedV1 => "SubjectCreated" v 1,
    SubjectCertificateAddedV1 => "SubjectCertificateAdded" v 1,
    SubjectPpidAssignedV1 => "SubjectPpidAssigned" v 1,
    SubjectPpidReleasedV1 => "SubjectPpidReleased" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<SubjectCreatedV1>(),
        schema_file::<SubjectCertificateAddedV1>(),
        schema_file::<SubjectPpidAssignedV1>(),
        schema_file::<SubjectPpidReleasedV1>(),
    ]
}

fn ids<T: StoredEvent>(rp: &str, ppid: &str) -> Result<(RelyingPartyId, Ppid), SchemaError> {
    Ok((
        RelyingPartyId::parse(rp).map_err(invalid::<T>)?,
        Ppid::parse(ppid).map_err(invalid::<T>)?,
    ))
}

impl EventCodec for Subject {
    type DomainEvent = SubjectEvent;

    fn encode(event: &SubjectEvent) -> Result<Encoded, SchemaError> {
        use SubjectEvent as E;
        match event {
            E::Created {
                subject,
                certificate,
            } => encode(&SubjectCreatedV1 {
                subject_id: subject.0,
                certificate: certificate.into(),
            }),
            E::CertificateAdded { certificate } => encode(&SubjectCertificateAddedV1 {
                certificate: certificate.into(),
            }),
            E::PpidAssigned {
                relying_party,
                ppid,
            } => encode(&SubjectPpidAssignedV1 {
                relying_party_id: relying_party.to_string(),
                ppid: ppid.to_string(),
            }),
            E::PpidReleased {
                relying_party,
                ppid,
                reason,
            } => encode(&SubjectPpidReleasedV1 {
                relying_party_id: relying_party.to_string(),
                ppid: ppid.to_string(),
                reason: match reason {
                    ReleaseReason::Revoked => StoredReleaseReason::Revoked,
                    ReleaseReason::Invalidated => StoredReleaseReason::Invalidated,
                },
            }),
        }
    }

    fn decode(event_type: &str, version: u32, payload: &str) -> Result<SubjectEvent, SchemaError> {
        use SubjectEvent as E;
        match (event_type, version) {
            ("SubjectCreated", 1) => {
                let p = parse::<SubjectCreatedV1>(payload)?;
                Ok(E::Created {
                    subject: SubjectId(p.subject_id),
                    certificate: cert::<SubjectCreatedV1>(&p.certificate)?,
                })
            }
            ("SubjectCertificateAdded", 1) => {
                let p = parse::<SubjectCertificateAddedV1>(payload)?;
                Ok(E::CertificateAdded {
                    certificate: cert::<SubjectCertificateAddedV1>(&p.certificate)?,
                })
            }
            ("SubjectPpidAssigned", 1) => {
                let p = parse::<SubjectPpidAssignedV1>(payload)?;
                let (relying_party, ppid) =
                    ids::<SubjectPpidAssignedV1>(&p.relying_party_id, &p.ppid)?;
                Ok(E::PpidAssigned {
                    relying_party,
                    ppid,
                })
            }
            ("SubjectPpidReleased", 1) => {
                let p = parse::<SubjectPpidReleasedV1>(payload)?;
                let (relying_party, ppid) =
                    ids::<SubjectPpidReleasedV1>(&p.relying_party_id, &p.ppid)?;
                Ok(E::PpidReleased {
                    relying_party,
                    ppid,
                    reason: match p.reason {
                        StoredReleaseReason::Revoked => ReleaseReason::Revoked,
                        StoredReleaseReason::Invalidated => ReleaseReason::Invalidated,
                    },
                })
            }
            _ => Err(unknown(event_type, version)),
        }
    }
}
