//! Hash-chain verification, independent of where the events come from.

use mykey_schemas::{EventEnvelope, Hash, GENESIS_HASH};
use serde::{Deserialize, Serialize};

/// How the chain is broken at a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreakKind {
    /// The stored hash does not match the event's contents: the row was edited
    /// (or moved to another position, which the hash also covers).
    HashMismatch { stored: Hash, computed: Hash },
    /// The event does not link to its predecessor: the predecessor was replaced or removed.
    PrevHashMismatch { stored: Hash, expected: Hash },
    /// The position is missing: the next event found is at `found` (None: the log ends early).
    Missing { found: Option<u64> },
    /// The event at this position appears a second time (`repeated_at`: where the
    /// sequence had already reached).
    Duplicated { repeated_at: u64 },
    /// The event due here comes later: `found` came first (two events swapped or moved).
    Reordered { found: u64 },
    /// The source ends before `expected_last`, a position a manifest or a signed checkpoint
    /// vouches for: the newest events were cut off.
    Truncated { expected_last: u64 },
    /// The chain is consistent in itself but the hash at this position is not the one a
    /// signed checkpoint holds: events at or before it were rewritten with every later hash
    /// recomputed. `since`: the first position not covered by an earlier checkpoint that
    /// matched (the forgery lies in `since..=position`).
    CheckpointMismatch {
        signed: Hash,
        found: Hash,
        since: u64,
    },
}

impl ChainBreakKind {
    /// One word for people and exit messages.
    pub fn label(&self) -> &'static str {
        match self {
            ChainBreakKind::HashMismatch { .. } => "edited",
            ChainBreakKind::PrevHashMismatch { .. } => "relinked",
            ChainBreakKind::Missing { .. } => "missing",
            ChainBreakKind::Duplicated { .. } => "duplicated",
            ChainBreakKind::Reordered { .. } => "reordered",
            ChainBreakKind::Truncated { .. } => "truncated",
            ChainBreakKind::CheckpointMismatch { .. } => "forged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    /// The first global position at which the chain does not hold.
    pub position: u64,
    #[serde(flatten)]
    pub kind: ChainBreakKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub from: u64,
    /// Events that verified before the first break (or in total).
    pub verified: u64,
    /// Hash of the last verified event: an auditor can compare it with a published anchor.
    pub last_hash: Option<Hash>,
    pub first_break: Option<ChainBreak>,
}

impl ChainBreak {
    /// A sentence for the auditor.
    pub fn explain(&self) -> String {
        let p = self.position;
        match &self.kind {
            ChainBreakKind::HashMismatch { stored, computed } => format!(
                "position {p}: edited — the event's contents hash to {computed}, the stored hash is {stored}"
            ),
            ChainBreakKind::PrevHashMismatch { stored, expected } => format!(
                "position {p}: relinked — it links to {stored}, but its predecessor hashes to {expected} \
                 (the predecessor was replaced with a recomputed hash)"
            ),
            ChainBreakKind::Missing { found: Some(f) } => {
                format!("position {p}: missing — the next event present is at {f}")
            }
            ChainBreakKind::Missing { found: None } => {
                format!("position {p}: missing — the source ends before it")
            }
            ChainBreakKind::Duplicated { repeated_at } => format!(
                "position {p}: duplicated — it appears again where position {repeated_at} was due"
            ),
            ChainBreakKind::Reordered { found } => {
                format!("position {p}: reordered — position {found} comes before it")
            }
            ChainBreakKind::Truncated { expected_last } => format!(
                "position {p}: truncated tail — the source ends at {}, but it must reach {expected_last}",
                p.saturating_sub(1)
            ),
            ChainBreakKind::CheckpointMismatch {
                signed,
                found,
                since,
            } => format!(
                "position {p}: forged — a signed checkpoint holds {signed} here, the log has {found}: \
                 events in {since}..={p} were rewritten with recomputed hashes"
            ),
        }
    }
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Feeds events in global order; reports the first break. The one place the chain is checked:
/// the store's [`crate::verify`], and `mykey-replay verify` over PostgreSQL or a file.
///
/// Memory is constant: the checker keeps the last hash, one event's worth of lookahead (to
/// tell a missing event from two swapped ones) and the checkpoints it was given.
#[derive(Debug)]
pub struct ChainChecker {
    from: u64,
    expected_position: u64,
    prev_hash: Option<Hash>,
    verified: u64,
    /// An event seen ahead of its turn: missing or reordered, decided by the next event.
    ahead: Option<u64>,
    /// Signed (position, hash) pairs, ascending; `next_checkpoint` indexes the next one due.
    checkpoints: Vec<(u64, Hash)>,
    next_checkpoint: usize,
    /// Checkpoints the checked events matched.
    checkpoints_matched: u64,
    /// The last position a matched checkpoint covers (0: none yet).
    covered_to: u64,
    /// Gaps allowed (an export of chosen streams): links are checked only between
    /// consecutive positions, every event's own hash always.
    sparse: bool,
}

impl ChainChecker {
    pub fn new(from: u64) -> ChainChecker {
        let from = from.max(1);
        ChainChecker {
            from,
            expected_position: from,
            // Position 1 links to the genesis hash; a later start is anchored by `anchor`.
            prev_hash: (from == 1).then_some(GENESIS_HASH),
            verified: 0,
            ahead: None,
            checkpoints: Vec::new(),
            next_checkpoint: 0,
            checkpoints_matched: 0,
            covered_to: 0,
            sparse: false,
        }
    }

