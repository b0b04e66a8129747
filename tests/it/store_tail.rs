//! The PostgreSQL log's shared subscription reader (`store/src/pg/tail.rs`): many subscribers
//! at the tail, one far behind the ring, a slow one beside a fast one, concurrent appenders,
//! and a hole met by the tail. Every subscriber's events are compared with `read_all`.

use mykey_schemas::{EventEnvelope, StreamId};
use mykey_store::contract::single;
use mykey_store::pg::writer::NOTIFY_CHANNEL;
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{EventStore, ExpectedVersion, StoreError, Subscription, MAX_READ_PAGE};
use mykey_tests::TestDb;
use std::time::Duration;
use uuid::Uuid;

/// Bound on any single wait for a committed event to reach a subscriber: generous for a loaded
/// machine, finite so a bug fails the test.
const WAIT: Duration = Duration::from_secs(60);

async fn connect(db: &TestDb, ring: usize) -> PgEventStore {
    let options = PgStoreOptions {
        tail_ring_events: ring,
        ..PgStoreOptions::default()
    };
    PgEventStore::connect(db.config(), options)
        .await
        .unwrap_or_else(|e| panic!("connect the event store: {e}"))
}

async fn head(store: &PgEventStore) -> u64 {
    store.head().await.unwrap_or_else(|e| panic!("head: {e}"))
}

/// Appends `appends` commands of `per` events each to streams of `category`.
async fn append_n(store: &PgEventStore, category: &str, appends: usize, per: usize) {
    for _ in 0..appends {
        let s = StreamId::new(category, Uuid::new_v4().simple()).unwrap_or_else(|e| panic!("{e}"));
        store
            .append(single(&s, ExpectedVersion::NoStream, per))
            .await
            .unwrap_or_else(|e| panic!("append: {e}"));
    }
}

/// The log's events in `[from, to]`, read page by page.
async fn logged(store: &PgEventStore, from: u64, to: u64) -> Vec<(u64, Uuid)> {
    let mut out = Vec::new();
    let mut next = from;
    while next <= to {
        let page = store
            .read_all(next, MAX_READ_PAGE)
            .await
            .unwrap_or_else(|e| panic!("read_all: {e}"));
        if page.is_empty() {
            break;
        }
        for e in page.iter().filter(|e| e.global_position <= to) {
            out.push((e.global_position, e.event_id));
        }
        next = page.last().map_or(to + 1, |e| e.global_position + 1);
    }
    out
}

