//! The event envelope: defined once, used by every crate.
//!
//! # Canonical encoding (what the hash chain covers)
//!
//! `hash = SHA-256(encoding)`, where `encoding` is the concatenation of these fields, in this
//! order. Every variable-length field is written as a 4-byte big-endian length followed by its
//! bytes; integers are fixed-width big-endian; optional fields are a presence byte (0 or 1)
//! followed, when present, by the length-prefixed value.
//!
//! | # | field | encoding |
//! |---|-------|----------|
//! | 1 | domain tag | length-prefixed `mykey-event-v1` |
//! | 2 | `global_position` | u64 |
//! | 3 | `stream_id` | length-prefixed UTF-8 |
//! | 4 | `stream_version` | u64 |
//! | 5 | `event_id` | 16 raw UUID bytes |
//! | 6 | `event_type` | length-prefixed UTF-8 |
//! | 7 | `schema_version` | u32 |
//! | 8 | `payload` | length-prefixed bytes **exactly as stored** (the JSON text) |
//! | 9 | `metadata.actor_id` | length-prefixed UTF-8 |
//! | 10 | `metadata.actor_role` | length-prefixed UTF-8 |
//! | 11 | `metadata.command_id` | 16 raw UUID bytes |
//! | 12 | `metadata.correlation_id` | 16 raw UUID bytes |
//! | 13 | `metadata.causation_id` | 16 raw UUID bytes |
//! | 14 | `metadata.patch_id` | optional, 16 raw UUID bytes |
//! | 15 | `metadata.client_addr` | optional, length-prefixed UTF-8 |
//! | 16 | `recorded_at` | i64, microseconds since the Unix epoch (UTC) |
//! | 17 | `prev_hash` | 32 raw bytes (all zero for position 1) |
//!
//! The payload is hashed as the stored bytes, never re-serialised: personal data will be
//! stored encrypted per citizen (crypto-shredding), and destroying a citizen's key must leave
//! the stored ciphertext — and therefore the chain — verifiable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use uuid::Uuid;

/// A payload larger than this is refused: events are facts, not documents, and one
/// oversized event would stall every writer batched behind it.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Streams ids are `<category>-<id>`; this bounds index and hash input size.
pub const MAX_STREAM_ID_BYTES: usize = 200;

/// Bounds the event type name (it is an identifier, not data).
pub const MAX_EVENT_TYPE_BYTES: usize = 100;

const DOMAIN_TAG: &[u8] = b"mykey-event-v1";

/// SHA-256 digest of an event's canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

/// The `prev_hash` of the event at global position 1.
pub const GENESIS_HASH: Hash = Hash([0u8; 32]);

impl Hash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(&s).map_err(serde::de::Error::custom)?;
        Hash::from_slice(&bytes).ok_or_else(|| serde::de::Error::custom("hash must be 32 bytes"))
    }
}

/// Why an envelope or one of its parts is refused. Nothing is written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed stream id {0:?}: expected <category>-<id>, category [a-z][a-z0-9_]*, id [A-Za-z0-9_.:-]+, at most {MAX_STREAM_ID_BYTES} bytes")]
    MalformedStreamId(String),
    #[error("malformed event type {0:?}: expected [A-Za-z][A-Za-z0-9_.]*, at most {MAX_EVENT_TYPE_BYTES} bytes")]
    MalformedEventType(String),
    #[error("payload of {size} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes")]
    PayloadTooLarge { size: usize },
    /// PostgreSQL text cannot hold U+0000 (serde_json writes it escaped, as `\u0000`).
    #[error("payload contains a NUL character; JSON must escape it as \\u0000")]
    PayloadNulCharacter,
}

impl EnvelopeError {
    /// Stable machine code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::MalformedStreamId(_) => "MALFORMED_STREAM_ID",
            EnvelopeError::MalformedEventType(_) => "MALFORMED_EVENT_TYPE",
            EnvelopeError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            EnvelopeError::PayloadNulCharacter => "PAYLOAD_NUL_CHARACTER",
        }
    }
}

