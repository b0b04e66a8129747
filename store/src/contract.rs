//! The [`EventStore`] contract as executable checks, run against every implementation:
//! [`crate::memory::InMemoryStore`] in this crate's unit tests, the PostgreSQL log in
//! `tests/it/store.rs`. Enabled by the `contract` feature.
//!
//! Each property takes a store that may already hold events (it uses fresh stream ids and
//! positions relative to the head it finds), but expects no concurrent writer while it runs.
//! A failed property panics with what was expected and what was found.

use crate::{
    read_full_stream, verify, AppendError, AppendOutcome, AppendRequest, EventStore,
    ExpectedVersion, StreamAppend, MAX_EVENTS_PER_APPEND,
};
use mykey_schemas::{
    EnvelopeError, EventEnvelope, EventMetadata, NewEvent, StreamId, MAX_PAYLOAD_BYTES,
};
use std::time::Duration;
use uuid::Uuid;

/// Bound on waiting for a subscription to deliver an event that is already committed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every property, in order, on one store.
pub async fn run_all<S: EventStore>(store: &S) {
    conflict_is_typed_and_writes_nothing(store).await;
    expected_version_semantics(store).await;
    idempotent_retry_returns_first_outcome(store).await;
    multi_stream_append_is_all_or_nothing(store).await;
    reads_page_in_order(store).await;
    read_streams_returns_each_whole_stream(store).await;
    events_round_trip_byte_exact(store).await;
    validation_rejects_before_writing(store).await;
    reused_event_id_is_refused_and_writes_nothing(store).await;
    subscribe_catches_up_then_follows(store).await;
    verify_passes_on_a_clean_log(store).await;
}

/// A fresh stream id in `category`.
pub fn new_stream(category: &str) -> StreamId {
    StreamId::new(category, Uuid::new_v4().simple())
        .unwrap_or_else(|e| panic!("test stream id: {e}"))
}

/// Metadata with a fresh command id.
pub fn new_metadata() -> EventMetadata {
    EventMetadata {
        actor_id: "contract-op".into(),
        actor_role: "operator".into(),
        command_id: Uuid::new_v4(),
        correlation_id: Uuid::new_v4(),
        causation_id: Uuid::new_v4(),
        patch_id: None,
        client_addr: None,
    }
}

/// `n` events whose payloads are deliberately not in canonical JSON form (spacing, key order,
/// non-ASCII), so a store that re-serialises them breaks the hash chain.
pub fn new_events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "ContractHappened".into(),
            schema_version: 1,
            payload: format!("{{ \"z\": {i},\"a\" :\"名前 é\" , \"n\":1.50}}"),
        })
        .collect()
}

pub fn single(stream: &StreamId, expected: ExpectedVersion, n: usize) -> AppendRequest {
    AppendRequest::single(stream.clone(), expected, new_events(n), new_metadata())
}

async fn ok<S: EventStore>(store: &S, r: AppendRequest) -> AppendOutcome {
    store
        .append(r)
        .await
        .unwrap_or_else(|e| panic!("append should succeed: {e}"))
}

async fn head<S: EventStore>(store: &S) -> u64 {
    store.head().await.unwrap_or_else(|e| panic!("head: {e}"))
}

async fn stream_len<S: EventStore>(store: &S, s: &StreamId) -> usize {
    read_full_stream(store, s)
        .await
        .unwrap_or_else(|e| panic!("read_stream {s}: {e}"))
        .len()
}

