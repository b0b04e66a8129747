//! Subscriptions: one shared reader of the log's tail.
//!
//! A server follows its log with many subscriptions at once (one per projection, the Kafka
//! relay, …). If each read every new event from PostgreSQL by itself, an append would be read
//! that many times. Instead each store has one **tail task** that, whenever the head moves,
//! reads the new events once and keeps the newest of them in a bounded in-memory ring
//! ([`TAIL_RING_EVENTS`] events and [`TAIL_RING_BYTES`] bytes at most). A subscription's
//! **feeder** hands its subscriber the events it needs from the ring; only a subscriber that is
//! further behind than the ring (it starts far back, or was too slow) reads pages from
//! PostgreSQL by itself, as every subscriber once did, until it reaches the ring again.
//!
//! Guarantees, as for a subscriber reading alone:
//! - **Dense and in order.** The tail reads from the position after the ring's last event and
//!   appends only that exact position; a feeder checks every event it reads itself. A hole
//!   (a position the log does not hold while a later one exists) stops the tail there; the
//!   feeders that reach it read by themselves and report it as [`StoreError::Corrupt`].
//! - **No skip on coalesced or lost notifications.** The tail never trusts a notification's
//!   number: it waits for the head to pass what it holds and reads from there. The head only
//!   moves after a commit is visible, so the read sees it.
//! - **Back-pressure stays with the slow.** The tail never waits for a subscriber: it evicts the
//!   oldest events when the ring is full. A slow subscriber waits on its own channel
//!   ([`crate::SUBSCRIPTION_BUFFER`]); if the ring moved past it meanwhile, it reads by
//!   itself. Memory is the ring plus, per subscription, its channel and one chunk
//!   ([`SERVE_CHUNK`]).
//! - **Failures.** While the tail's read fails, feeders at the tail read by themselves and so
//!   meet (and report) the failure as before; the tail retries with backoff.
//! - **Lifetimes.** A dropped subscription stops its feeder. The tail task stops with the
//!   store (its head channel closes); if it stopped while the store lives on (its runtime
//!   shut down), the next `subscribe` starts a new one and existing feeders read by
//!   themselves.

use super::read_all_from;
use crate::StoreError;
use deadpool_postgres::Pool;
use mykey_schemas::EventEnvelope;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Events per read while a subscription catches up by itself: big enough to amortise the
/// round trip, small enough that a page of large payloads stays a few MiB in memory.
pub const SUBSCRIPTION_PAGE: usize = 1_000;

/// Events the ring keeps at most: about 0.8 s of the log at 20,000 appends/s, more than a
/// projection runner's largest batch (2,000) plus its channel (1,024), so subscribers that
/// keep up are all served from memory.
pub const TAIL_RING_EVENTS: usize = 16_384;

/// Bytes (payloads plus [`EVENT_OVERHEAD`] each) the ring keeps at most: payloads may be up to
/// 1 MiB, and the event count alone would then allow 16 GiB.
pub const TAIL_RING_BYTES: usize = 32 << 20;

/// What an event costs in the ring besides its payload (ids, metadata, hashes, allocations),
/// roughly: the byte bound is about memory, not exact accounting.
const EVENT_OVERHEAD: usize = 512;

/// Events a feeder takes from the ring at a time: it holds them while it waits on its
/// subscriber, so this bounds what a slow subscriber pins beyond the ring.
pub const SERVE_CHUNK: usize = 256;

/// Events per read of the tail task.
const TAIL_PAGE: usize = SUBSCRIPTION_PAGE;

/// Bounds of the tail task's retry backoff after a failed read.
const TAIL_RETRY_MIN: Duration = Duration::from_millis(50);
const TAIL_RETRY_MAX: Duration = Duration::from_secs(5);

/// Events read from PostgreSQL for subscriptions, by who read them: with every subscriber at
/// the tail, `tail_events` grows by each appended event once and `own_events` stays still.
#[derive(Debug, Default)]
pub struct SubscriptionStats {
    tail_events: AtomicU64,
    own_events: AtomicU64,
}

impl SubscriptionStats {
    /// Events the shared tail task read (once each, for every subscriber at the tail).
    pub fn tail_events(&self) -> u64 {
        self.tail_events.load(Ordering::Relaxed)
    }

    /// Events feeders read by themselves (behind the ring, or while the tail's reads failed).
    pub fn own_events(&self) -> u64 {
        self.own_events.load(Ordering::Relaxed)
    }
}

