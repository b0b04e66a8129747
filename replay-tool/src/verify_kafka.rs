//! `verify --kafka`: the hash chain recomputed from the relay's topics.
//!
//! The chain needs global order; Kafka keeps order only within a partition, and there the
//! relay writes positions in ascending order (except its re-sends). So:
//!
//! 1. **Merge** ([`Merge`]): a k-way merge by global position over every partition of every
//!    category topic, holding one record per partition (constant memory: the number of
//!    partitions, not the length of the log). If every partition is in order, the output is in
//!    global order.
//! 2. **Repeats** ([`KafkaChain`]): delivery is at-least-once, so a position the chain already
//!    passed can come again. It is skipped when it is the same event (its own hash holds and
//!    equals the hash verified at that position, remembered for the last [`REPEAT_WINDOW`]
//!    positions); a repeat with other contents is a break at that position (duplicated, or
//!    edited when its own hash does not hold). The relay re-sends at most what was in flight
//!    plus what was acknowledged within one commit interval; the window is a multiple of that.
//! 3. **Chain** ([`mykey_store::verify::ChainChecker`], the one place the chain is checked):
//!    a gap is a missing position, a position that comes back below one seen ahead of its
//!    turn (a partition out of order) is reordered, checkpoints beyond the last record are a
//!    truncated tail, a consistent chain that disagrees with a signed checkpoint is forged.

use crate::kafka::{self, Location, PartitionSource, ReadError, Record};
use crate::progress::{Progress, Unit};
use crate::verify::Verification;
use crate::ToolError;
use mykey_schemas::{EventEnvelope, Hash};
use mykey_store::verify::{ChainBreak, ChainBreakKind, ChainChecker};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Positions behind the chain's head whose hashes are kept to recognise a re-send
/// (32 bytes each: 6.4 MB). Four times the relay's in-flight bound.
pub const REPEAT_WINDOW: u64 = 4 * mykey_projections::kafka::relay::MAX_IN_FLIGHT as u64;

/// Progress is reported every this many records.
const PROGRESS_EVERY: u64 = 10_000;

/// A k-way merge of partitions by global position (ties: the lower partition index first).
#[derive(Debug)]
pub struct Merge<P> {
    parts: Vec<P>,
    heads: Vec<Option<Record>>,
    /// (position, partition index) of each present head.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl<P: PartitionSource> Merge<P> {
    /// Reads the first record of every partition.
    pub fn new(mut parts: Vec<P>) -> Result<Merge<P>, ReadError> {
        let mut heads = Vec::with_capacity(parts.len());
        let mut heap = BinaryHeap::with_capacity(parts.len());
        for (i, p) in parts.iter_mut().enumerate() {
            let head = p.next_record()?;
            if let Some(r) = &head {
                heap.push(Reverse((r.event.global_position, i)));
            }
            heads.push(head);
        }
        Ok(Merge { parts, heads, heap })
    }

    /// The record with the lowest position among the partitions' next ones.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        let Some(Reverse((_, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let record = self.heads[i].take();
        let next = self.parts[i].next_record()?;
        if let Some(r) = &next {
            self.heap.push(Reverse((r.event.global_position, i)));
        }
        self.heads[i] = next;
        Ok(record)
    }
}

/// The chain over merged records: repeats recognised, everything else to the checker.
#[derive(Debug)]
pub struct KafkaChain {
    checker: ChainChecker,
    /// Hash verified at position p, at index `p % REPEAT_WINDOW` (allocated as positions come).
    recent: Vec<Hash>,
    /// Identical re-sends skipped.
    pub repeats: u64,
}

impl KafkaChain {
    pub fn new(checker: ChainChecker) -> KafkaChain {
        KafkaChain {
            checker,
            recent: Vec::new(),
            repeats: 0,
        }
    }

    pub fn checker(&self) -> &ChainChecker {
        &self.checker
    }

    pub fn checker_mut(&mut self) -> &mut ChainChecker {
        &mut self.checker
    }

