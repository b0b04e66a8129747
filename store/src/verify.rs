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

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Feeds events in global order; reports the first break.
#[derive(Debug)]
pub struct ChainChecker {
    from: u64,
    expected_position: u64,
    prev_hash: Option<Hash>,
    verified: u64,
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
        }
    }

    /// Sets the predecessor of the first checked event (the event at `from - 1`).
    pub fn anchor(&mut self, prev: &EventEnvelope) {
        self.prev_hash = Some(prev.hash);
    }

    pub fn check(&mut self, e: &EventEnvelope) -> Option<ChainBreak> {
        let position = self.expected_position;
        if e.global_position != position {
            return Some(ChainBreak {
                position,
                kind: ChainBreakKind::Missing {
                    found: Some(e.global_position),
                },
            });
        }
        let computed = e.compute_hash();
        if computed != e.hash {
            return Some(ChainBreak {
                position,
                kind: ChainBreakKind::HashMismatch {
                    stored: e.hash,
                    computed,
                },
            });
        }
        if let Some(expected) = self.prev_hash {
            if e.prev_hash != expected {
                return Some(ChainBreak {
                    position,
                    kind: ChainBreakKind::PrevHashMismatch {
                        stored: e.prev_hash,
                        expected,
                    },
                });
            }
        }
        self.prev_hash = Some(e.hash);
        self.expected_position += 1;
        self.verified += 1;
        None
    }

    /// Call after the last event: a range that ends before `to` is missing its tail.
    pub fn finish(&self, to: u64) -> Option<ChainBreak> {
        (self.expected_position <= to).then_some(ChainBreak {
            position: self.expected_position,
            kind: ChainBreakKind::Missing { found: None },
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