/// A validated stream id, `<category>-<id>`, e.g. `ppid-0190f3c1-...`.
///
/// The category is everything before the first `-`; the id is the rest (it may contain `-`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn parse(raw: &str) -> Result<StreamId, EnvelopeError> {
        let bad = || EnvelopeError::MalformedStreamId(truncate_for_error(raw));
        if raw.is_empty() || raw.len() > MAX_STREAM_ID_BYTES {
            return Err(bad());
        }
        let (category, id) = raw.split_once('-').ok_or_else(bad)?;
        let mut cat_chars = category.chars();
        let cat_ok = matches!(cat_chars.next(), Some(c) if c.is_ascii_lowercase())
            && cat_chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let id_ok = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
        if cat_ok && id_ok {
            Ok(StreamId(raw.to_owned()))
        } else {
            Err(bad())
        }
    }

    /// Builds `<category>-<id>`; validates like [`StreamId::parse`].
    pub fn new(category: &str, id: impl fmt::Display) -> Result<StreamId, EnvelopeError> {
        StreamId::parse(&format!("{category}-{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn category(&self) -> &str {
        self.0.split_once('-').map_or("", |(c, _)| c)
    }

    pub fn id(&self) -> &str {
        self.0.split_once('-').map_or("", |(_, i)| i)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StreamId::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn truncate_for_error(raw: &str) -> String {
    raw.chars().take(64).collect()
}

/// Who caused an event and why. Carried from the command onto every event it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The operator, relying party or system component that issued the command.
    pub actor_id: String,
    /// The role the actor acted in (e.g. `operator`, `relying_party`, `system`).
    pub actor_role: String,
    /// The command that produced the event; also the idempotency key of the append.
    pub command_id: Uuid,
    /// Shared by everything done for one user request or workflow.
    pub correlation_id: Uuid,
    /// The message (command or event id) that directly caused this one.
    pub causation_id: Uuid,
    /// Set when the event was appended by an applied data patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_id: Option<Uuid>,
    /// The network address the command came from, when it came over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
}

/// An event as handed to the store: everything but what the store assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// Exact bytes to store (JSON text). Hashed as-is.
    pub payload: String,
}

impl NewEvent {
    /// Serialises `payload` once; the resulting text is what is stored and hashed.
    pub fn json(
        event_id: Uuid,
        event_type: impl Into<String>,
        schema_version: u32,
        payload: &impl Serialize,
    ) -> Result<NewEvent, serde_json::Error> {
        Ok(NewEvent {
            event_id,
            event_type: event_type.into(),
            schema_version,
            payload: serde_json::to_string(payload)?,
        })
    }

    /// Checks the limits that do not depend on the log's state.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        validate_event_type(&self.event_type)?;
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EnvelopeError::PayloadTooLarge {
                size: self.payload.len(),
            });
        }
        if self.payload.contains('\0') {
            return Err(EnvelopeError::PayloadNulCharacter);
        }
        Ok(())
    }
}

fn validate_event_type(t: &str) -> Result<(), EnvelopeError> {
    let mut chars = t.chars();
    let ok = t.len() <= MAX_EVENT_TYPE_BYTES
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::MalformedEventType(truncate_for_error(t)))
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub stream_id: StreamId,
    /// Dense per stream, from 1.
    pub stream_version: u64,
    /// Dense across the whole log, from 1.
    pub global_position: u64,
    pub event_type: String,
    pub schema_version: u32,
    /// The stored JSON text, byte for byte.
    pub payload: String,
    pub metadata: EventMetadata,
    /// Assigned by the store; microsecond precision (what PostgreSQL keeps).
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Hash,
    pub hash: Hash,
}

impl EventEnvelope {
    /// Builds the stored form and its hash. `recorded_at` is truncated to microseconds so the
    /// hash computed now equals the one recomputed from the database later.
    #[allow(clippy::too_many_arguments)]
    pub fn seal(
        event: NewEvent,
        stream_id: StreamId,
        stream_version: u64,
        global_position: u64,
        metadata: EventMetadata,
        recorded_at: DateTime<Utc>,
        prev_hash: Hash,
    ) -> EventEnvelope {
        let recorded_at = truncate_to_micros(recorded_at);
        let mut envelope = EventEnvelope {
            event_id: event.event_id,
            stream_id,
            stream_version,
            global_position,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata,
            recorded_at,
            prev_hash,
            hash: GENESIS_HASH,
        };
        envelope.hash = envelope.compute_hash();
        envelope
    }

    /// Recomputes the hash from the fields as they are now (for verification).
    pub fn compute_hash(&self) -> Hash {
        Hash(Sha256::digest(self.canonical_bytes()).into())
    }