fn assert_conflict(
    r: Result<AppendOutcome, AppendError>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
) {
    match r {
        Err(AppendError::Conflict {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(
                (&s, e, a),
                (stream, expected, actual),
                "conflict fields (stream, expected, actual)"
            );
        }
        other => {
            panic!("expected Conflict on {stream} ({expected:?}, actual {actual}), got {other:?}")
        }
    }
}

/// A version mismatch is `Conflict { stream, expected, actual }` and writes nothing.
pub async fn conflict_is_typed_and_writes_nothing<S: EventStore>(store: &S) {
    let s = new_stream("contract");
    ok(store, single(&s, ExpectedVersion::NoStream, 2)).await;
    let before = head(store).await;
    let r = store.append(single(&s, ExpectedVersion::Exact(1), 1)).await;
    assert_conflict(r, &s, ExpectedVersion::Exact(1), 2);
    assert_eq!(head(store).await, before, "a conflict must write nothing");
    assert_eq!(stream_len(store, &s).await, 2);
}

/// `NoStream`, `Exact(n)` and `Any` mean what they say, on new and existing streams.
pub async fn expected_version_semantics<S: EventStore>(store: &S) {
    let s = new_stream("contract");
    // Exact on a stream that does not exist: actual is 0.
    let r = store.append(single(&s, ExpectedVersion::Exact(1), 1)).await;
    assert_conflict(r, &s, ExpectedVersion::Exact(1), 0);
    let o = ok(store, single(&s, ExpectedVersion::NoStream, 1)).await;
    assert_eq!(
        (o.streams[0].first_version, o.streams[0].last_version),
        (1, 1)
    );
    let r = store.append(single(&s, ExpectedVersion::NoStream, 1)).await;
    assert_conflict(r, &s, ExpectedVersion::NoStream, 1);
    let o = ok(store, single(&s, ExpectedVersion::Exact(1), 2)).await;
    assert_eq!(
        (o.streams[0].first_version, o.streams[0].last_version),
        (2, 3)
    );
    let r = store.append(single(&s, ExpectedVersion::Exact(2), 1)).await;
    assert_conflict(r, &s, ExpectedVersion::Exact(2), 3);
    let o = ok(store, single(&s, ExpectedVersion::Any, 1)).await;
    assert_eq!(o.streams[0].first_version, 4);
    let fresh = new_stream("contract");
    let o = ok(store, single(&fresh, ExpectedVersion::Any, 1)).await;
    assert_eq!(o.streams[0].first_version, 1);
    assert_eq!(stream_len(store, &s).await, 4);
}

/// Repeating a command id returns the first outcome with `deduplicated: true` and writes
/// nothing, even when the repeat carries different events.
pub async fn idempotent_retry_returns_first_outcome<S: EventStore>(store: &S) {
    let s = new_stream("contract");
    let request = single(&s, ExpectedVersion::NoStream, 3);
    let first = ok(store, request.clone()).await;
    assert!(!first.deduplicated);
    let before = head(store).await;
    let again = ok(store, request.clone()).await;
    assert_eq!(
        again,
        AppendOutcome {
            deduplicated: true,
            ..first.clone()
        }
    );
    // Same command id, different content: still the first outcome (the id is the key).
    let mut changed = single(&s, ExpectedVersion::Exact(3), 5);
    changed.metadata.command_id = request.command_id();
    let again = ok(store, changed).await;
    assert_eq!(again.first_position, first.first_position);
    assert!(again.deduplicated);
    assert_eq!(head(store).await, before, "a repeat must write nothing");
    assert_eq!(stream_len(store, &s).await, 3);
}

/// An append naming several streams is written entirely or not at all.
pub async fn multi_stream_append_is_all_or_nothing<S: EventStore>(store: &S) {
    let a = new_stream("contract");
    let b = new_stream("contract");
    ok(store, single(&a, ExpectedVersion::NoStream, 1)).await;
    let before = head(store).await;
    let both = |expected_a| AppendRequest {
        metadata: new_metadata(),
        streams: vec![
            StreamAppend {
                stream: b.clone(),
                expected: ExpectedVersion::NoStream,
                events: new_events(2),
            },
            StreamAppend {
                stream: a.clone(),
                expected: expected_a,
                events: new_events(1),
            },
        ],
    };
    let r = store.append(both(ExpectedVersion::Exact(5))).await;
    assert_conflict(r, &a, ExpectedVersion::Exact(5), 1);
    assert_eq!(head(store).await, before);
    assert_eq!(
        stream_len(store, &b).await,
        0,
        "no part of a conflicting append"
    );
    let o = ok(store, both(ExpectedVersion::Exact(1))).await;
    assert_eq!(
        (o.first_position, o.last_position),
        (before + 1, before + 3)
    );
    assert_eq!(o.streams.len(), 2);
    assert_eq!(
        (
            &o.streams[0].stream,
            o.streams[0].first_version,
            o.streams[0].last_version
        ),
        (&b, 1, 2)
    );
    assert_eq!(
        (
            &o.streams[1].stream,
            o.streams[1].first_version,
            o.streams[1].last_version
        ),
        (&a, 2, 2)
    );
    let all = store
        .read_all(before + 1, 10)
        .await
        .unwrap_or_else(|e| panic!("read_all: {e}"));
    let ids: Vec<(&StreamId, u64)> = all
        .iter()
        .map(|e| (&e.stream_id, e.stream_version))
        .collect();
    assert_eq!(
        ids,
        vec![(&b, 1), (&b, 2), (&a, 2)],
        "request order, contiguous"
    );
}

/// `read_stream` and `read_all` page in order, honour `from` and `limit`.
pub async fn reads_page_in_order<S: EventStore>(store: &S) {
    let s = new_stream("contract");
    let other = new_stream("contract");
    let before = head(store).await;
    for i in 0..5u64 {
        let expected = if i == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(i * 5)
        };
        ok(store, single(&s, expected, 5)).await;
        // Interleave another stream so stream order and global order differ.
        ok(store, single(&other, ExpectedVersion::Any, 1)).await;
    }
    let mut paged = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(&s, from, 7)
            .await
            .unwrap_or_else(|e| panic!("read_stream: {e}"));
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        from = last.stream_version + 1;
        paged.extend(page);
    }
    let versions: Vec<u64> = paged.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (1..=25).collect::<Vec<_>>());
    assert!(paged.iter().all(|e| e.stream_id == s));
    let tail = store
        .read_stream(&s, 24, 100)
        .await
        .unwrap_or_else(|e| panic!("read_stream: {e}"));
    assert_eq!(
        tail.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![24, 25]
    );
    let none = store
        .read_stream(&s, 26, 100)
        .await
        .unwrap_or_else(|e| panic!("read_stream: {e}"));
    assert!(none.is_empty());
    let zero = store
        .read_stream(&s, 1, 0)
        .await
        .unwrap_or_else(|e| panic!("read_stream: {e}"));
    assert!(zero.is_empty(), "limit 0 reads nothing");

    let mut all = Vec::new();
    let mut from = before + 1;
    loop {
        let page = store
            .read_all(from, 4)
            .await
            .unwrap_or_else(|e| panic!("read_all: {e}"));
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        from = last.global_position + 1;
        all.extend(page);
    }
    let positions: Vec<u64> = all.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, (before + 1..=before + 30).collect::<Vec<_>>());
    let stream_positions: Vec<u64> = paged.iter().map(|e| e.global_position).collect();
    assert!(stream_positions.windows(2).all(|w| w[0] < w[1]));
}