    /// A checker for a selection of the log (chosen streams or categories): positions must
    /// increase, each event's hash must match its contents, and an event that directly follows
    /// its predecessor must link to it. Completeness cannot be proven from a selection.
    pub fn sparse(from: u64) -> ChainChecker {
        ChainChecker {
            sparse: true,
            ..ChainChecker::new(from)
        }
    }

    /// Sets the predecessor of the first checked event (the event at `from - 1`).
    pub fn anchor(&mut self, prev: &EventEnvelope) {
        self.prev_hash = Some(prev.hash);
    }

    /// Sets the hash the first checked event must link to (a manifest's first `prev_hash`).
    pub fn anchor_hash(&mut self, prev_hash: Hash) {
        self.prev_hash = Some(prev_hash);
    }

    /// Adds signed checkpoints (position, hash). Checkpoints before `from` cannot be checked
    /// from this range and are dropped; [`ChainChecker::finish`] reports a checkpoint beyond
    /// the last event as a truncated tail.
    pub fn with_checkpoints(mut self, checkpoints: impl IntoIterator<Item = (u64, Hash)>) -> Self {
        self.checkpoints
            .extend(checkpoints.into_iter().filter(|(p, _)| *p >= self.from));
        self.checkpoints.sort_unstable_by_key(|(p, _)| *p);
        self.checkpoints.dedup();
        self
    }

    /// Checkpoints matched so far.
    pub fn checkpoints_matched(&self) -> u64 {
        self.checkpoints_matched
    }

    /// The next position due.
    pub fn expected_position(&self) -> u64 {
        self.expected_position
    }

    fn at(&self, kind: ChainBreakKind) -> Option<ChainBreak> {
        Some(ChainBreak {
            position: self.expected_position,
            kind,
        })
    }

    pub fn check(&mut self, e: &EventEnvelope) -> Option<ChainBreak> {
        self.check_hashed(e, None)
    }

