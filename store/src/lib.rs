//! The event log.
//!
//! This crate promises, for every [`EventStore`] implementation:
//! - events are only ever appended; nothing here updates or deletes one;
//! - global positions are dense from 1 and become visible in order: once a reader has seen
//!   position `p`, no event at a position `<= p` can appear later;
//! - every event is hash-chained to its predecessor in global order ([`verify`]);
//! - an append is all or nothing, across every stream it names, and idempotent per command id;
//! - a version mismatch is [`AppendError::Conflict`] and writes nothing.
//!
//! [`memory::InMemoryStore`] keeps the same contract in memory for unit tests of command
//! handlers; the PostgreSQL log is [`pg::PgEventStore`]. One contract suite runs against both.

pub mod checkpoint;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod memory;
pub mod pg;
pub mod verify;

use mykey_schemas::{EnvelopeError, EventEnvelope, EventMetadata, NewEvent, StreamId};
use serde::{Deserialize, Serialize};
use std::future::Future;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use verify::{ChainBreak, ChainBreakKind, VerifyReport};

/// More events than this in one append is refused: one command is a small fact, and a huge
/// append would hold the global write lock long enough to stall every other writer.
pub const MAX_EVENTS_PER_APPEND: usize = 1_000;

/// Upper bound on one page of reads, whatever the caller asks for.
pub const MAX_READ_PAGE: usize = 10_000;

/// Capacity of a subscription's channel, in both logs: a slow subscriber applies
/// back-pressure to itself only (its feeder task waits), never to writers.
pub const SUBSCRIPTION_BUFFER: usize = 1_024;

/// What the caller believes the stream's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this (>= 1).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` (0 = does not exist) satisfies this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

/// Events for one stream inside an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// One command's worth of events: one or several streams, written all or nothing.
/// `metadata.command_id` is the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    pub metadata: EventMetadata,
    pub streams: Vec<StreamAppend>,
}

impl AppendRequest {
    pub fn single(
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: EventMetadata,
    ) -> AppendRequest {
        AppendRequest {
            metadata,
            streams: vec![StreamAppend {
                stream,
                expected,
                events,
            }],
        }
    }

    pub fn command_id(&self) -> Uuid {
        self.metadata.command_id
    }

    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }

    /// The checks that need no database: run before anything is queued or locked.
    pub fn validate(&self) -> Result<(), AppendError> {
        let count = self.event_count();
        if count == 0 || self.streams.iter().any(|s| s.events.is_empty()) {
            return Err(AppendError::Empty);
        }
        if count > MAX_EVENTS_PER_APPEND {
            return Err(AppendError::TooManyEvents { count });
        }
        for (i, s) in self.streams.iter().enumerate() {
            if self.streams[..i].iter().any(|o| o.stream == s.stream) {
                return Err(AppendError::DuplicateStream(s.stream.clone()));
            }
            if s.expected == ExpectedVersion::Exact(0) {
                return Err(AppendError::InvalidExpectedVersion);
            }
            for e in &s.events {
                e.validate()?;
            }
        }
        let mut ids = std::collections::HashSet::with_capacity(count);
        for e in self.streams.iter().flat_map(|s| &s.events) {
            if !ids.insert(e.event_id) {
                return Err(AppendError::EventIdReused(e.event_id));
            }
        }
        Ok(())
    }
}

/// Where an append's events landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Global positions of the first and last event written, inclusive.
    pub first_position: u64,
    pub last_position: u64,
    /// Per stream, in request order: the versions written, inclusive.
    pub streams: Vec<StreamOutcome>,
    /// True when this command id had already been appended: nothing new was written and
    /// this is the first append's outcome.
    pub deduplicated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOutcome {
    pub stream: StreamId,
    pub first_version: u64,
    pub last_version: u64,
}

/// Why an append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("version conflict on {stream}: expected {expected:?}, actual {actual}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        /// The stream's current version; 0 when it does not exist.
        actual: u64,
    },
    #[error("an append must contain at least one event for every stream it names")]
    Empty,
    #[error("{count} events in one append exceeds the limit of {MAX_EVENTS_PER_APPEND}")]
    TooManyEvents { count: usize },
    #[error("stream {0} named twice in one append")]
    DuplicateStream(StreamId),
    #[error("expected version Exact(0) is meaningless: use NoStream")]
    InvalidExpectedVersion,
    /// Event ids are unique in the whole log: a retry must reuse the *command* id (which
    /// makes it idempotent), never an event id with another command.
    #[error("event id {0} is already in the log or twice in this append")]
    EventIdReused(Uuid),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppendError {
    /// Stable machine code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            AppendError::Conflict { .. } => "VERSION_CONFLICT",
            AppendError::Empty => "EMPTY_APPEND",
            AppendError::TooManyEvents { .. } => "TOO_MANY_EVENTS",
            AppendError::DuplicateStream(_) => "DUPLICATE_STREAM",
            AppendError::InvalidExpectedVersion => "INVALID_EXPECTED_VERSION",
            AppendError::EventIdReused(_) => "EVENT_ID_REUSED",
            AppendError::Envelope(e) => e.code(),
            AppendError::Store(e) => e.code(),
        }
    }
}

