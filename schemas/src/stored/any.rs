//! Any event of the log, decoded by its stream's category: the one entry point for readers
//! that follow the whole log (projections, reports, the replay tool). Writers keep using the
//! per-aggregate [`EventCodec`]s; this only dispatches to them, so an event type is still
//! named in exactly one place.

use super::{unknown, EventCodec, SchemaError};
use crate::EventEnvelope;
use mykey_domain::application::{Application, ApplicationEvent};
use mykey_domain::certificate::{Certificate, CertificateEvent};
use mykey_domain::maintenance::{Maintenance, MaintenanceEvent};
use mykey_domain::patch::{Patch, PatchEvent};
use mykey_domain::ppid::{PpidAggregate, PpidEvent};
use mykey_domain::program::{Program, ProgramEvent};
use mykey_domain::relying_party::{RelyingParty, RelyingPartyEvent};
use mykey_domain::subject::{Subject, SubjectEvent};
use mykey_domain::test_card::{TestCard, TestCardEvent};
use mykey_domain::Aggregate;

/// A decoded domain event of any aggregate (older stored versions already upcast).
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    RelyingParty(RelyingPartyEvent),
    Certificate(CertificateEvent),
    Subject(SubjectEvent),
    Ppid(PpidEvent),
    Program(ProgramEvent),
    Application(ApplicationEvent),
    Patch(PatchEvent),
    Maintenance(MaintenanceEvent),
    TestCard(TestCardEvent),
}

/// Every stream category the write model uses.
pub const CATEGORIES: &[&str] = &[
    RelyingParty::CATEGORY,
    Certificate::CATEGORY,
    Subject::CATEGORY,
    PpidAggregate::CATEGORY,
    Program::CATEGORY,
    Application::CATEGORY,
    Patch::CATEGORY,
    Maintenance::CATEGORY,
    TestCard::CATEGORY,
];

/// Decodes one stored event, choosing the aggregate by the stream's category.
pub fn decode_any(env: &EventEnvelope) -> Result<AnyEvent, SchemaError> {
    let (t, v, p) = (
        env.event_type.as_str(),
        env.schema_version,
        env.payload.as_str(),
    );
    let category = env.stream_id.category();
    Ok(match category {
        c if c == RelyingParty::CATEGORY => AnyEvent::RelyingParty(RelyingParty::decode(t, v, p)?),
        c if c == Certificate::CATEGORY => AnyEvent::Certificate(Certificate::decode(t, v, p)?),
        c if c == Subject::CATEGORY => AnyEvent::Subject(Subject::decode(t, v, p)?),
        c if c == PpidAggregate::CATEGORY => AnyEvent::Ppid(PpidAggregate::decode(t, v, p)?),
        c if c == Program::CATEGORY => AnyEvent::Program(Program::decode(t, v, p)?),
        c if c == Application::CATEGORY => AnyEvent::Application(Application::decode(t, v, p)?),
        c if c == Patch::CATEGORY => AnyEvent::Patch(Patch::decode(t, v, p)?),
        c if c == Maintenance::CATEGORY => AnyEvent::Maintenance(Maintenance::decode(t, v, p)?),
        c if c == TestCard::CATEGORY => AnyEvent::TestCard(TestCard::decode(t, v, p)?),
        _ => return Err(unknown(t, v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventMetadata, NewEvent, StreamId, GENESIS_HASH};
    use mykey_domain::ppid::RevokedBy;
    use uuid::Uuid;

    fn envelope(stream: &str, event_type: &str, payload: &str) -> EventEnvelope {
        let id = Uuid::from_u128(1);
        EventEnvelope::seal(
            NewEvent {
                event_id: id,
                event_type: event_type.to_owned(),
                schema_version: 1,
                payload: payload.to_owned(),
            },
            StreamId::parse(stream).unwrap(),
            1,
            1,
            EventMetadata {
                actor_id: "t".into(),
                actor_role: "system".into(),
                command_id: id,
                correlation_id: id,
                causation_id: id,
                patch_id: None,
                client_addr: None,
            },
            chrono::DateTime::UNIX_EPOCH,
            GENESIS_HASH,
        )
    }

    #[test]
    fn an_event_is_decoded_by_its_streams_category() {
        let encoded = PpidAggregate::encode(&PpidEvent::Revoked {
            by: RevokedBy::Citizen,
        })
        .unwrap();
        let env = envelope("ppid-abc", encoded.event_type, &encoded.payload);
        assert_eq!(
            decode_any(&env).unwrap(),
            AnyEvent::Ppid(PpidEvent::Revoked {
                by: RevokedBy::Citizen
            })
        );
        assert_eq!(CATEGORIES.len(), 9);
    }

    #[test]
    fn an_unknown_category_or_type_is_refused() {
        let env = envelope("nothing-1", "PpidRevoked", r#"{"by":"citizen"}"#);
        assert_eq!(decode_any(&env).unwrap_err().code(), "UNKNOWN_EVENT_TYPE");
        let env = envelope("ppid-1", "Bogus", "{}");
        assert_eq!(decode_any(&env).unwrap_err().code(), "UNKNOWN_EVENT_TYPE");
    }
}
