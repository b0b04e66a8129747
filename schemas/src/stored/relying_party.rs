//! Relying party events.
//!
//! Version history of `RelyingPartyRegistered`:
//! - v1: `{relying_party_id, code, name, public_jwk}`. The first platform served only
//!   municipalities' citizen-card systems, so there was no `kind`.
//! - v2: adds `kind`. **Upcast default: a v1 registration is a `municipality`**, which is what
//!   every v1 registration was.

use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile,
};
use mykey_domain::relying_party::{RelyingParty, RelyingPartyEvent, RpKind};
use mykey_domain::RelyingPartyId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoredRpKind {
    Municipality,
    PaymentServiceProvider,
    LibrarySystem,
    PrivateBusiness,
}

impl From<RpKind> for StoredRpKind {
    fn from(k: RpKind) -> Self {
        match k {
            RpKind::Municipality => StoredRpKind::Municipality,
            RpKind::PaymentServiceProvider => StoredRpKind::PaymentServiceProvider,
            RpKind::LibrarySystem => StoredRpKind::LibrarySystem,
            RpKind::PrivateBusiness => StoredRpKind::PrivateBusiness,
        }
    }
}

impl From<StoredRpKind> for RpKind {
    fn from(k: StoredRpKind) -> Self {
        match k {
            StoredRpKind::Municipality => RpKind::Municipality,
            StoredRpKind::PaymentServiceProvider => RpKind::PaymentServiceProvider,
            StoredRpKind::LibrarySystem => RpKind::LibrarySystem,
            StoredRpKind::PrivateBusiness => RpKind::PrivateBusiness,
        }
    }
}

/// Legacy form: no `kind` (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RelyingPartyRegisteredV1 {
    pub relying_party_id: String,
    pub code: String,
    pub name: String,
    pub public_jwk: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RelyingPartyRegisteredV2 {
    pub relying_party_id: String,
    pub code: String,
    pub name: String,
    pub kind: StoredRpKind,
    pub public_jwk: Value,
}

/// The documented default for the field v2 added.
pub const V1_DEFAULT_KIND: StoredRpKind = StoredRpKind::Municipality;

impl From<RelyingPartyRegisteredV1> for RelyingPartyRegisteredV2 {
    fn from(v1: RelyingPartyRegisteredV1) -> Self {
        RelyingPartyRegisteredV2 {
            relying_party_id: v1.relying_party_id,
            code: v1.code,
            name: v1.name,
            kind: V1_DEFAULT_KIND,
            public_jwk: v1.public_jwk,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RelyingPartyKeyRotatedV1 {
    pub public_jwk: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RelyingPartySuspendedV1 {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RelyingPartyResumedV1 {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RelyingPartyRetiredV1 {
    pub reason: String,
}

stored! {
    RelyingPartyRegisteredV1 => "RelyingPartyRegistered" v 1,
    RelyingPartyRegisteredV2 => "RelyingPartyRegistered" v 2,
    RelyingPartyKeyRotatedV1 => "RelyingPartyKeyRotated" v 1,
    RelyingPartySuspendedV1 => "RelyingPartySuspended" v 1,
    RelyingPartyResumedV1 => "RelyingPartyResumed" v 1,
    RelyingPartyRetiredV1 => "RelyingPartyRetired" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<RelyingPartyRegisteredV1>(),
        schema_file::<RelyingPartyRegisteredV2>(),
        schema_file::<RelyingPartyKeyRotatedV1>(),
        schema_file::<RelyingPartySuspendedV1>(),
        schema_file::<RelyingPartyResumedV1>(),
        schema_file::<RelyingPartyRetiredV1>(),
    ]
}

fn registered(v2: RelyingPartyRegisteredV2) -> Result<RelyingPartyEvent, SchemaError> {
    Ok(RelyingPartyEvent::Registered {
        id: RelyingPartyId::parse(&v2.relying_party_id)
            .map_err(invalid::<RelyingPartyRegisteredV2>)?,
        code: v2.code,
        name: v2.name,
        kind: v2.kind.into(),
        public_jwk: v2.public_jwk,
    })
}

impl EventCodec for RelyingParty {
    type DomainEvent = RelyingPartyEvent;

    fn encode(event: &RelyingPartyEvent) -> Result<Encoded, SchemaError> {
        use RelyingPartyEvent as E;
        match event {
            E::Registered {
                id,
                code,
                name,
                kind,
                public_jwk,
            } => encode(&RelyingPartyRegisteredV2 {
                relying_party_id: id.to_string(),
                code: code.clone(),
                name: name.clone(),
                kind: (*kind).into(),
                public_jwk: public_jwk.clone(),
            }),
            E::KeyRotated { public_jwk } => encode(&RelyingPartyKeyRotatedV1 {
                public_jwk: public_jwk.clone(),
            }),
            E::Suspended { reason } => encode(&RelyingPartySuspendedV1 {
                reason: reason.clone(),
            }),
            E::Resumed => encode(&RelyingPartyResumedV1 {}),
            E::Retired { reason } => encode(&RelyingPartyRetiredV1 {
                reason: reason.clone(),
            }),
        }
    }

    fn decode(
        event_type: &str,
        version: u32,
        payload: &str,
    ) -> Result<RelyingPartyEvent, SchemaError> {
        use RelyingPartyEvent as E;
        match (event_type, version) {
            ("RelyingPartyRegistered", 1) => {
                registered(parse::<RelyingPartyRegisteredV1>(payload)?.into())
            }
            ("RelyingPartyRegistered", 2) => {
                registered(parse::<RelyingPartyRegisteredV2>(payload)?)
            }
            ("RelyingPartyKeyRotated", 1) => Ok(E::KeyRotated {
                public_jwk: parse::<RelyingPartyKeyRotatedV1>(payload)?.public_jwk,
            }),
            ("RelyingPartySuspended", 1) => Ok(E::Suspended {
                reason: parse::<RelyingPartySuspendedV1>(payload)?.reason,
            }),
            ("RelyingPartyResumed", 1) => {
                parse::<RelyingPartyResumedV1>(payload)?;
                Ok(E::Resumed)
            }
            ("RelyingPartyRetired", 1) => Ok(E::Retired {
                reason: parse::<RelyingPartyRetiredV1>(payload)?.reason,
            }),
            _ => Err(unknown(event_type, version)),
        }
    }
}
