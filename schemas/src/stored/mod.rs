//! Versioned stored forms of every domain event, and the mapping to and from domain events.
//!
//! Each stored type is a plain serde struct with an event type name and a schema version
//! ([`StoredEvent`]). Domain events are encoded into the *current* version only; decoding
//! accepts every version ever written and upcasts older ones on read. A JSON Schema file per
//! (type, version) lives in `schemas/json/`, generated from these types; a test fails when a
//! file drifts from the code (`UPDATE_SCHEMAS=1` regenerates them).
//!
//! Invariant: a stored type, once released, is never changed. A change is a new version plus
//! an upcaster from the previous one.

pub mod any;
pub mod application;
pub mod certificate;
pub mod maintenance;
pub mod patch;
pub mod ppid;
pub mod program;
pub mod relying_party;
pub mod subject;
pub mod test_card;

use mykey_domain::DomainError;
use schemars::schema::RootSchema;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A stored event payload type: its name in the log and its version.
pub trait StoredEvent: Serialize + DeserializeOwned + JsonSchema {
    const EVENT_TYPE: &'static str;
    const VERSION: u32;
}

/// A domain event in stored form, ready to wrap in a `NewEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub event_type: &'static str,
    pub schema_version: u32,
    /// JSON text: these exact bytes are stored and hashed.
    pub payload: String,
}

/// Why a stored event could not be turned into a domain event (or the reverse).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown event type {event_type} version {version} for this aggregate")]
    Unknown { event_type: String, version: u32 },
    #[error("{event_type} version {version} does not parse: {reason}")]
    Malformed {
        event_type: String,
        version: u32,
        reason: String,
    },
    #[error("{event_type} version {version} holds a value the domain refuses: {reason}")]
    Invalid {
        event_type: String,
        version: u32,
        reason: String,
    },
    #[error("cannot serialise {event_type}: {reason}")]
    Serialise {
        event_type: &'static str,
        reason: String,
    },
}

impl SchemaError {
    pub fn code(&self) -> &'static str {
        match self {
            SchemaError::Unknown { .. } => "UNKNOWN_EVENT_TYPE",
            SchemaError::Malformed { .. } => "MALFORMED_EVENT",
            SchemaError::Invalid { .. } => "INVALID_STORED_EVENT",
            SchemaError::Serialise { .. } => "SERIALISE_FAILED",
        }
    }
}

/// The stored-form mapping of one aggregate's events.
pub trait EventCodec {
    type DomainEvent;

    /// The current stored form of `event`.
    fn encode(event: &Self::DomainEvent) -> Result<Encoded, SchemaError>;

    /// Any stored version of an event of this aggregate, upcast to the current domain event.
    fn decode(
        event_type: &str,
        version: u32,
        payload: &str,
    ) -> Result<Self::DomainEvent, SchemaError>;
}

pub(crate) fn encode<T: StoredEvent>(value: &T) -> Result<Encoded, SchemaError> {
    let payload = serde_json::to_string(value).map_err(|e| SchemaError::Serialise {
        event_type: T::EVENT_TYPE,
        reason: e.to_string(),
    })?;
    Ok(Encoded {
        event_type: T::EVENT_TYPE,
        schema_version: T::VERSION,
        payload,
    })
}

pub(crate) fn parse<T: StoredEvent>(payload: &str) -> Result<T, SchemaError> {
    serde_json::from_str(payload).map_err(|e| SchemaError::Malformed {
        event_type: T::EVENT_TYPE.to_owned(),
        version: T::VERSION,
        reason: e.to_string(),
    })
}

/// Maps a domain refusal while rebuilding a domain value from stored data.
pub(crate) fn invalid<T: StoredEvent>(e: DomainError) -> SchemaError {
    SchemaError::Invalid {
        event_type: T::EVENT_TYPE.to_owned(),
        version: T::VERSION,
        reason: e.to_string(),
    }
}

pub(crate) fn unknown(event_type: &str, version: u32) -> SchemaError {
    SchemaError::Unknown {
        event_type: event_type.to_owned(),
        version,
    }
}

/// Implements [`StoredEvent`] for stored types.
macro_rules! stored {
    ($($ty:ident => $name:literal v $v:literal),* $(,)?) => {
        $(impl $crate::stored::StoredEvent for $ty {
            const EVENT_TYPE: &'static str = $name;
            const VERSION: u32 = $v;
        })*
    };
}
pub(crate) use stored;

/// One schema file: `<EventType>.v<N>.json` and its content.
#[derive(Debug)]
pub struct SchemaFile {
    pub file_name: String,
    pub schema: RootSchema,
}

pub(crate) fn schema_file<T: StoredEvent>() -> SchemaFile {
    SchemaFile {
        file_name: format!("{}.v{}.json", T::EVENT_TYPE, T::VERSION),
        schema: schemars::schema_for!(T),
    }
}

/// Every stored type ever released (current and older versions), for the schema files.
pub fn all_schema_files() -> Vec<SchemaFile> {
    let mut v = Vec::new();
    v.extend(relying_party::schema_files());
    v.extend(certificate::schema_files());
    v.extend(subject::schema_files());
    v.extend(ppid::schema_files());
    v.extend(program::schema_files());
    v.extend(application::schema_files());
    v.extend(patch::schema_files());
    v.extend(maintenance::schema_files());
    v.extend(test_card::schema_files());
    v
}

#[cfg(test)]
mod tests;