/// `read_streams` answers each stream whole, in the order asked, whatever the interleaving,
/// repetition or absence; a stream longer than one page is still whole.
pub async fn read_streams_returns_each_whole_stream<S: EventStore>(store: &S) {
    let (a, b, never) = (
        new_stream("contract"),
        new_stream("contract"),
        new_stream("contract"),
    );
    ok(store, single(&a, ExpectedVersion::NoStream, 3)).await;
    ok(store, single(&b, ExpectedVersion::NoStream, 2)).await;
    ok(store, single(&a, ExpectedVersion::Exact(3), 2)).await;
    let long = new_stream("contract");
    let mut written = 0u64;
    while written <= crate::MAX_READ_PAGE as u64 {
        let n = crate::MAX_EVENTS_PER_APPEND.min(crate::MAX_READ_PAGE + 1 - written as usize);
        let expected = match written {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        ok(store, single(&long, expected, n)).await;
        written += n as u64;
    }
    let got = store
        .read_streams(&[b.clone(), never.clone(), a.clone(), b.clone(), long.clone()])
        .await
        .unwrap_or_else(|e| panic!("read_streams: {e}"));
    let shape: Vec<(Option<&StreamId>, Vec<u64>)> = got
        .iter()
        .map(|events| {
            let versions = events.iter().map(|e| e.stream_version).collect();
            (events.first().map(|e| &e.stream_id), versions)
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (Some(&b), vec![1, 2]),
            (None, vec![]),
            (Some(&a), vec![1, 2, 3, 4, 5]),
            (Some(&b), vec![1, 2]),
            (Some(&long), (1..=written).collect()),
        ]
    );
    for (asked, events) in [&b, &never, &a].into_iter().zip(&got) {
        let whole = crate::read_full_stream(store, asked)
            .await
            .unwrap_or_else(|e| panic!("read_full_stream: {e}"));
        assert_eq!(events, &whole, "same events as reading the stream alone");
    }
    let none = store
        .read_streams(&[])
        .await
        .unwrap_or_else(|e| panic!("read_streams: {e}"));
    assert!(none.is_empty());
}

/// What is read back is exactly what was sealed: payload bytes, metadata, time, hashes.
pub async fn events_round_trip_byte_exact<S: EventStore>(store: &S) {
    let s = new_stream("contract");
    let mut request = single(&s, ExpectedVersion::NoStream, 2);
    request.metadata.patch_id = Some(Uuid::new_v4());
    request.metadata.client_addr = Some("192.0.2.7:443".into());
    request.streams[0].events[1].payload =
        "{\"b\":1,   \"a\":[1,2 ,3],\"s\":\"\\u00e9\\n\"}".into();
    let sent = request.clone();
    let o = ok(store, request).await;
    let read = read_full_stream(store, &s)
        .await
        .unwrap_or_else(|e| panic!("read_stream: {e}"));
    assert_eq!(read.len(), 2);
    for (i, (e, n)) in read.iter().zip(&sent.streams[0].events).enumerate() {
        assert_eq!(e.payload, n.payload, "payload bytes of event {i}");
        assert_eq!(e.event_id, n.event_id);
        assert_eq!(e.event_type, n.event_type);
        assert_eq!(e.schema_version, n.schema_version);
        assert_eq!(e.metadata, sent.metadata);
        assert_eq!(e.global_position, o.first_position + i as u64);
        assert_eq!(
            e.compute_hash(),
            e.hash,
            "hash recomputes from what was read"
        );
        assert_eq!(
            e.recorded_at.timestamp_subsec_nanos() % 1_000,
            0,
            "microseconds"
        );
    }
    assert_eq!(read[1].prev_hash, read[0].hash);
    let via_all = store
        .read_all(o.first_position, 2)
        .await
        .unwrap_or_else(|e| panic!("read_all: {e}"));
    assert_eq!(via_all, read);
    if o.first_position > 1 {
        let prev = store
            .read_all(o.first_position - 1, 1)
            .await
            .unwrap_or_else(|e| panic!("read_all: {e}"));
        assert_eq!(prev.first().map(|p| p.hash), Some(read[0].prev_hash));
        assert!(prev
            .first()
            .is_some_and(|p| p.recorded_at <= read[0].recorded_at));
    }
}

/// Every rejection of [`AppendRequest::validate`] is its typed error and writes nothing.
pub async fn validation_rejects_before_writing<S: EventStore>(store: &S) {
    for (name, request, check) in rejected_requests() {
        let before = head(store).await;
        let r = store.append(request).await;
        assert!(check(&r), "{name}: unexpected result {r:?}");
        assert_eq!(head(store).await, before, "{name}: nothing may be written");
    }
}

type Check = fn(&Result<AppendOutcome, AppendError>) -> bool;

/// One request per validation rule, with how its rejection must look.
pub fn rejected_requests() -> Vec<(&'static str, AppendRequest, Check)> {
    let s = new_stream("contract");
    let mut out: Vec<(&'static str, AppendRequest, Check)> = Vec::new();
    out.push(("empty", single(&s, ExpectedVersion::Any, 0), |r| {
        matches!(r, Err(AppendError::Empty))
    }));
    let mut one_empty = single(&s, ExpectedVersion::Any, 1);
    one_empty.streams.push(StreamAppend {
        stream: new_stream("contract"),
        expected: ExpectedVersion::Any,
        events: Vec::new(),
    });
    out.push(("one stream empty", one_empty, |r| {
        matches!(r, Err(AppendError::Empty))
    }));
    out.push((
        "too many events",
        single(&s, ExpectedVersion::Any, MAX_EVENTS_PER_APPEND + 1),
        |r| matches!(r, Err(AppendError::TooManyEvents { count }) if *count == MAX_EVENTS_PER_APPEND + 1),
    ));
    let mut big = single(&s, ExpectedVersion::Any, 1);
    big.streams[0].events[0].payload = "x".repeat(MAX_PAYLOAD_BYTES + 1);
    out.push(("payload too large", big, |r| {
        matches!(
            r,
            Err(AppendError::Envelope(EnvelopeError::PayloadTooLarge { size })) if *size == MAX_PAYLOAD_BYTES + 1
        )
    }));
    let mut bad_type = single(&s, ExpectedVersion::Any, 1);
    bad_type.streams[0].events[0].event_type = "not a type".into();
    out.push(("malformed event type", bad_type, |r| {
        matches!(
            r,
            Err(AppendError::Envelope(EnvelopeError::MalformedEventType(_)))
        )
    }));
    let mut dup = single(&s, ExpectedVersion::Any, 1);
    dup.streams.push(dup.streams[0].clone());
    out.push(("duplicate stream", dup, |r| {
        matches!(r, Err(AppendError::DuplicateStream(_)))
    }));
    out.push((
        "exact zero",
        single(&s, ExpectedVersion::Exact(0), 1),
        |r| matches!(r, Err(AppendError::InvalidExpectedVersion)),
    ));
    let mut nul = single(&s, ExpectedVersion::Any, 1);
    nul.streams[0].events[0].payload = "{\"a\":\"\0\"}".into();
    out.push(("NUL character in a payload", nul, |r| {
        matches!(
            r,
            Err(AppendError::Envelope(EnvelopeError::PayloadNulCharacter))
        )
    }));
    let mut twice = single(&s, ExpectedVersion::Any, 2);
    twice.streams[0].events[1].event_id = twice.streams[0].events[0].event_id;
    out.push(("one event id twice", twice, |r| {
        matches!(r, Err(AppendError::EventIdReused(_)))
    }));
    out
}

/// An event id already in the log is refused with its own error (not "unavailable": a retry
/// would fail the same way), writes nothing, and leaves the log writable.
pub async fn reused_event_id_is_refused_and_writes_nothing<S: EventStore>(store: &S) {
    let s = new_stream("contract");
    let first = single(&s, ExpectedVersion::NoStream, 1);
    let used = first.streams[0].events[0].event_id;
    ok(store, first).await;
    let before = head(store).await;
    let mut again = single(&new_stream("contract"), ExpectedVersion::NoStream, 2);
    again.streams[0].events[1].event_id = used;
    let r = store.append(again).await;
    assert!(
        matches!(&r, Err(AppendError::EventIdReused(id)) if *id == used),
        "unexpected result {r:?}"
    );
    assert_eq!(
        r.as_ref().err().map(AppendError::code),
        Some("EVENT_ID_REUSED")
    );
    assert_eq!(head(store).await, before, "nothing may be written");
    ok(store, single(&s, ExpectedVersion::Exact(1), 1)).await;
    assert_eq!(head(store).await, before + 1);
}

async fn next_event(sub: &mut crate::Subscription) -> Result<EventEnvelope, crate::StoreError> {
    match tokio::time::timeout(DELIVERY_TIMEOUT, sub.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("no event within {DELIVERY_TIMEOUT:?}"),
    }
}

/// A subscription first delivers what exists from its start, then follows new appends, in
/// order, without gaps or repeats.
pub async fn subscribe_catches_up_then_follows<S: EventStore>(store: &S) {
    let s = new_stream("contract");
    let start = head(store).await + 1;
    ok(store, single(&s, ExpectedVersion::NoStream, 3)).await;
    let mut sub = store.subscribe(start);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = next_event(&mut sub)
            .await
            .unwrap_or_else(|e| panic!("catch-up: {e}"));
        seen.push(e.global_position);
    }
    // Live: appended after the subscription has caught up.
    ok(store, single(&s, ExpectedVersion::Exact(3), 2)).await;
    ok(store, single(&s, ExpectedVersion::Exact(5), 1)).await;
    for _ in 0..3 {
        let e = next_event(&mut sub)
            .await
            .unwrap_or_else(|e| panic!("live: {e}"));
        assert_eq!(e.stream_id, s);
        seen.push(e.global_position);
    }
    assert_eq!(seen, (start..start + 6).collect::<Vec<_>>());
}

/// The hash chain of a log written only through the store verifies end to end.
pub async fn verify_passes_on_a_clean_log<S: EventStore>(store: &S) {
    let s = new_stream("contract");
    ok(store, single(&s, ExpectedVersion::Any, 3)).await;
    let h = head(store).await;
    let report = verify(store, 1, None)
        .await
        .unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.verified, h);
    let last = store
        .read_all(h, 1)
        .await
        .unwrap_or_else(|e| panic!("read_all: {e}"));
    assert_eq!(report.last_hash, last.first().map(|e| e.hash));
    // A range in the middle, anchored on its predecessor.
    let part = verify(store, h.saturating_sub(1).max(1), Some(h))
        .await
        .unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(part.is_intact(), "{part:?}");
}

