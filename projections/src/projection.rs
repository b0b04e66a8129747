//! What a projection is: a name, a version, its own tables, and a pure `apply`.
//!
//! `apply` sees one decoded event with its envelope and *describes* the read-model change as
//! SQL statements with bound parameters ([`Change`]); it runs nothing. The runner executes the
//! changes of a batch, in order, in one transaction with the projection's checkpoint, with
//! `search_path` set to the projection's own schema — so statements name tables unqualified
//! and the same code fills the live schema, a rebuild's fresh schema, or a replay's scratch one.

use chrono::{DateTime, Utc};
use mykey_schemas::{AnyEvent, EventEnvelope};
use std::error::Error;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use uuid::Uuid;

/// A value bound to a statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    I64(i64),
    Text(String),
    Time(DateTime<Utc>),
    Uuid(Uuid),
    Json(serde_json::Value),
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Bool(v) => v.to_sql(ty, out),
            Param::I64(v) => v.to_sql(ty, out),
            Param::Text(v) => v.to_sql(ty, out),
            Param::Time(v) => v.to_sql(ty, out),
            Param::Uuid(v) => v.to_sql(ty, out),
            Param::Json(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <bool as ToSql>::accepts(ty)
            || <i64 as ToSql>::accepts(ty)
            || <String as ToSql>::accepts(ty)
            || <DateTime<Utc> as ToSql>::accepts(ty)
            || <Uuid as ToSql>::accepts(ty)
            || <serde_json::Value as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(v.to_owned())
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(v)
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::I64(v)
    }
}
impl From<bool> for Param {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}
impl From<DateTime<Utc>> for Param {
    fn from(v: DateTime<Utc>) -> Self {
        Param::Time(v)
    }
}
impl From<Uuid> for Param {
    fn from(v: Uuid) -> Self {
        Param::Uuid(v)
    }
}
impl From<serde_json::Value> for Param {
    fn from(v: serde_json::Value) -> Self {
        Param::Json(v)
    }
}
impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// One statement to run, in order, inside the runner's transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Names tables unqualified: the runner sets `search_path` to the projection's schema.
    pub sql: &'static str,
    pub params: Vec<Param>,
}

impl Change {
    pub fn new(sql: &'static str, params: Vec<Param>) -> Change {
        Change { sql, params }
    }
}

/// One event as a projection sees it: decoded, with the facts of its envelope.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub envelope: &'a EventEnvelope,
    pub event: &'a AnyEvent,
}

/// Why a projection could not apply an event. The runner stops that projection at the event's
/// position and reports it; the others go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The event contradicts what the read model holds (e.g. a revocation of an unknown PPID).
    #[error("inconsistent with the read model: {0}")]
    Inconsistent(String),
    /// This projection does not know how to apply this event.
    #[error("event type {0} is not handled")]
    Unhandled(String),
}

/// Whether a projection can be fed from Kafka's partitions (`mykey-server projector`) or needs
/// the log's global order (it then runs only from PostgreSQL, in the runner).
///
/// A partition interleaves streams and different partitions run at different speeds, so a
/// Kafka-mode projection sees each stream's events in order but the streams in any order
/// relative to each other. That gives the same rows as the global order exactly when every
/// row is changed only by the events of one stream (or by inserts whose order does not matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaMode {
    /// Per-stream order suffices: may run as a Kafka consumer group.
    PerStream,
    /// Needs the global order (rows shared across streams, counters, the chain): PostgreSQL only.
    GlobalOrder,
}

/// A read model derived from the log.
///
/// Invariant: `apply` is pure (no I/O, no clock, no randomness): the same events always give
/// the same changes, which is what makes a rebuild or a replay equal to the live read model.
/// Changing `apply` or `migrations` in a way that changes the rows requires a new `version`
/// (a rebuild into fresh tables); a fingerprint test guards this.
pub trait Projection: Send + Sync + 'static {
    /// Stable identifier, `[a-z][a-z0-9_]*`: names the schema, the metrics and the CLI argument.
    fn name(&self) -> &'static str;
    /// Bumped whenever `apply` or `migrations` change the rows.
    fn version(&self) -> u32;
    /// DDL creating this projection's tables, run in order in a fresh schema (unqualified names).
    fn migrations(&self) -> &'static [&'static str];
    /// The read-model changes this event causes (none for events it does not care about).
    fn apply(&self, event: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError>;
    /// Stream categories whose events this projection reads. The runner decodes and applies
    /// only those (the others just advance the checkpoint), so an event this projection never
    /// reads cannot stop it, and a rebuild skips the decoding of everything else.
    fn categories(&self) -> &'static [&'static str] {
        mykey_schemas::stored::any::CATEGORIES
    }
    /// The source of `apply` and `migrations` (`include_str!` of the projection's file), for
    /// the fingerprint test that catches a change without a new `version`.
    fn source(&self) -> &'static str {
        ""
    }
    /// Whether the Kafka projector may run it ([`KafkaMode`]). The safe default is the global
    /// order; `models::all()` marks the per-stream read models (outside their files, so the
    /// declaration does not change their fingerprints).
    fn kafka_mode(&self) -> KafkaMode {
        KafkaMode::GlobalOrder
    }
}
