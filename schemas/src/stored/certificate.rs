//! Certificate events.

use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile, StoredEvent,
};
use mykey_domain::certificate::{Certificate, CertificateEvent, CertificateRef};
use mykey_domain::SubjectId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A certificate by issuer and (normalised, lowercase hex) serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredCertificate {
    pub issuer: String,
    pub serial: String,
}

impl From<&CertificateRef> for StoredCertificate {
    fn from(c: &CertificateRef) -> Self {
        StoredCertificate {
            issuer: c.issuer().to_owned(),
            serial: c.serial().to_owned(),
        }
    }
}

pub(crate) fn cert<T: StoredEvent>(c: &StoredCertificate) -> Result<CertificateRef, SchemaError> {
    CertificateRef::new(&c.issuer, &c.serial).map_err(invalid::<T>)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateLinkedV1 {
    pub certificate: StoredCertificate,
    pub subject_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateRenewedV1 {
    pub new_certificate: StoredCertificate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateLinkedFromRenewalV1 {
    pub certificate: StoredCertificate,
    pub subject_id: Uuid,
    pub previous_certificate: StoredCertificate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateRevokedV1 {
    pub certificate: StoredCertificate,
    pub reason: String,
}

stored! {
    CertificateLinkedV1 => "CertificateLinked" v 1,
    CertificateRenewedV1 => "CertificateRenewed" v 1,
    CertificateLinkedFromRenewalV1 => "CertificateLinkedFromRenewal" v 1,
    CertificateRevokedV1 => "CertificateRevoked" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<CertificateLinkedV1>(),
        schema_file::<CertificateRenewedV1>(),
        schema_file::<CertificateLinkedFromRenewalV1>(),
        schema_file::<CertificateRevokedV1>(),
    ]
}

impl EventCodec for Certificate {
    type DomainEvent = CertificateEvent;

    fn encode(event: &CertificateEvent) -> Result<Encoded, SchemaError> {
        use CertificateEvent as E;
        match event {
            E::Linked {
                certificate,
                subject,
            } => encode(&CertificateLinkedV1 {
                certificate: certificate.into(),
                subject_id: subject.0,
            }),
            E::Renewed { new } => encode(&CertificateRenewedV1 {
                new_certificate: new.into(),
            }),
            E::LinkedFromRenewal {
                certificate,
                subject,
                previous,
            } => encode(&CertificateLinkedFromRenewalV1 {
                certificate: certificate.into(),
                subject_id: subject.0,
                previous_certificate: previous.into(),
            }),
            E::Revoked {
                certificate,
                reason,
            } => encode(&CertificateRevokedV1 {
                certificate: certificate.into(),
                reason: reason.clone(),
            }),
        }
    }

    fn decode(
        event_type: &str,
        version: u32,
        payload: &str,
    ) -> Result<CertificateEvent, SchemaError> {
        use CertificateEvent as E;
        match (event_type, version) {
            ("CertificateLinked", 1) => {
                let p = parse::<CertificateLinkedV1>(payload)?;
                Ok(E::Linked {
                    certificate: cert::<CertificateLinkedV1>(&p.certificate)?,
                    subject: SubjectId(p.subject_id),
                })
            }
            ("CertificateRenewed", 1) => {
                let p = parse::<CertificateRenewedV1>(payload)?;
                Ok(E::Renewed {
                    new: cert::<CertificateRenewedV1>(&p.new_certificate)?,
                })
            }
            ("CertificateLinkedFromRenewal", 1) => {
                let p = parse::<CertificateLinkedFromRenewalV1>(payload)?;
                Ok(E::LinkedFromRenewal {
                    certificate: cert::<CertificateLinkedFromRenewalV1>(&p.certificate)?,
                    subject: SubjectId(p.subject_id),
                    previous: cert::<CertificateLinkedFromRenewalV1>(&p.previous_certificate)?,
                })
            }
            ("CertificateRevoked", 1) => {
                let p = parse::<CertificateRevokedV1>(payload)?;
                Ok(E::Revoked {
                    certificate: cert::<CertificateRevokedV1>(&p.certificate)?,
                    reason: p.reason,
                })
            }
            _ => Err(unknown(event_type, version)),
        }
    }
}
