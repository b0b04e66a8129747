//! Maintenance notice events.

use super::{
    encode, invalid, parse, schema_file, stored, unknown, Encoded, EventCodec, SchemaError,
    SchemaFile,
};
use chrono::{DateTime, Utc};
use mykey_domain::maintenance::{Maintenance, MaintenanceEvent, NoticeDetails};
use mykey_domain::NoticeId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredNoticeDetails {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub affected_services: Vec<String>,
    pub message_ja: String,
    pub message_en: String,
}

impl From<&NoticeDetails> for StoredNoticeDetails {
    fn from(d: &NoticeDetails) -> Self {
        StoredNoticeDetails {
            start: d.start,
            end: d.end,
            affected_services: d.affected_services.clone(),
            message_ja: d.message_ja.clone(),
            message_en: d.message_en.clone(),
        }
    }
}

impl From<StoredNoticeDetails> for NoticeDetails {
    fn from(d: StoredNoticeDetails) -> Self {
        NoticeDetails {
            start: d.start,
            end: d.end,
            affected_services: d.affected_services,
            message_ja: d.message_ja,
            message_en: d.message_en,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MaintenanceScheduledV1 {
    pub notice_id: String,
    pub details: StoredNoticeDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MaintenanceUpdatedV1 {
    pub details: StoredNoticeDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MaintenanceCancelledV1 {
    pub reason: String,
}

stored! {
    MaintenanceScheduledV1 => "MaintenanceScheduled" v 1,
    MaintenanceUpdatedV1 => "MaintenanceUpdated" v 1,
    MaintenanceCancelledV1 => "MaintenanceCancelled" v 1,
}

pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        schema_file::<MaintenanceScheduledV1>(),
        schema_file::<MaintenanceUpdatedV1>(),
        schema_file::<MaintenanceCancelledV1>(),
    ]
}

impl EventCodec for Maintenance {
    type DomainEvent = MaintenanceEvent;

    fn encode(event: &MaintenanceEvent) -> Result<Encoded, SchemaError> {
        match event {
            MaintenanceEvent::Scheduled { id, details } => encode(&MaintenanceScheduledV1 {
                notice_id: id.to_string(),
                details: details.into(),
            }),
            MaintenanceEvent::Updated { details } => encode(&MaintenanceUpdatedV1 {
                details: details.into(),
            }),
            MaintenanceEvent::Cancelled { reason } => encode(&MaintenanceCancelledV1 {
                reason: reason.clone(),
            }),
        }
    }

    fn decode(
        event_type: &str,
        version: u32,
        payload: &str,
    ) -> Result<MaintenanceEvent, SchemaError> {
        match (event_type, version) {
            ("MaintenanceScheduled", 1) => {
                let p = parse::<MaintenanceScheduledV1>(payload)?;
                Ok(MaintenanceEvent::Scheduled {
                    id: NoticeId::parse(&p.notice_id).map_err(invalid::<MaintenanceScheduledV1>)?,
                    details: p.details.into(),
                })
            }
            ("MaintenanceUpdated", 1) => Ok(MaintenanceEvent::Updated {
                details: parse::<MaintenanceUpdatedV1>(payload)?.details.into(),
            }),
            ("MaintenanceCancelled", 1) => Ok(MaintenanceEvent::Cancelled {
                reason: parse::<MaintenanceCancelledV1>(payload)?.reason,
            }),
            _ => Err(unknown(event_type, version)),
        }
    }
}