    fn slot(p: u64) -> usize {
        // REPEAT_WINDOW fits in usize; the remainder is below it.
        (p % REPEAT_WINDOW) as usize
    }

    /// Feeds the next merged event; returns the first break.
    pub fn feed(&mut self, e: &EventEnvelope) -> Option<ChainBreak> {
        let p = e.global_position;
        let next = self.checker.expected_position();
        if p < next {
            return self.repeat(e, next);
        }
        let computed = e.compute_hash();
        let b = self.checker.check_hashed(e, Some(computed));
        if b.is_none() && self.checker.expected_position() == p + 1 {
            let slot = Self::slot(p);
            if slot >= self.recent.len() {
                self.recent.resize(slot + 1, Hash([0; 32]));
            }
            self.recent[slot] = e.hash;
        }
        b
    }

    /// `e` is at a position the chain already verified (`next` is due).
    fn repeat(&mut self, e: &EventEnvelope, next: u64) -> Option<ChainBreak> {
        let p = e.global_position;
        let computed = e.compute_hash();
        if computed != e.hash {
            return Some(ChainBreak {
                position: p,
                kind: ChainBreakKind::HashMismatch {
                    stored: e.hash,
                    computed,
                },
            });
        }
        let known = (next - p <= REPEAT_WINDOW)
            .then(|| self.recent.get(Self::slot(p)))
            .flatten();
        match known {
            Some(h) if *h == e.hash => {
                self.repeats += 1;
                None
            }
            // Other contents, or a copy from further back than any re-send reaches.
            _ => Some(ChainBreak {
                position: p,
                kind: ChainBreakKind::Duplicated { repeated_at: next },
            }),
        }
    }
}

/// After a gap at `position`: reads the rest of the topics for it. Found, it is not missing
/// but out of order (a partition holds it after later positions); the merge cannot see that
/// before it passes the gap. Reads on only when the log is already broken, keeps nothing.
fn find_later<P: PartitionSource>(
    merge: &mut Merge<P>,
    position: u64,
) -> Result<Option<Location>, ReadError> {
    while let Some(r) = merge.next_record()? {
        if r.event.global_position == position {
            return Ok(Some(r.at));
        }
    }
    Ok(None)
}

/// Why the break at `b` was found at `at` (for the auditor's report).
fn describe(b: &ChainBreak, at: &Location, repeated: bool) -> String {
    if repeated {
        format!(
            "{at} holds position {} again with other contents than the event verified there \
             (or further back than any relay re-send reaches)",
            b.position
        )
    } else {
        format!("found reading {at}")
    }
}

/// Where the chain checked from Kafka starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Position 1, linked to the genesis hash.
    Genesis,
    /// The position after a signed checkpoint (`position`, `hash`): records before it are
    /// passed over unchecked (retention may have dropped some of them already).
    After { position: u64, hash: Hash },
}