    /// The canonical encoding documented at the top of this module.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.payload.len());
        put_bytes(&mut out, DOMAIN_TAG);
        out.extend_from_slice(&self.global_position.to_be_bytes());
        put_bytes(&mut out, self.stream_id.as_str().as_bytes());
        out.extend_from_slice(&self.stream_version.to_be_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        put_bytes(&mut out, self.event_type.as_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        put_bytes(&mut out, self.payload.as_bytes());
        let m = &self.metadata;
        put_bytes(&mut out, m.actor_id.as_bytes());
        put_bytes(&mut out, m.actor_role.as_bytes());
        out.extend_from_slice(m.command_id.as_bytes());
        out.extend_from_slice(m.correlation_id.as_bytes());
        out.extend_from_slice(m.causation_id.as_bytes());
        match &m.patch_id {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p.as_bytes());
            }
            None => out.push(0),
        }
        match &m.client_addr {
            Some(a) => {
                out.push(1);
                put_bytes(&mut out, a.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.recorded_at.timestamp_micros().to_be_bytes());
        out.extend_from_slice(&self.prev_hash.0);
        out
    }
}

/// PostgreSQL `timestamptz` keeps microseconds; anything finer would not survive a round trip.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are bounded by MAX_PAYLOAD_BYTES and the identifier limits, far below u32::MAX.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EventMetadata {
        EventMetadata {
            actor_id: "op-1".into(),
            actor_role: "operator".into(),
            command_id: Uuid::from_u128(1),
            correlation_id: Uuid::from_u128(2),
            causation_id: Uuid::from_u128(3),
            patch_id: None,
            client_addr: None,
        }
    }

    fn sealed(payload: &str, prev: Hash) -> EventEnvelope {
        EventEnvelope::seal(
            NewEvent {
                event_id: Uuid::from_u128(9),
                event_type: "PpidIssued".into(),
                schema_version: 1,
                payload: payload.into(),
            },
            StreamId::parse("ppid-abc").unwrap(),
            1,
            1,
            meta(),
            DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            prev,
        )
    }

    #[test]
    fn stream_ids_are_validated() {
        for ok in ["ppid-1", "relying_party-131016", "patch-0190-aa.b:c"] {
            assert!(StreamId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "ppid", "-1", "ppid-", "PPID-1", "1ppid-x", "pp id-1", "ppid-a b", "ppid-é",
        ] {
            assert!(
                matches!(
                    StreamId::parse(bad),
                    Err(EnvelopeError::MalformedStreamId(_))
                ),
                "{bad:?}"
            );
        }
        assert!(StreamId::parse(&format!("a-{}", "x".repeat(MAX_STREAM_ID_BYTES))).is_err());
        let s = StreamId::parse("subject-0190-ab").unwrap();
        assert_eq!((s.category(), s.id()), ("subject", "0190-ab"));
    }

    #[test]
    fn new_event_limits() {
        let mut e = NewEvent {
            event_id: Uuid::nil(),
            event_type: "X".into(),
            schema_version: 1,
            payload: "x".repeat(MAX_PAYLOAD_BYTES),
        };
        assert_eq!(e.validate(), Ok(()));
        e.payload.push('x');
        assert_eq!(
            e.validate(),
            Err(EnvelopeError::PayloadTooLarge {
                size: MAX_PAYLOAD_BYTES + 1
            })
        );
        e.payload = "{}".into();
        e.event_type = "bad type".into();
        assert!(matches!(
            e.validate(),
            Err(EnvelopeError::MalformedEventType(_))
        ));
    }

    #[test]
    fn hash_covers_every_field_and_the_predecessor() {
        let base = sealed(r#"{"a":1}"#, GENESIS_HASH);
        assert_eq!(base.hash, base.compute_hash());
        let mut changed = base.clone();
        changed.payload = r#"{"a":2}"#.into();
        assert_ne!(changed.compute_hash(), base.hash);
        let mut changed = base.clone();
        changed.global_position = 2;
        assert_ne!(changed.compute_hash(), base.hash);
        let mut changed = base.clone();
        changed.metadata.patch_id = Some(Uuid::from_u128(5));
        assert_ne!(changed.compute_hash(), base.hash);
        let chained = sealed(r#"{"a":1}"#, base.hash);
        assert_ne!(chained.hash, base.hash);
    }

    #[test]
    fn the_hash_is_over_stored_bytes_not_a_reserialisation() {
        // Same JSON value, different bytes: different hash. The store must keep bytes exactly.
        let a = sealed(r#"{"a":1,"b":2}"#, GENESIS_HASH);
        let b = sealed(r#"{"b":2,"a":1}"#, GENESIS_HASH);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn recorded_at_is_kept_to_microseconds() {
        let t = DateTime::from_timestamp_nanos(1_700_000_000_123_456_789);
        assert_eq!(truncate_to_micros(t).timestamp_subsec_nanos(), 123_456_000);
    }
}