/// The newest events of the log, dense.
struct Ring {
    /// Position of `events[0]`; when empty, the position the tail reads next.
    start: u64,
    events: VecDeque<Arc<EventEnvelope>>,
    bytes: usize,
    max_events: usize,
    /// The tail's last read failed (or found a hole) at `next()`: feeders there read by
    /// themselves until it succeeds.
    faulted: bool,
}

/// What a feeder should do for position `next`.
enum Serve {
    /// The ring holds these, from `next` on.
    Events(Vec<Arc<EventEnvelope>>),
    /// Wait for the ring to move.
    Wait,
    /// Read from PostgreSQL: `next` is older than the ring, or the tail is failing.
    ReadYourself,
}

impl Ring {
    /// The position after the ring's last event.
    fn next(&self) -> u64 {
        self.start + self.events.len() as u64
    }

    fn cost(e: &EventEnvelope) -> usize {
        e.payload.len() + EVENT_OVERHEAD
    }

    fn push(&mut self, e: EventEnvelope) {
        debug_assert_eq!(e.global_position, self.next());
        self.bytes += Ring::cost(&e);
        self.events.push_back(Arc::new(e));
        while self.events.len() > self.max_events
            || (self.bytes > TAIL_RING_BYTES && self.events.len() > 1)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes = self.bytes.saturating_sub(Ring::cost(&old));
                self.start += 1;
            }
        }
    }

    fn serve(&self, next: u64) -> Serve {
        if next < self.start {
            return Serve::ReadYourself;
        }
        if next >= self.next() {
            return if self.faulted {
                Serve::ReadYourself
            } else {
                Serve::Wait
            };
        }
        // In range: next - start < len.
        let skip = usize::try_from(next - self.start).unwrap_or(usize::MAX);
        Serve::Events(
            self.events
                .iter()
                .skip(skip)
                .take(SERVE_CHUNK)
                .cloned()
                .collect(),
        )
    }
}

/// A handle on a store's tail task: the ring and a signal that it changed.
#[derive(Clone)]
pub(crate) struct Tail {
    ring: Arc<Mutex<Ring>>,
    stats: Arc<SubscriptionStats>,
    /// Bumped on every change of the ring; closed when the tail task stopped.
    moved: watch::Receiver<u64>,
}

fn lock(ring: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    // The ring is consistent after every statement that mutates it; a panic elsewhere while
    // holding the lock cannot leave it half-changed.
    ring.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tail {
    /// Starts the tail task after the head known now (what is older, subscribers read by
    /// themselves: starting the ring at position 1 would read the whole log).
    pub(crate) fn start(
        pool: Pool,
        head: watch::Receiver<u64>,
        max_events: usize,
        stats: Arc<SubscriptionStats>,
    ) -> Tail {
        let known = *head.borrow();
        let ring = Arc::new(Mutex::new(Ring {
            start: known + 1,
            events: VecDeque::new(),
            bytes: 0,
            max_events: max_events.max(1),
            faulted: false,
        }));
        let (moved_tx, moved) = watch::channel(0u64);
        tokio::spawn(run_tail(pool, head, ring.clone(), moved_tx, stats.clone()));
        Tail { ring, stats, moved }
    }

    /// Whether the tail task has stopped.
    pub(crate) fn stopped(&self) -> bool {
        self.moved.has_changed().is_err()
    }
}

fn signal(moved: &watch::Sender<u64>) {
    moved.send_modify(|v| *v = v.wrapping_add(1));
}

/// The tail task: waits for the head to pass the ring, reads the new events once, appends
/// them to the ring and wakes the feeders. Stops when the store is dropped.
async fn run_tail(
    pool: Pool,
    mut head: watch::Receiver<u64>,
    ring: Arc<Mutex<Ring>>,
    moved: watch::Sender<u64>,
    stats: Arc<SubscriptionStats>,
) {
    // The head value after which an empty read was already retried once.
    let mut reread_at: Option<u64> = None;
    let mut backoff = TAIL_RETRY_MIN;
    loop {
        let next = lock(&ring).next();
        let known = *head.borrow_and_update();
        if known < next {
            if head.wait_for(|h| *h >= next).await.is_err() {
                return;
            }
            continue;
        }
        match read_all_from(&pool, next, TAIL_PAGE).await {
            Ok(page) if page.is_empty() => {
                // The head says `next` is committed, yet the read saw nothing (rows removed
                // by hand, or the head moved while we read): read once more after this head,
                // then wait for a real change rather than spin.
                let known = *head.borrow_and_update();
                if reread_at != Some(known) {
                    reread_at = Some(known);
                    continue;
                }
                if head.changed().await.is_err() {
                    return;
                }
            }
            Ok(page) => {
                stats
                    .tail_events
                    .fetch_add(page.len() as u64, Ordering::Relaxed);
                let hole = {
                    let mut r = lock(&ring);
                    let mut hole = false;
                    for e in page {
                        if e.global_position != r.next() {
                            hole = true;
                            break;
                        }
                        r.push(e);
                    }
                    r.faulted = hole;
                    hole
                };
                signal(&moved);
                if hole {
                    // Positions are dense; the feeders that reach the hole read it themselves
                    // and report it. Retrying is cheap and finds the row if it comes back.
                    tracing::error!(position = lock(&ring).next(), "hole in the event log");
                    if !pause(&mut head, &mut backoff).await {
                        return;
                    }
                } else {
                    backoff = TAIL_RETRY_MIN;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "event log tail read failed; retrying");
                lock(&ring).faulted = true;
                signal(&moved);
                if !pause(&mut head, &mut backoff).await {
                    return;
                }
            }
        }
    }
}

/// Retry backoff (not synchronisation); false when the store was dropped meanwhile.
async fn pause(head: &mut watch::Receiver<u64>, backoff: &mut Duration) -> bool {
    let sleep = tokio::time::sleep(*backoff);
    tokio::pin!(sleep);
    *backoff = (*backoff * 2).min(TAIL_RETRY_MAX);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            changed = head.changed() => if changed.is_err() { return false },
        }
    }
}

