//! Relying party commands.

use crate::{stream_of, CommandError, CommandMeta, Commands, Executed};
use mykey_domain::relying_party::{RelyingParty, RelyingPartyCommand, RelyingPartyState, RpKind};
use mykey_domain::{DomainError, ErrorCode, RelyingPartyId};
use mykey_store::EventStore;
use serde_json::Value;

/// What an operator supplies to register a relying party.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterRelyingParty {
    pub id: RelyingPartyId,
    /// A municipality's 6-digit local government code (with check digit), else the
    /// operator's code for the party.
    pub code: String,
    pub name: String,
    pub kind: RpKind,
    /// Public JWK for client authentication.
    pub public_jwk: Value,
}

/// The party's state after a command, with the command's position (see [`Executed`]).
fn registered(
    e: Executed<Option<RelyingPartyState>>,
) -> Result<Executed<RelyingPartyState>, CommandError> {
    let state = e.state.ok_or_else(|| {
        DomainError::new(ErrorCode::RP_NOT_FOUND, "relying party is not registered")
    })?;
    Ok(Executed {
        state,
        version: e.version,
        position: e.position,
        appended: e.appended,
        deduplicated: e.deduplicated,
    })
}

impl<S: EventStore> Commands<S> {
    /// The relying party as recorded now (status, kind, current JWK), or None.
    pub async fn load_relying_party(
        &self,
        id: &RelyingPartyId,
    ) -> Result<Option<RelyingPartyState>, CommandError> {
        let stream = stream_of::<RelyingParty>(id)?;
        Ok(self.load::<RelyingParty>(&stream, None).await?.state)
    }

    pub async fn register_relying_party(
        &self,
        meta: &CommandMeta,
        r: RegisterRelyingParty,
    ) -> Result<Executed<RelyingPartyState>, CommandError> {
        let id = r.id.clone();
        registered(
            self.execute::<RelyingParty>(
                meta,
                &id,
                RelyingPartyCommand::Register {
                    id: r.id,
                    code: r.code,
                    name: r.name,
                    kind: r.kind,
                    public_jwk: r.public_jwk,
                },
            )
            .await?,
        )
    }

    pub async fn rotate_relying_party_key(
        &self,
        meta: &CommandMeta,
        id: &RelyingPartyId,
        public_jwk: Value,
    ) -> Result<Executed<RelyingPartyState>, CommandError> {
        registered(
            self.execute::<RelyingParty>(meta, id, RelyingPartyCommand::RotateKey { public_jwk })
                .await?,
        )
    }

    pub async fn suspend_relying_party(
        &self,
        meta: &CommandMeta,
        id: &RelyingPartyId,
        reason: &str,
    ) -> Result<Executed<RelyingPartyState>, CommandError> {
        let reason = reason.to_owned();
        registered(
            self.execute::<RelyingParty>(meta, id, RelyingPartyCommand::Suspend { reason })
                .await?,
        )
    }

    pub async fn resume_relying_party(
        &self,
        meta: &CommandMeta,
        id: &RelyingPartyId,
    ) -> Result<Executed<RelyingPartyState>, CommandError> {
        registered(
            self.execute::<RelyingParty>(meta, id, RelyingPartyCommand::Resume)
                .await?,
        )
    }

    pub async fn retire_relying_party(
        &self,
        meta: &CommandMeta,
        id: &RelyingPartyId,
        reason: &str,
    ) -> Result<Executed<RelyingPartyState>, CommandError> {
        let reason = reason.to_owned();
        registered(
            self.execute::<RelyingParty>(meta, id, RelyingPartyCommand::Retire { reason })
                .await?,
        )
    }
}
