//! Test card events.

use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile,
};
use chrono::{DateTime, Utc};
use mykey_domain::test_card::{Borrower, BorrowerKind, TestCard, TestCardEvent};
use mykey_domain::TestCardId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoredBorrowerKind {
    Vendor,
    Municipality,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestCardRegisteredV1 {
    pub card_id: String,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestCardLentV1 {
    pub borrower_kind: StoredBorrowerKind,
    pub borrower_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestCardReturnedV1 {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestCardInventoryCheckedV1 {
    pub checked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestCardReportedLostV1 {
    pub note: String,
}

stored! {
    TestCardRegisteredV1 => "TestCardRegistered" v 1,
    TestCardLentV1 => "TestCardLent" v 1,
    TestCardReturnedV1 => "TestCardReturned" v 1,
    TestCardInventoryCheckedV1 => "TestCardInventoryChecked" v 1,
    TestCardReportedLostV1 => "TestCardReportedLost" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<TestCardRegisteredV1>(),
        schema_file::<TestCardLentV1>(),
        schema_file::<TestCardReturnedV1>(),
        schema_file::<TestCardInventoryCheckedV1>(),
        schema_file::<TestCardReportedLostV1>(),
    ]
}

impl EventCodec for TestCard {
    type DomainEvent = TestCardEvent;

    fn encode(event: &TestCardEvent) -> Result<Encoded, SchemaError> {
        use TestCardEvent as E;
        match event {
            E::Registered { id, label } => encode(&TestCardRegisteredV1 {
                card_id: id.to_string(),
                label: label.clone(),
            }),
            E::Lent { borrower } => encode(&TestCardLentV1 {
                borrower_kind: match borrower.kind {
                    BorrowerKind::Vendor => StoredBorrowerKind::Vendor,
                    BorrowerKind::Municipality => StoredBorrowerKind::Municipality,
                },
                borrower_name: borrower.name.clone(),
            }),
            E::Returned => encode(&TestCardReturnedV1 {}),
            E::InventoryChecked { checked_at } => encode(&TestCardInventoryCheckedV1 {
                checked_at: *checked_at,
            }),
            E::ReportedLost { note } => encode(&TestCardReportedLostV1 { note: note.clone() }),
        }
    }

    fn decode(event_type: &str, version: u32, payload: &str) -> Result<TestCardEvent, SchemaError> {
        use TestCardEvent as E;
        match (event_type, version) {
            ("TestCardRegistered", 1) => {
                let p = parse::<TestCardRegisteredV1>(payload)?;
                Ok(E::Registered {
                    id: TestCardId::parse(&p.card_id).map_err(invalid::<TestCardRegisteredV1>)?,
                    label: p.label,
                })
            }
            ("TestCardLent", 1) => {
                let p = parse::<TestCardLentV1>(payload)?;
                Ok(E::Lent {
                    borrower: Borrower {
                        kind: match p.borrower_kind {
                            StoredBorrowerKind::Vendor => BorrowerKind::Vendor,
                            StoredBorrowerKind::Municipality => BorrowerKind::Municipality,
                        },
                        name: p.borrower_name,
                    },
                })
            }
            ("TestCardReturned", 1) => {
                parse::<TestCardReturnedV1>(payload)?;
                Ok(E::Returned)
            }
            ("TestCardInventoryChecked", 1) => Ok(E::InventoryChecked {
                checked_at: parse::<TestCardInventoryCheckedV1>(payload)?.checked_at,
            }),
            ("TestCardReportedLost", 1) => Ok(E::ReportedLost {
                note: parse::<TestCardReportedLostV1>(payload)?.note,
            }),
            _ => Err(unknown(event_type, version)),
        }
    }
}