async fn next_event(sub: &mut Subscription) -> Result<EventEnvelope, StoreError> {
    match tokio::time::timeout(WAIT, sub.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// Receives until position `to`, asserting every event is the next position.
async fn receive_to(sub: &mut Subscription, from: u64, to: u64) -> Vec<(u64, Uuid)> {
    let mut seen = Vec::new();
    let mut expect = from;
    while expect <= to {
        let e = next_event(sub)
            .await
            .unwrap_or_else(|e| panic!("subscription error at {expect}: {e}"));
        assert_eq!(e.global_position, expect, "dense, in order");
        seen.push((e.global_position, e.event_id));
        expect += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_at_the_tail_all_receive_every_event_from_one_read() {
    const SUBSCRIBERS: usize = 12;
    let db = TestDb::create().await;
    let store = connect(&db, mykey_store::pg::TAIL_RING_EVENTS).await;
    append_n(&store, "before", 5, 2).await;
    let from = head(&store).await + 1;
    let mut subs: Vec<Subscription> = (0..SUBSCRIBERS).map(|_| store.subscribe(from)).collect();
    // Several writers at once, so appends are group-committed into shared batches.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { append_n(&store, "tail", 50, 3).await })
        })
        .collect();
    for w in writers {
        w.await.unwrap_or_else(|e| panic!("writer: {e}"));
    }
    let to = head(&store).await;
    assert_eq!(to - from + 1, 600);
    let expected = logged(&store, from, to).await;
    for sub in &mut subs {
        assert_eq!(receive_to(sub, from, to).await, expected);
    }
    let stats = store.subscription_stats();
    assert_eq!(
        (stats.tail_events(), stats.own_events()),
        (600, 0),
        "the tail read each event once; no subscriber read by itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_far_behind_the_ring_catches_up_by_itself_and_joins_it() {
    const RING: usize = 64;
    let db = TestDb::create().await;
    let store = connect(&db, RING).await;
    // Start the tail at position 1 and let it run far past what the ring holds.
    let mut at_tail = store.subscribe(1);
    append_n(&store, "old", 30, 100).await;
    let old_head = head(&store).await;
    assert_eq!(receive_to(&mut at_tail, 1, old_head).await.len(), 3_000);

    let mut behind = store.subscribe(1);
    let caught_up = receive_to(&mut behind, 1, old_head).await;
    let own_after_catch_up = store.subscription_stats().own_events();
    assert!(
        own_after_catch_up >= 3_000 - RING as u64,
        "it read what the ring no longer held by itself: {own_after_catch_up}"
    );
    // Live events after it caught up: served by the ring, not read again by the subscriber.
    append_n(&store, "new", 20, 2).await;
    let to = head(&store).await;
    let live = receive_to(&mut behind, old_head + 1, to).await;
    assert_eq!(receive_to(&mut at_tail, old_head + 1, to).await, live);
    assert_eq!([caught_up, live].concat(), logged(&store, 1, to).await);
    assert_eq!(
        store.subscription_stats().own_events(),
        own_after_catch_up,
        "once caught up it follows the ring"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_hold_up_a_fast_one_and_loses_nothing() {
    const RING: usize = 64;
    let db = TestDb::create().await;
    let store = connect(&db, RING).await;
    let mut fast = store.subscribe(1);
    // Never read until the end: its channel fills and its feeder waits.
    let mut slow = store.subscribe(1);
    append_n(&store, "load", 50, 100).await;
    let to = head(&store).await;
    assert_eq!(to, 5_000);
    // More than the slow one's channel and the ring together: the fast one gets it all while
    // the slow one reads nothing.
    let fast_seen = receive_to(&mut fast, 1, to).await;
    let expected = logged(&store, 1, to).await;
    assert_eq!(fast_seen, expected);
    let own_before = store.subscription_stats().own_events();
    assert_eq!(receive_to(&mut slow, 1, to).await, expected);
    assert!(
        store.subscription_stats().own_events() > own_before,
        "the ring moved past the slow subscriber, so it read by itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_and_subscribers_skip_nothing() {
    const WRITERS: usize = 16;
    const APPENDS: usize = 60;
    let db = TestDb::create().await;
    // A small ring, so the subscribers move between the ring and their own reads; a second
    // store's appends reach the first only through NOTIFY.
    let (a, b) = (connect(&db, 32).await, connect(&db, 32).await);
    let mut early: Vec<Subscription> = (0..3).map(|_| a.subscribe(1)).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..APPENDS {
                    let s =
                        StreamId::new("race", (w * 7 + i) % 40).unwrap_or_else(|e| panic!("{e}"));
                    store
                        .append(single(&s, ExpectedVersion::Any, 1 + i % 3))
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}: {e}"));
                }
            })
        })
        .collect();
    // Joins while the writers run, from the middle of the log.
    let mid = head(&a).await / 2 + 1;
    let mut late = a.subscribe(mid);
    for w in writers {
        w.await.unwrap_or_else(|e| panic!("writer: {e}"));
    }
    let to = head(&a).await;
    let expected = logged(&a, 1, to).await;
    assert_eq!(expected.len() as u64, to, "dense from 1");
    for sub in &mut early {
        assert_eq!(receive_to(sub, 1, to).await, expected);
    }
    let tail_part: Vec<_> = expected[(mid - 1) as usize..].to_vec();
    assert_eq!(receive_to(&mut late, mid, to).await, tail_part);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_met_by_the_tail_is_reported_corrupt_to_subscribers_at_the_tail() {
    let db = TestDb::create().await;
    let store = connect(&db, mykey_store::pg::TAIL_RING_EVENTS).await;
    append_n(&store, "seed", 5, 2).await;
    let mut sub = store.subscribe(11);
    // Rows at 12 and 13 without 11, written behind the store's back (as superuser, copies of
    // existing rows with new ids), then announced the way another writer would.
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO events SELECT global_position + 10, stream_id, stream_version + 100, \
                 gen_random_uuid(), event_type, schema_version, payload, actor_id, actor_role, \
                 command_id, correlation_id, causation_id, patch_id, client_addr, recorded_at, \
                 prev_hash, hash \
             FROM events WHERE global_position IN (2, 3); \
             SELECT pg_notify('{NOTIFY_CHANNEL}', '13')"
        ))
        .await
        .unwrap_or_else(|e| panic!("tamper: {e}"));
    match next_event(&mut sub).await {
        Err(StoreError::Corrupt { position, .. }) => assert_eq!(position, 11),
        other => panic!("expected the hole at 11 reported, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_when_the_store_is_dropped() {
    let db = TestDb::create().await;
    let store = connect(&db, mykey_store::pg::TAIL_RING_EVENTS).await;
    append_n(&store, "end", 1, 1).await;
    let mut subs: Vec<Subscription> = vec![store.subscribe(1), store.subscribe(2)];
    assert_eq!(receive_to(&mut subs[0], 1, 1).await.len(), 1);
    drop(store);
    for sub in &mut subs {
        let end = tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("the subscription outlived its store by {WAIT:?}"));
        assert!(end.is_none(), "{end:?}");
    }
}
