//! What the relay writes to Kafka, defined once for the relay and every consumer.
//!
//! - **Topic**: `<prefix>.<category>`, the category being the stream id's part before the
//!   first `-` (`mykey.ppid` for `ppid-0190…`).
//! - **Key**: the stream id, so all of a stream's events land in one partition, in order.
//! - **Headers** (UTF-8 text): [`H_EVENT_ID`], [`H_EVENT_TYPE`], [`H_SCHEMA_VERSION`],
//!   [`H_GLOBAL_POSITION`] (decimal), [`H_HASH`] and [`H_PREV_HASH`] (lower-case hex): enough to
//!   route or deduplicate without parsing the value.
//! - **Value**: the stored envelope as JSON, exactly the [`EventEnvelope`] serde form (the same
//!   line the NDJSON export writes): every field the hash covers, the payload as the stored
//!   JSON *text* (a string, never re-serialised), `recorded_at` in RFC 3339 with microseconds.
//!   [`decode`] gives the envelope back and `EventEnvelope::compute_hash` re-checks it.
//!
//! Delivery is at-least-once: a position can arrive twice (the relay re-sends what the broker
//! had not acknowledged when it stopped). Within one partition, positions only grow except
//! for such a repeat, so a consumer skips every event whose position is not above the highest
//! it has applied from that partition (or, per stream, whose version it has applied).

use mykey_schemas::{EventEnvelope, Hash};

pub const H_EVENT_ID: &str = "event_id";
pub const H_EVENT_TYPE: &str = "event_type";
pub const H_SCHEMA_VERSION: &str = "schema_version";
pub const H_GLOBAL_POSITION: &str = "global_position";
pub const H_HASH: &str = "hash";
pub const H_PREV_HASH: &str = "prev_hash";

/// The topic holding `category`'s events under `prefix`.
pub fn topic(prefix: &str, category: &str) -> String {
    format!("{prefix}.{category}")
}

/// The headers of `event`'s message, as (name, value) pairs in a fixed order.
pub fn headers(event: &EventEnvelope) -> [(&'static str, String); 6] {
    [
        (H_EVENT_ID, event.event_id.to_string()),
        (H_EVENT_TYPE, event.event_type.clone()),
        (H_SCHEMA_VERSION, event.schema_version.to_string()),
        (H_GLOBAL_POSITION, event.global_position.to_string()),
        (H_HASH, event.hash.to_hex()),
        (H_PREV_HASH, event.prev_hash.to_hex()),
    ]
}

/// The message value for `event`.
pub fn encode(event: &EventEnvelope) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(event)
}

/// Why a message value is not a relayed event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the message has no value")]
    Empty,
    #[error("the value is not an event envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(
        "position {position}: the stored hash {stored} does not match the contents ({computed})"
    )]
    HashMismatch {
        position: u64,
        stored: Hash,
        computed: Hash,
    },
}

/// The envelope in a message value, its hash *not* re-checked: for a verifier that recomputes
/// every hash itself and must report a mismatch at its place in global order
/// (`mykey-replay verify --kafka`). Consumers that apply events use [`decode`].
pub fn decode_unchecked(value: Option<&[u8]>) -> Result<EventEnvelope, DecodeError> {
    let value = value.filter(|v| !v.is_empty()).ok_or(DecodeError::Empty)?;
    Ok(serde_json::from_slice(value)?)
}

/// The envelope in a message value, with its own hash re-checked (the link to the previous
/// event is the consumer's to check, in global order: `mykey_store::verify::ChainChecker`).
pub fn decode(value: Option<&[u8]>) -> Result<EventEnvelope, DecodeError> {
    let value = value.filter(|v| !v.is_empty()).ok_or(DecodeError::Empty)?;
    let event: EventEnvelope = serde_json::from_slice(value)?;
    let computed = event.compute_hash();
    if computed != event.hash {
        return Err(DecodeError::HashMismatch {
            position: event.global_position,
            stored: event.hash,
            computed,
        });
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mykey_schemas::{EventMetadata, NewEvent, StreamId, GENESIS_HASH};

    fn event() -> EventEnvelope {
        EventEnvelope::seal(
            NewEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type: <mykey_schemas::stored::ppid::PpidIssuedV1 as mykey_schemas::StoredEvent>::EVENT_TYPE.into(),
                schema_version: 2,
                // Stored bytes with odd spacing and escapes: must survive byte for byte.
                payload: "{ \"b\":1,\"a\":\"\\u00e9\\n\" }".into(),
            },
            StreamId::new("ppid", "x-1").unwrap_or_else(|e| panic!("{e}")),
            1,
            7,
            EventMetadata {
                actor_id: "op".into(),
                actor_role: "operator".into(),
                command_id: uuid::Uuid::new_v4(),
                correlation_id: uuid::Uuid::new_v4(),
                causation_id: uuid::Uuid::new_v4(),
                patch_id: None,
                client_addr: Some("10.0.0.1".into()),
            },
            chrono::Utc::now(),
            GENESIS_HASH,
        )
    }

    #[test]
    fn a_value_decodes_to_the_same_envelope_and_hash() {
        let e = event();
        let back = decode(Some(&encode(&e).unwrap_or_else(|err| panic!("{err}"))))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(back, e);
        assert_eq!(back.compute_hash(), e.hash);
        assert_eq!(topic("mykey", e.stream_id.category()), "mykey.ppid");
        let h = headers(&e);
        assert_eq!(h[3], (H_GLOBAL_POSITION, "7".to_owned()));
        assert_eq!(h[4], (H_HASH, e.hash.to_hex()));
    }

    #[test]
    fn a_tampered_or_foreign_value_is_refused() {
        let mut e = event();
        e.payload = "{\"b\":2}".into();
        assert!(matches!(
            decode(Some(&encode(&e).unwrap_or_else(|err| panic!("{err}")))),
            Err(DecodeError::HashMismatch { position: 7, .. })
        ));
        assert!(matches!(decode(None), Err(DecodeError::Empty)));
        assert!(matches!(
            decode(Some(b"{\"x\":1}")),
            Err(DecodeError::Malformed(_))
        ));
    }
}