    /// [`ChainChecker::check`] with the event's hash already recomputed (`e.compute_hash()`)
    /// elsewhere: hashing is independent per event, so callers may do it in parallel and keep
    /// only the order-dependent checks here.
    pub fn check_hashed(
        &mut self,
        e: &EventEnvelope,
        computed: Option<Hash>,
    ) -> Option<ChainBreak> {
        let found = e.global_position;
        if let Some(ahead) = self.ahead.take() {
            // `ahead` came where `expected_position` was due. If the sequence now goes back,
            // the due event was moved, not lost.
            return if found < ahead {
                self.at(ChainBreakKind::Reordered { found: ahead })
            } else {
                self.at(ChainBreakKind::Missing { found: Some(ahead) })
            };
        }
        if self.sparse && found > self.expected_position {
            // A gap of events not selected: the predecessor is unknown.
            self.expected_position = found;
            self.prev_hash = None;
        }
        let position = self.expected_position;
        if found > position {
            self.ahead = Some(found);
            return None;
        }
        if found < position && self.sparse {
            // A selection has no lookahead to tell a copy from a move: it is out of order.
            return Some(ChainBreak {
                position: found,
                kind: ChainBreakKind::Reordered {
                    found: position - 1,
                },
            });
        }
        if found < position {
            // Without an earlier jump ahead, a lower position was already seen.
            return Some(ChainBreak {
                position: found,
                kind: ChainBreakKind::Duplicated {
                    repeated_at: position,
                },
            });
        }
        let computed = computed.unwrap_or_else(|| e.compute_hash());
        if computed != e.hash {
            return self.at(ChainBreakKind::HashMismatch {
                stored: e.hash,
                computed,
            });
        }
        if let Some(expected) = self.prev_hash {
            if e.prev_hash != expected {
                return self.at(ChainBreakKind::PrevHashMismatch {
                    stored: e.prev_hash,
                    expected,
                });
            }
        }
        if let Some(&(cp, signed)) = self.checkpoints.get(self.next_checkpoint) {
            if cp == position {
                if signed != e.hash {
                    return self.at(ChainBreakKind::CheckpointMismatch {
                        signed,
                        found: e.hash,
                        since: self.covered_to.max(self.from - 1) + 1,
                    });
                }
                self.next_checkpoint += 1;
                self.checkpoints_matched += 1;
                self.covered_to = position;
            }
        }
        self.prev_hash = Some(e.hash);
        self.expected_position += 1;
        self.verified += 1;
        None
    }

    /// Call after the last event: `to` is the last position the source must reach (the log's
    /// head, a manifest's last position); a checkpoint beyond the end also counts.
    pub fn finish(&mut self, to: u64) -> Option<ChainBreak> {
        if self.sparse {
            // Only a position the selection claims to reach, or a checkpoint, can be missed.
            let last_seen = self.expected_position.saturating_sub(1);
            let must_reach = self.checkpoints.last().map_or(0, |(p, _)| *p).max(to);
            return (self.verified > 0 && last_seen < must_reach).then_some(ChainBreak {
                position: self.expected_position,
                kind: ChainBreakKind::Truncated {
                    expected_last: must_reach,
                },
            });
        }
        if let Some(ahead) = self.ahead.take() {
            return self.at(ChainBreakKind::Missing { found: Some(ahead) });
        }
        let signed_to = self
            .checkpoints
            .get(self.next_checkpoint..)
            .and_then(|rest| rest.last())
            .map_or(0, |(p, _)| *p);
        let must_reach = to.max(signed_to);
        (self.expected_position <= must_reach).then_some(ChainBreak {
            position: self.expected_position,
            kind: if signed_to > to {
                ChainBreakKind::Truncated {
                    expected_last: signed_to,
                }
            } else {
                ChainBreakKind::Missing { found: None }
            },
        })
    }

    /// Like [`ChainChecker::finish`] for a source that claims to end at `to` (a manifest): a
    /// shorter source is a truncated tail, not a gap.
    pub fn finish_truncated(&mut self, to: u64) -> Option<ChainBreak> {
        self.finish(to).map(|mut b| {
            if matches!(b.kind, ChainBreakKind::Missing { found: None }) {
                b.kind = ChainBreakKind::Truncated { expected_last: to };
            }
            b
        })
    }

