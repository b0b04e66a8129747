//! Reading rows back into [`EventEnvelope`]s exactly as stored.

use crate::StoreError;
use chrono::{DateTime, Utc};
use mykey_schemas::{EventEnvelope, EventMetadata, Hash, StreamId};
use tokio_postgres::Row;
use uuid::Uuid;

/// The column list every event read selects, in the order [`envelope`] decodes.
pub const EVENT_COLUMNS: &str = "global_position, stream_id, stream_version, event_id, \
     event_type, schema_version, payload, actor_id, actor_role, command_id, correlation_id, \
     causation_id, patch_id, client_addr, recorded_at, prev_hash, hash";

/// Decodes one row selected with [`EVENT_COLUMNS`]. Anything the envelope cannot represent is
/// [`StoreError::Corrupt`] at that position, never a panic: a hand-edited row must still let
/// the verifier report where the log broke.
pub fn envelope(row: &Row) -> Result<EventEnvelope, StoreError> {
    let raw_position: i64 = row
        .try_get(0)
        .map_err(|e| StoreError::Unavailable(format!("decode global_position: {e}")))?;
    let position = u64::try_from(raw_position).unwrap_or(0);
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let get_err = |col: &str, e: tokio_postgres::Error| corrupt(format!("{col}: {e}"));
    if raw_position < 1 {
        return Err(corrupt(format!("global_position {raw_position} < 1")));
    }
    let stream_raw: String = row.try_get(1).map_err(|e| get_err("stream_id", e))?;
    let stream_id = StreamId::parse(&stream_raw).map_err(|e| corrupt(e.to_string()))?;
    let version: i64 = row.try_get(2).map_err(|e| get_err("stream_version", e))?;
    let stream_version =
        u64::try_from(version).map_err(|_| corrupt(format!("stream_version {version}")))?;
    let event_id: Uuid = row.try_get(3).map_err(|e| get_err("event_id", e))?;
    let event_type: String = row.try_get(4).map_err(|e| get_err("event_type", e))?;
    let schema: i32 = row.try_get(5).map_err(|e| get_err("schema_version", e))?;
    let schema_version =
        u32::try_from(schema).map_err(|_| corrupt(format!("schema_version {schema}")))?;
    let payload: String = row.try_get(6).map_err(|e| get_err("payload", e))?;
    let metadata = EventMetadata {
        actor_id: row.try_get(7).map_err(|e| get_err("actor_id", e))?,
        actor_role: row.try_get(8).map_err(|e| get_err("actor_role", e))?,
        command_id: row.try_get(9).map_err(|e| get_err("command_id", e))?,
        correlation_id: row.try_get(10).map_err(|e| get_err("correlation_id", e))?,
        causation_id: row.try_get(11).map_err(|e| get_err("causation_id", e))?,
        patch_id: row.try_get(12).map_err(|e| get_err("patch_id", e))?,
        client_addr: row.try_get(13).map_err(|e| get_err("client_addr", e))?,
    };
    let recorded_at: DateTime<Utc> = row.try_get(14).map_err(|e| get_err("recorded_at", e))?;
    let prev: &[u8] = row.try_get(15).map_err(|e| get_err("prev_hash", e))?;
    let hash: &[u8] = row.try_get(16).map_err(|e| get_err("hash", e))?;
    Ok(EventEnvelope {
        event_id,
        stream_id,
        stream_version,
        global_position: position,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at,
        prev_hash: Hash::from_slice(prev)
            .ok_or_else(|| corrupt(format!("prev_hash has {} bytes", prev.len())))?,
        hash: Hash::from_slice(hash)
            .ok_or_else(|| corrupt(format!("hash has {} bytes", hash.len())))?,
    })
}
