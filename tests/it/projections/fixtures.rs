//! Test projections and a generated workload, shared by `tests/it/projections.rs` and the
//! crash test's child process (`tests/bin/projection_runner.rs`, which includes this file).

use mykey_domain::maintenance::{Maintenance, MaintenanceEvent};
use mykey_domain::ppid::{PpidAggregate, PpidEvent, RevokedBy};
use mykey_domain::Aggregate;
use mykey_projections::{ApplyError, Change, Param, Projection, Recorded};
use mykey_schemas::{AnyEvent, EventCodec, EventMetadata, NewEvent, StreamId};
use mykey_store::{AppendRequest, EventStore, ExpectedVersion, StreamAppend};
use uuid::Uuid;

/// Events per append in [`append_workload`] (100-event appends are the log's fastest).
pub const APPEND_SIZE: u64 = 100;

/// Counts every event by type and in total; each event adds `weight`, so two versions with
/// different weights give different, each complete, answers.
#[derive(Debug)]
pub struct Counts {
    pub version: u32,
    pub weight: i64,
}

impl Projection for Counts {
    fn name(&self) -> &'static str {
        "test_counts"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn migrations(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE counts (event_type text PRIMARY KEY, n bigint NOT NULL)",
            "CREATE TABLE total (id int PRIMARY KEY, n bigint NOT NULL, last_position bigint NOT NULL)",
            "INSERT INTO total VALUES (1, 0, 0)",
        ]
    }
    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        out.push(Change::new(
            "INSERT INTO counts VALUES ($1, $2) \
             ON CONFLICT (event_type) DO UPDATE SET n = counts.n + excluded.n",
            vec![e.envelope.event_type.as_str().into(), self.weight.into()],
        ));
        out.push(Change::new(
            "UPDATE total SET n = n + $1, last_position = $2",
            vec![self.weight.into(), position(e)],
        ));
        Ok(())
    }
    fn source(&self) -> &'static str {
        include_str!("fixtures.rs")
    }
}

fn position(e: Recorded<'_>) -> Param {
    Param::I64(i64::try_from(e.envelope.global_position).unwrap_or(i64::MAX))
}

/// PPID revocations only (reads the `ppid` category, nothing else).
#[derive(Debug)]
pub struct Revocations;

impl Projection for Revocations {
    fn name(&self) -> &'static str {
        "test_revocations"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        &["CREATE TABLE revoked (position bigint PRIMARY KEY, by_whom text NOT NULL)"]
    }
    fn categories(&self) -> &'static [&'static str] {
        &[PpidAggregate::CATEGORY]
    }
    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        if let AnyEvent::Ppid(PpidEvent::Revoked { by }) = e.event {
            out.push(Change::new(
                "INSERT INTO revoked VALUES ($1, $2)",
                vec![position(e), format!("{by:?}").into()],
            ));
        }
        Ok(())
    }
}

/// Cancelled maintenance notices only; a reason `reject` violates its table's CHECK, which
/// makes an SQL error on one chosen event.
#[derive(Debug)]
pub struct Cancellations;

/// A cancellation reason [`Cancellations`]' table refuses.
pub const REJECTED_REASON: &str = "reject";

impl Projection for Cancellations {
    fn name(&self) -> &'static str {
        "test_cancellations"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        &["CREATE TABLE cancelled (position bigint PRIMARY KEY, \
           reason text NOT NULL CHECK (reason <> 'reject'))"]
    }
    fn categories(&self) -> &'static [&'static str] {
        &[Maintenance::CATEGORY]
    }
    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        if let AnyEvent::Maintenance(MaintenanceEvent::Cancelled { reason }) = e.event {
            out.push(Change::new(
                "INSERT INTO cancelled VALUES ($1, $2)",
                vec![position(e), reason.as_str().into()],
            ));
        }
        Ok(())
    }
}

pub fn metadata() -> EventMetadata {
    let id = Uuid::new_v4();
    EventMetadata {
        actor_id: "projection-test".into(),
        actor_role: "system".into(),
        command_id: id,
        correlation_id: id,
        causation_id: id,
        patch_id: None,
        client_addr: None,
    }
}

fn new_event(encoded: mykey_schemas::Encoded) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: encoded.event_type.to_owned(),
        schema_version: encoded.schema_version,
        payload: encoded.payload,
    }
}

/// The `i`-th event of the workload: PPID revocations by either party, invalidations, and
/// cancelled maintenance notices.
pub fn workload_event(i: u64) -> (&'static str, NewEvent) {
    let encoded = match i % 4 {
        0 => PpidAggregate::encode(&PpidEvent::Revoked {
            by: RevokedBy::Citizen,
        }),
        1 => PpidAggregate::encode(&PpidEvent::Revoked {
            by: RevokedBy::RelyingParty,
        }),
        2 => PpidAggregate::encode(&PpidEvent::Invalidated {
            patch_id: Uuid::from_u128(u128::from(i)),
            reason: format!("patch {i}"),
        }),
        _ => {
            return (
                Maintenance::CATEGORY,
                new_event(
                    Maintenance::encode(&MaintenanceEvent::Cancelled {
                        reason: format!("notice {i}"),
                    })
                    .unwrap_or_else(|e| panic!("encode: {e}")),
                ),
            )
        }
    };
    (
        PpidAggregate::CATEGORY,
        new_event(encoded.unwrap_or_else(|e| panic!("encode: {e}"))),
    )
}

/// Appends `count` workload events numbered from `from`, [`APPEND_SIZE`] per append (one
/// stream per category in each). Returns the last position written.
pub async fn append_workload<S: EventStore>(store: &S, from: u64, count: u64) -> u64 {
    let mut last = 0;
    let mut i = from;
    while i < from + count {
        let end = (i + APPEND_SIZE).min(from + count);
        let mut streams: Vec<StreamAppend> = Vec::new();
        for j in i..end {
            let (category, event) = workload_event(j);
            match streams.iter_mut().find(|s| s.stream.category() == category) {
                Some(s) => s.events.push(event),
                None => streams.push(StreamAppend {
                    stream: StreamId::new(category, format!("w{i}"))
                        .unwrap_or_else(|e| panic!("stream id: {e}")),
                    expected: ExpectedVersion::Any,
                    events: vec![event],
                }),
            }
        }
        let outcome = store
            .append(AppendRequest {
                metadata: metadata(),
                streams,
            })
            .await
            .unwrap_or_else(|e| panic!("append: {e}"));
        last = outcome.last_position;
        i = end;
    }
    last
}

/// Appends one event as given (also one the decoder does not know). Returns its position.
pub async fn append_raw<S: EventStore>(store: &S, category: &str, event: NewEvent) -> u64 {
    let stream = StreamId::new(category, Uuid::new_v4().simple())
        .unwrap_or_else(|e| panic!("stream id: {e}"));
    store
        .append(AppendRequest::single(
            stream,
            ExpectedVersion::Any,
            vec![event],
            metadata(),
        ))
        .await
        .unwrap_or_else(|e| panic!("append: {e}"))
        .last_position
}

/// A cancelled maintenance notice with `reason`.
pub fn cancellation(reason: &str) -> NewEvent {
    new_event(
        Maintenance::encode(&MaintenanceEvent::Cancelled {
            reason: reason.to_owned(),
        })
        .unwrap_or_else(|e| panic!("encode: {e}")),
    )
}