/// A subscription's feeder: from the ring when it holds `next`, else from PostgreSQL by
/// itself (a page from `next`, like every feeder before the ring), until it reaches the ring.
pub(crate) async fn feed(
    pool: Pool,
    mut head: watch::Receiver<u64>,
    mut tail: Tail,
    mut next: u64,
    tx: mpsc::Sender<Result<EventEnvelope, StoreError>>,
) {
    // The head value after which an empty read was already retried once.
    let mut reread_at: Option<u64> = None;
    // Whether the tail task still runs; if not, this feeder reads by itself to the end.
    let mut tail_alive = true;
    loop {
        let step = if tail_alive {
            // Mark the ring's state seen before looking at it, so a change after the look
            // wakes the wait below.
            drop(tail.moved.borrow_and_update());
            lock(&tail.ring).serve(next)
        } else {
            Serve::ReadYourself
        };
        match step {
            Serve::Events(events) => {
                for e in events {
                    next += 1;
                    let e = Arc::try_unwrap(e).unwrap_or_else(|shared| (*shared).clone());
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
            Serve::Wait => {
                tokio::select! {
                    _ = tx.closed() => return,
                    moved = tail.moved.changed() => if moved.is_err() { tail_alive = false },
                }
            }
            Serve::ReadYourself => {
                let read = read_page(
                    &pool,
                    &tail.stats,
                    &mut head,
                    &mut next,
                    &mut reread_at,
                    &tx,
                )
                .await;
                match read {
                    Read::More => {}
                    Read::Stop => return,
                }
            }
        }
    }
}

enum Read {
    More,
    Stop,
}

/// One step of a feeder reading by itself: a page from `next`, sent; or, when there is
/// nothing yet, a wait for the head to pass `next`. It always re-reads from `next` (never
/// trusts a notification's number), so coalesced or lost notifications cannot make it skip.
async fn read_page(
    pool: &Pool,
    stats: &SubscriptionStats,
    head: &mut watch::Receiver<u64>,
    next: &mut u64,
    reread_at: &mut Option<u64>,
    tx: &mpsc::Sender<Result<EventEnvelope, StoreError>>,
) -> Read {
    let page = tokio::select! {
        _ = tx.closed() => return Read::Stop,
        page = read_all_from(pool, *next, SUBSCRIPTION_PAGE) => page,
    };
    let page = match page {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return Read::Stop;
        }
    };
    stats
        .own_events
        .fetch_add(page.len() as u64, Ordering::Relaxed);
    if page.is_empty() {
        let known = *head.borrow_and_update();
        if known >= *next && *reread_at != Some(known) {
            // The head passed `next` while we were reading: read again. The head only moves
            // after a commit is visible, so a read started now sees it.
            *reread_at = Some(known);
            return Read::More;
        }
        let at = *next;
        let wait = async {
            if known >= at {
                // Re-read after seeing this head and still nothing (rows removed by hand):
                // wait for a real change rather than spin.
                head.changed().await.is_ok()
            } else {
                head.wait_for(|h| *h >= at).await.is_ok()
            }
        };
        let woke = tokio::select! {
            _ = tx.closed() => return Read::Stop,
            woke = wait => woke,
        };
        // Not woken: the store was dropped.
        return if woke { Read::More } else { Read::Stop };
    }
    for e in page {
        if e.global_position != *next {
            // Positions are dense; a hole means the log was tampered with. Report it rather
            // than silently skip.
            let _ = tx
                .send(Err(StoreError::Corrupt {
                    position: *next,
                    reason: format!("missing; the next event is at {}", e.global_position),
                }))
                .await;
            return Read::Stop;
        }
        *next += 1;
        if tx.send(Ok(e)).await.is_err() {
            return Read::Stop;
        }
    }
    Read::More
}

#[cfg(test)]
mod tests {
    use super::*;
    use mykey_schemas::{EventMetadata, Hash, StreamId};
    use uuid::Uuid;

    fn event(position: u64, payload_len: usize) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::new_v4(),
            stream_id: StreamId::new("ring", 1).unwrap_or_else(|e| panic!("{e}")),
            stream_version: position,
            global_position: position,
            event_type: "RingTested".into(),
            schema_version: 1,
            payload: "x".repeat(payload_len),
            metadata: EventMetadata {
                actor_id: "t".into(),
                actor_role: "operator".into(),
                command_id: Uuid::new_v4(),
                correlation_id: Uuid::new_v4(),
                causation_id: Uuid::new_v4(),
                patch_id: None,
                client_addr: None,
            },
            recorded_at: chrono::Utc::now(),
            prev_hash: Hash([0; 32]),
            hash: Hash([0; 32]),
        }
    }

    fn ring(start: u64, max_events: usize) -> Ring {
        Ring {
            start,
            events: VecDeque::new(),
            bytes: 0,
            max_events,
            faulted: false,
        }
    }

    fn positions(s: Serve) -> Vec<u64> {
        match s {
            Serve::Events(v) => v.iter().map(|e| e.global_position).collect(),
            Serve::Wait => panic!("expected events, got Wait"),
            Serve::ReadYourself => panic!("expected events, got ReadYourself"),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_events_and_sends_older_positions_to_the_database() {
        let mut r = ring(5, 4);
        assert!(matches!(r.serve(5), Serve::Wait));
        assert!(matches!(r.serve(4), Serve::ReadYourself));
        for p in 5..=10 {
            r.push(event(p, 10));
        }
        assert_eq!((r.start, r.next()), (7, 11));
        assert!(matches!(r.serve(6), Serve::ReadYourself));
        assert_eq!(positions(r.serve(7)), vec![7, 8, 9, 10]);
        assert_eq!(positions(r.serve(9)), vec![9, 10]);
        assert!(matches!(r.serve(11), Serve::Wait));
        r.faulted = true;
        assert!(matches!(r.serve(11), Serve::ReadYourself));
        assert_eq!(positions(r.serve(10)), vec![10]);
    }

    #[test]
    fn the_ring_is_bounded_by_bytes_but_keeps_the_newest_event() {
        let mut r = ring(1, usize::MAX);
        r.push(event(1, TAIL_RING_BYTES / 2));
        r.push(event(2, TAIL_RING_BYTES / 2));
        assert_eq!((r.start, r.next()), (2, 3), "the older one is evicted");
        r.push(event(3, TAIL_RING_BYTES * 2));
        assert_eq!((r.start, r.next()), (3, 4), "one oversized event stays");
        assert!(r.bytes >= TAIL_RING_BYTES * 2);
    }

    #[test]
    fn a_chunk_is_bounded() {
        let mut r = ring(1, 10_000);
        for p in 1..=1_000 {
            r.push(event(p, 1));
        }
        assert_eq!(
            positions(r.serve(1)),
            (1..=SERVE_CHUNK as u64).collect::<Vec<_>>()
        );
    }
}
