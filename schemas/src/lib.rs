//! Stored forms of events.
//!
//! This crate owns everything about how an event looks *on disk and on the wire*:
//! the [`envelope`] that wraps every event (ids, positions, who and why, hash chain),
//! the canonical byte encoding the hash chain is computed over, and — per event type —
//! the versioned serde payloads, their JSON Schema files and the upcasters that turn
//! older stored versions into the current one on read.
//!
//! It is pure: no I/O, no clock. Domain types never appear in stored form directly;
//! the mapping lives here so a domain refactor cannot silently change what is stored.

// Test code may unwrap: a panic is the failure report there (the envelope's tests do).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod envelope;

pub use envelope::{
    EnvelopeError, EventEnvelope, EventMetadata, Hash, NewEvent, StreamId, GENESIS_HASH,
    MAX_PAYLOAD_BYTES,
};

pub mod json_check;
pub mod stored;

pub use stored::any::{decode_any, AnyEvent};
pub use stored::{all_schema_files, Encoded, EventCodec, SchemaError, StoredEvent};