/// An infrastructure failure. For an append, the outcome may be unknown (e.g. the connection
/// dropped during commit): retrying with the same command id is always safe.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt { position: u64, reason: String },
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "STORE_UNAVAILABLE",
            StoreError::Corrupt { .. } => "STORE_CORRUPT",
        }
    }
}

/// A live feed of the log from a position: it catches up, then follows new events in order,
/// never skipping or repeating one. Dropping the receiver ends the subscription.
pub type Subscription = mpsc::Receiver<Result<EventEnvelope, StoreError>>;

/// The contract every event log keeps. See the crate docs for the guarantees.
pub trait EventStore: Send + Sync {
    /// Appends one command's events atomically. Repeating a command id returns the first
    /// outcome with `deduplicated: true` and writes nothing.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendOutcome, AppendError>> + Send;

    /// Events of one stream with `stream_version >= from_version`, at most `limit`
    /// (capped at [`MAX_READ_PAGE`]), in version order.
    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;

    /// Events with `global_position >= from_position`, at most `limit` (capped at
    /// [`MAX_READ_PAGE`]), in global order.
    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;

    /// Several whole streams in one call: `result[i]` holds all of `streams[i]`'s events in
    /// version order (empty for a stream never written). For a command that decides from
    /// several aggregates; the PostgreSQL log answers small streams in one round trip.
    fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<Vec<Vec<EventEnvelope>>, StoreError>> + Send {
        read_each_stream(self, streams)
    }

    /// The last global position written (0 for an empty log).
    fn head(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Follows the log from `from_position` (inclusive).
    fn subscribe(&self, from_position: u64) -> Subscription;
}

/// [`EventStore::read_streams`] one stream at a time.
pub(crate) async fn read_each_stream<S: EventStore + ?Sized>(
    store: &S,
    streams: &[StreamId],
) -> Result<Vec<Vec<EventEnvelope>>, StoreError> {
    let mut out = Vec::with_capacity(streams.len());
    for stream in streams {
        out.push(read_full_stream(store, stream).await?);
    }
    Ok(out)
}

/// Reads a whole stream (all pages).
pub async fn read_full_stream<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut out = Vec::new();
    loop {
        let from = out.len() as u64 + 1;
        let page = store.read_stream(stream, from, MAX_READ_PAGE).await?;
        let done = page.len() < MAX_READ_PAGE;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Recomputes the hash chain over `[from, to]` (inclusive; `to = None` means the head),
/// reading in pages, and reports the first position where it breaks.
pub async fn verify<S: EventStore + ?Sized>(
    store: &S,
    from: u64,
    to: Option<u64>,
) -> Result<VerifyReport, StoreError> {
    let from = from.max(1);
    let to = match to {
        Some(t) => t,
        None => store.head().await?,
    };
    let mut checker = verify::ChainChecker::new(from);
    // The event before `from` anchors the chain; its own correctness is outside the range.
    if from > 1 {
        // Only that very event: if it was deleted, `read_all` returns the next one, and
        // anchoring on `from` itself would report a break inside an intact range.
        let before = store.read_all(from - 1, 1).await?;
        if let Some(prev) = before.iter().find(|e| e.global_position == from - 1) {
            checker.anchor(prev);
        }
    }
    let mut next = from;
    while next <= to {
        let want = ((to - next + 1) as usize).min(MAX_READ_PAGE);
        let page = store.read_all(next, want).await?;
        if page.is_empty() {
            break;
        }
        for e in page.iter().filter(|e| e.global_position <= to) {
            if let Some(b) = checker.check(e) {
                return Ok(checker.report(Some(b)));
            }
        }
        next = page.last().map_or(to + 1, |e| e.global_position + 1);
    }
    if let Some(b) = checker.finish(to) {
        return Ok(checker.report(Some(b)));
    }
    Ok(checker.report(None))
}