    pub fn report(&self, first_break: Option<ChainBreak>) -> VerifyReport {
        VerifyReport {
            from: self.from,
            verified: self.verified,
            last_hash: if self.verified > 0 {
                self.prev_hash
            } else {
                None
            },
            first_break,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use mykey_schemas::{EventMetadata, NewEvent, StreamId};
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
                StreamId::parse("test-1").unwrap(),
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

    fn first_break(events: &[EventEnvelope], to: u64, cps: &[(u64, Hash)]) -> Option<ChainBreak> {
        let mut c = ChainChecker::new(1).with_checkpoints(cps.iter().copied());
        for e in events {
            if let Some(b) = c.check(e) {
                return Some(b);
            }
        }
        c.finish_truncated(to)
    }

    fn kind_at(b: Option<ChainBreak>) -> (u64, &'static str) {
        let b = b.expect("a break");
        (b.position, b.kind.label())
    }

    #[test]
    fn each_tampering_is_reported_at_its_position_with_its_kind() {
        let clean = chain(10);
        assert_eq!(first_break(&clean, 10, &[(10, clean[9].hash)]), None);

        let mut edited = clean.clone();
        edited[3].payload = "{\"n\":400}".into();
        assert_eq!(kind_at(first_break(&edited, 10, &[])), (4, "edited"));

        let mut deleted = clean.clone();
        deleted.remove(4);
        assert_eq!(kind_at(first_break(&deleted, 10, &[])), (5, "missing"));

        let mut swapped = clean.clone();
        swapped.swap(5, 6);
        let b = first_break(&swapped, 10, &[]).expect("break");
        assert_eq!(
            (b.position, b.kind.clone()),
            (6, ChainBreakKind::Reordered { found: 7 })
        );

        let mut duplicated = clean.clone();
        duplicated.insert(3, clean[2].clone());
        let b = first_break(&duplicated, 10, &[]).expect("break");
        assert_eq!(
            (b.position, b.kind.clone()),
            (3, ChainBreakKind::Duplicated { repeated_at: 4 })
        );

        let truncated = &clean[..8];
        let b = first_break(truncated, 10, &[]).expect("break");
        assert_eq!(
            (b.position, b.kind),
            (9, ChainBreakKind::Truncated { expected_last: 10 })
        );
        // Without a manifest's end, a checkpoint beyond the end reveals the cut.
        let b = first_break(truncated, 0, &[(10, clean[9].hash)]).expect("break");
        assert_eq!(
            (b.position, b.kind),
            (9, ChainBreakKind::Truncated { expected_last: 10 })
        );

        // The newest events rewritten and every hash recomputed: only a checkpoint sees it.
        let mut forged = chain(7);
        forged.extend(chain(10).into_iter().skip(7).map(|mut e| {
            e.payload = format!("{{\"forged\":{}}}", e.global_position);
            e
        }));
        for i in 7..10 {
            forged[i].prev_hash = forged[i - 1].hash;
            forged[i].hash = forged[i].compute_hash();
        }
        assert_eq!(first_break(&forged, 10, &[]), None, "chain alone is fooled");
        let b =
            first_break(&forged, 10, &[(5, clean[4].hash), (10, clean[9].hash)]).expect("break");
        assert_eq!(b.position, 10);
        assert!(
            matches!(b.kind, ChainBreakKind::CheckpointMismatch { since: 6, .. }),
            "{b:?}"
        );
        assert!(b.explain().contains("6..=10"), "{}", b.explain());
    }

    #[test]
    fn a_selection_checks_hashes_and_links_where_it_can() {
        let clean = chain(8);
        let pick = |idx: &[usize]| idx.iter().map(|i| clean[*i].clone()).collect::<Vec<_>>();
        let run = |events: &[EventEnvelope], to: u64| {
            let mut c = ChainChecker::sparse(1);
            for e in events {
                if let Some(b) = c.check(e) {
                    return Some(b);
                }
            }
            c.finish(to)
        };
        assert_eq!(run(&pick(&[1, 2, 5, 7]), 8), None);
        let mut edited = pick(&[1, 2, 5, 7]);
        edited[2].payload = "{}".into();
        assert_eq!(kind_at(run(&edited, 8)), (6, "edited"));
        assert_eq!(kind_at(run(&pick(&[1, 5, 2]), 8)), (3, "reordered"));
        assert_eq!(kind_at(run(&pick(&[1, 2]), 6)), (4, "truncated"));
        let mut relinked = pick(&[1, 2]);
        relinked[1].prev_hash = Hash([1; 32]);
        relinked[1].hash = relinked[1].compute_hash();
        assert_eq!(kind_at(run(&relinked, 3)), (3, "relinked"));
    }

    #[test]
    fn a_range_is_anchored_and_counts_its_checkpoints() {
        let clean = chain(6);
        let mut c = ChainChecker::new(3).with_checkpoints([(2, clean[1].hash), (4, clean[3].hash)]);
        c.anchor_hash(clean[1].hash);
        for e in &clean[2..] {
            assert_eq!(c.check(e), None);
        }
        assert_eq!(c.finish(6), None);
        assert_eq!(
            c.checkpoints_matched(),
            1,
            "the checkpoint before the range is skipped"
        );
        let mut wrong = ChainChecker::new(3);
        wrong.anchor_hash(clean[0].hash);
        assert_eq!(kind_at(wrong.check(&clean[2])), (3, "relinked"));
    }
}
