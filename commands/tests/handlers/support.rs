//! Shared fixtures.

use mykey_commands::testing::{sample_jwk, test_commands, TestClock};
use mykey_commands::{CommandMeta, Commands, RegisterRelyingParty, RpKind};
use mykey_domain::{RelyingPartyId, Role, SubjectId};
pub use mykey_store::memory::InMemoryStore;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The store the handler tests run on: the in-memory log, with the store's contract.
pub type TestStore = InMemoryStore;

pub fn setup() -> (Commands<TestStore>, TestClock) {
    test_commands(new_store())
}

/// A fresh in-memory log whose `recorded_at` is the fixed test instant.
pub fn new_store() -> InMemoryStore {
    InMemoryStore::with_clock(mykey_commands::testing::t0)
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