/// Verifies the topics `<prefix>.<category>` on `brokers` into `v`. Blocking (librdkafka):
/// `verify` runs it on a blocking thread.
pub(crate) fn verify(
    brokers: &str,
    prefix: &str,
    start: Start,
    signed: Vec<(u64, Hash)>,
    mut v: Verification,
) -> Result<Verification, ToolError> {
    let reader = kafka::open(brokers, prefix)?;
    v.source = format!(
        "Kafka {brokers}, {} topic(s) {prefix}.<category> ({} partitions, about {} records by the watermarks at the start)",
        reader.topics.len(),
        reader.partitions.len(),
        reader.records
    );
    if reader.topics.is_empty() {
        v.notes
            .push(format!("no topic {prefix}.<category> on the brokers"));
    }
    v.notes.push(
        "Kafka holds what the relay published: events not yet relayed are not checked, and a \
         checkpoint beyond them reads as a truncated tail"
            .into(),
    );
    let (first, mut checker) = match start {
        Start::Genesis => (1, ChainChecker::new(1)),
        Start::After { position, hash } => {
            let mut c = ChainChecker::new(position + 1);
            c.anchor_hash(hash);
            v.notes.push(format!(
                "verified from position {} on, linked to the signed checkpoint at {position}",
                position + 1
            ));
            (position + 1, c)
        }
    };
    checker = checker.with_checkpoints(signed);
    let mut chain = KafkaChain::new(checker);
    let mut before_start = 0u64;
    let mut progress = Progress::new("verify", Some(reader.records), Unit::Events);
    let mut first_break = None;
    let mut pending = 0u64;
    let result = Merge::new(reader.partitions).and_then(|mut merge| {
        while let Some(r) = merge.next_record()? {
            if r.event.global_position < first {
                before_start += 1;
                continue;
            }
            let before = chain.checker().expected_position();
            if let Some(mut b) = chain.feed(&r.event) {
                let repeated = r.event.global_position < before
                    && matches!(b.kind, ChainBreakKind::Duplicated { .. });
                let mut at = r.at;
                if let ChainBreakKind::Missing { found: Some(ahead) } = b.kind {
                    if let Some(later) = find_later(&mut merge, b.position)? {
                        b.kind = ChainBreakKind::Reordered { found: ahead };
                        at = later;
                    }
                }
                v.record = Some(at.to_string());
                v.notes.push(describe(&b, &at, repeated));
                first_break = Some(b);
                break;
            }
            pending += 1;
            if pending == PROGRESS_EVERY {
                progress.advance(pending, pending);
                pending = 0;
            }
        }
        Ok(())
    });
    progress.advance(pending, pending);
    progress.finish();
    match result {
        Ok(()) => {}
        Err(ReadError::Undecodable { at, reason }) => {
            v.record = Some(at.to_string());
            v.failed(format!("{at}: not a relayed event: {reason}"));
        }
        Err(e) => return Err(e.into()),
    }
    if before_start > 0 {
        v.notes.push(format!(
            "{before_start} record(s) before position {first} passed over (before the anchor)"
        ));
    }
    if chain.repeats > 0 {
        v.notes.push(format!(
            "{} record(s) repeated an event already verified, with the same contents (at-least-once delivery)",
            chain.repeats
        ));
    }
    if first_break.is_none() && v.problem.is_none() {
        first_break = chain.checker_mut().finish(0);
    }
    crate::verify::conclude(&mut v, chain.checker(), first_break);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mykey_schemas::{EventMetadata, NewEvent, StreamId, GENESIS_HASH};
    use uuid::Uuid;

    fn chain(n: u64) -> Vec<EventEnvelope> {
        let mut out: Vec<EventEnvelope> = Vec::new();
        for p in 1..=n {
            let prev = out.last().map_or(GENESIS_HASH, |e| e.hash);
            out.push(EventEnvelope::seal(
                NewEvent {
                    event_id: Uuid::from_u128(u128::from(p)),
                    event_type: "Test.Happened".into(),
                    schema_version: 1,
                    payload: format!("{{\"n\":{p}}}"),
                },
                StreamId::new("test", p % 3).unwrap(),
                p,
                p,
                EventMetadata {
                    actor_id: "op".into(),
                    actor_role: "operator".into(),
                    command_id: Uuid::from_u128(1000 + u128::from(p)),
                    correlation_id: Uuid::from_u128(1),
                    causation_id: Uuid::from_u128(1),
                    patch_id: None,
                    client_addr: None,
                },
                chrono::DateTime::from_timestamp(1_790_000_000 + p as i64, 0).unwrap(),
                prev,
            ));
        }
        out
    }

    /// A partition in memory.
    struct Part(std::vec::IntoIter<EventEnvelope>, i32, i64);

    impl PartitionSource for Part {
        fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
            self.2 += 1;
            Ok(self.0.next().map(|event| Record {
                event,
                at: Location {
                    topic: "t.test".into(),
                    partition: self.1,
                    offset: self.2,
                },
            }))
        }
    }

    /// Partitions as lists of positions of `log` (1-based).
    fn run(log: &[EventEnvelope], parts: &[&[u64]], to: u64) -> (Option<ChainBreak>, u64) {
        let parts = parts
            .iter()
            .enumerate()
            .map(|(i, ps)| {
                let events: Vec<_> = ps.iter().map(|p| log[(*p - 1) as usize].clone()).collect();
                Part(events.into_iter(), i as i32, -1)
            })
            .collect();
        let mut merge = Merge::new(parts).unwrap();
        let mut chain = KafkaChain::new(ChainChecker::new(1));
        while let Some(r) = merge.next_record().unwrap() {
            if let Some(mut b) = chain.feed(&r.event) {
                if let ChainBreakKind::Missing { found: Some(ahead) } = b.kind {
                    if find_later(&mut merge, b.position).unwrap().is_some() {
                        b.kind = ChainBreakKind::Reordered { found: ahead };
                    }
                }
                return (Some(b), chain.repeats);
            }
        }
        (chain.checker_mut().finish(to), chain.repeats)
    }

    fn label(b: &Option<ChainBreak>) -> Option<(u64, &'static str)> {
        b.as_ref().map(|b| (b.position, b.kind.label()))
    }

    #[test]
    fn partitions_merge_into_global_order_and_identical_resends_are_skipped() {
        let log = chain(9);
        let (b, repeats) = run(&log, &[&[1, 4, 7], &[2, 5, 8], &[3, 6, 9]], 9);
        assert_eq!((b, repeats), (None, 0));
        // The relay restarted twice: 4..=7 and 8 came again.
        let (b, repeats) = run(
            &log,
            &[&[1, 4, 7, 4, 7], &[2, 5, 8, 5, 8, 8], &[3, 6, 9]],
            9,
        );
        assert_eq!((b, repeats), (None, 5));
    }

    #[test]
    fn a_gap_is_missing_and_a_partition_out_of_order_is_reordered() {
        let log = chain(9);
        let (b, _) = run(&log, &[&[1, 4, 7], &[2, 8], &[3, 6, 9]], 9);
        assert_eq!(label(&b), Some((5, "missing")));
        let (b, _) = run(&log, &[&[1, 4, 7], &[2, 8, 5], &[3, 6, 9]], 9);
        assert_eq!(label(&b), Some((5, "reordered")));
        // The tail is gone: only a claim (here `to`) or a checkpoint can tell.
        let (b, _) = run(&log, &[&[1, 4, 7], &[2, 5], &[3, 6]], 8);
        assert_eq!(label(&b), Some((8, "missing")));
    }

    #[test]
    fn a_repeat_with_other_contents_is_a_break_at_its_position() {
        let log = chain(6);
        let mut forged = log[1].clone();
        forged.payload = "{\"n\":\"forged\"}".into();
        forged.hash = forged.compute_hash();
        let mut edited = log[1].clone();
        edited.payload = "{\"n\":\"edited\"}".into();
        let mut all = log.clone();
        all.push(forged);
        all.push(edited);
        // Position 2 first, then its forged copy (index 7) after 5 in the same partition.
        let (b, _) = run(&all, &[&[1, 4], &[2, 5, 7, 6], &[3]], 6);
        assert_eq!(
            b,
            Some(ChainBreak {
                position: 2,
                kind: ChainBreakKind::Duplicated { repeated_at: 6 }
            })
        );
        let (b, _) = run(&all, &[&[1, 4], &[2, 5, 8, 6], &[3]], 6);
        assert_eq!(label(&b), Some((2, "edited")));
    }

    #[test]
    fn a_copy_from_beyond_the_repeat_window_is_not_taken_for_a_resend() {
        let log = chain(3);
        let mut c = KafkaChain::new(ChainChecker::new(1));
        for e in &log {
            assert_eq!(c.feed(e), None);
        }
        assert_eq!(c.feed(&log[0]), None, "a re-send within the window");
        // Pretend the chain moved far on: the copy of position 1 is then out of reach.
        let far = ChainChecker::new(REPEAT_WINDOW + 5);
        let mut c = KafkaChain {
            checker: far,
            recent: c.recent.clone(),
            repeats: 0,
        };
        assert_eq!(
            label(&c.feed(&log[0])),
            Some((1, "duplicated")),
            "beyond the window"
        );
    }
}