#[cfg(test)]
mod memory_tests {
    //! The contract against the in-memory store; one test per property.
    use crate::memory::InMemoryStore;
    use std::future::Future;
    use std::time::Duration;

    macro_rules! contract_tests {
        ($($name:ident),* $(,)?) => {$(
            #[test]
            fn $name() {
                guarded(|| async { super::$name(&InMemoryStore::new()).await });
            }
        )*};
    }

    contract_tests!(
        conflict_is_typed_and_writes_nothing,
        expected_version_semantics,
        idempotent_retry_returns_first_outcome,
        multi_stream_append_is_all_or_nothing,
        reads_page_in_order,
        read_streams_returns_each_whole_stream,
        events_round_trip_byte_exact,
        validation_rejects_before_writing,
        reused_event_id_is_refused_and_writes_nothing,
        subscribe_catches_up_then_follows,
        verify_passes_on_a_clean_log,
    );

    #[test]
    fn run_all_on_one_store() {
        guarded(|| async { super::run_all(&InMemoryStore::new()).await });
    }

    /// Bound on one property against the in-memory store (its operations are instant).
    const PROPERTY_DEADLINE: Duration = Duration::from_secs(20);

    /// Runs a property on its own thread and runtime with a deadline, so a store that blocks
    /// its thread (e.g. a lock re-entered) fails the test instead of hanging the run: the
    /// stuck thread is abandoned and dies with the test process.
    fn guarded<F, Fut>(property: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("runtime: {e}"))
                    .block_on(property())
            }));
            let _ = done_tx.send(outcome.is_ok());
        });
        match done_rx.recv_timeout(PROPERTY_DEADLINE) {
            Ok(true) => {}
            Ok(false) => panic!("the property failed (its panic message is above)"),
            Err(_) => panic!(
                "the property did not finish within {PROPERTY_DEADLINE:?}: the store is blocked"
            ),
        }
    }
}
