//! Test support: a given/when/then helper for pure decisions, and a deterministic clock and
//! id source for handler tests. Public so the integration tests can use them too.
//!
//! ```
//! use mykey_commands::testing::given;
//! use mykey_domain::relying_party::{RelyingParty, RelyingPartyCommand};
//! use mykey_domain::{ErrorCode, Role};
//! given::<RelyingParty>([])
//!     .by("op-1", Role::Operator)
//!     .when(RelyingPartyCommand::Resume)
//!     .then_reject(ErrorCode::RP_NOT_FOUND);
//! ```

use chrono::{DateTime, TimeZone, Utc};
use mykey_domain::{Actor, Aggregate, Context, DomainError, ErrorCode, Role};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// The tests' "now" unless they say otherwise: 2026-04-01T00:00:00Z.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Ids 1, 2, 3, ... as uuids: deterministic and readable in failures.
#[derive(Debug, Clone, Default)]
pub struct SequentialIds(Arc<AtomicU64>);

impl SequentialIds {
    pub fn starting_at(n: u64) -> SequentialIds {
        SequentialIds(Arc::new(AtomicU64::new(n)))
    }

    pub fn next(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.0.fetch_add(1, Ordering::Relaxed)))
    }
}

/// A clock the test moves by hand.
#[derive(Debug, Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn at(t: DateTime<Utc>) -> TestClock {
        TestClock(Arc::new(Mutex::new(t)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub fn advance(&self, d: chrono::Duration) {
        let now = self.now();
        self.set(now + d);
    }
}

/// Handlers over `store` with a [`TestClock`] at [`t0`] and [`SequentialIds`] from 1_000.
pub fn test_commands<S: mykey_store::EventStore>(store: S) -> (crate::Commands<S>, TestClock) {
    test_commands_with_ids_from(store, 1_000)
}

/// [`test_commands`] whose ids start at `first_id`: two handlers writing to one log need
/// disjoint ranges, since the log refuses an event id it already holds.
pub fn test_commands_with_ids_from<S: mykey_store::EventStore>(
    store: S,
    first_id: u64,
) -> (crate::Commands<S>, TestClock) {
    let clock = TestClock::at(t0());
    let c = clock.clone();
    let ids = SequentialIds::starting_at(first_id);
    (
        crate::Commands::with_env(store, move || c.now(), move || ids.next()),
        clock,
    )
}

/// A public RSA JWK for tests.
pub fn sample_jwk(n: &str) -> serde_json::Value {
    serde_json::json!({ "kty": "RSA", "e": "AQAB", "n": n, "alg": "RS256", "use": "sig" })
}

/// Start of a given/when/then test of one aggregate's decision.
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    Given {
        history: history.into_iter().collect(),
        actor: Actor {
            id: "op-1".into(),
            role: Role::Operator,
        },
        now: t0(),
        patch_id: None,
    }
}

/// The history and context of a given/when/then test.
#[derive(Debug)]
pub struct Given<A: Aggregate> {
    history: Vec<A::Event>,
    actor: Actor,
    now: DateTime<Utc>,
    patch_id: Option<Uuid>,
}

impl<A: Aggregate> Given<A> {
    /// Who acts (default: `op-1` as operator).
    pub fn by(mut self, id: &str, role: Role) -> Self {
        self.actor = Actor {
            id: id.into(),
            role,
        };
        self
    }

    /// When it happens (default: [`t0`]).
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// As part of a data patch's dry-run.
    pub fn in_patch(mut self, patch_id: Uuid) -> Self {
        self.patch_id = Some(patch_id);
        self
    }

    pub fn state(&self) -> A::State {
        A::fold(&self.history)
    }

    pub fn when(self, command: A::Command) -> Then<A> {
        let state = self.state();
        let ids = SequentialIds::starting_at(1_000);
        let ctx = Context {
            now: self.now,
            actor: self.actor,
            ids: &move || ids.next(),
            patch_id: self.patch_id,
        };
        let result = A::decide(&state, command, &ctx);
        Then { state, result }
    }
}

/// The outcome of a given/when/then test, to assert on.
#[derive(Debug)]
pub struct Then<A: Aggregate> {
    state: A::State,
    result: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Then<A> {
    /// Asserts the decided events; returns the state after them.
    #[track_caller]
    pub fn then_expect(self, expected: impl IntoIterator<Item = A::Event>) -> A::State {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "decided events differ");
                events.iter().fold(self.state, |s, e| A::evolve(s, e))
            }
            Err(e) => panic!("expected events {expected:?}, got rejection {e}"),
        }
    }

    /// Asserts a rejection with `code`; returns the error for further checks.
    #[track_caller]
    pub fn then_reject(self, code: ErrorCode) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected rejection {code}, got events {events:?}"),
            Err(e) => {
                assert_eq!(e.code, code, "wrong rejection: {e}");
                assert!(
                    !e.message.is_empty(),
                    "a rejection needs a readable message"
                );
                e
            }
        }
    }
}
