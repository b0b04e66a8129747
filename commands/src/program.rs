//! Program commands.

use crate::{stream_of, CommandError, CommandMeta, Commands, Executed};
use chrono::{DateTime, Utc};
use mykey_domain::program::{Program, ProgramCommand, ProgramState};
use mykey_domain::{ProgramId, RelyingPartyId};
use mykey_store::EventStore;

/// What an operator supplies to create a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateProgram {
    pub id: ProgramId,
    pub municipality: RelyingPartyId,
    pub name: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

impl<S: EventStore> Commands<S> {
    pub async fn load_program(&self, id: &ProgramId) -> Result<Option<ProgramState>, CommandError> {
        let stream = stream_of::<Program>(id)?;
        Ok(self.load::<Program>(&stream, None).await?.state)
    }

    /// Creates a program for a municipality relying party (which must be active).
    pub async fn create_program(
        &self,
        meta: &CommandMeta,
        c: CreateProgram,
    ) -> Result<Executed<Option<ProgramState>>, CommandError> {
        let stream = stream_of::<Program>(&c.id)?;
        let c = &c;
        self.execute_on::<Program, _, _>(meta, &stream, None, || async move {
            Ok(ProgramCommand::Create {
                id: c.id.clone(),
                municipality: c.municipality.clone(),
                municipality_rp: self.load_relying_party(&c.municipality).await?,
                name: c.name.clone(),
                period_start: c.period_start,
                period_end: c.period_end,
            })
        })
        .await
    }

    pub async fn extend_program(
        &self,
        meta: &CommandMeta,
        id: &ProgramId,
        new_end: DateTime<Utc>,
    ) -> Result<Executed<Option<ProgramState>>, CommandError> {
        self.execute::<Program>(meta, id, ProgramCommand::Extend { new_end })
            .await
    }

    pub async fn pause_program(
        &self,
        meta: &CommandMeta,
        id: &ProgramId,
        reason: &str,
    ) -> Result<Executed<Option<ProgramState>>, CommandError> {
        let reason = reason.to_owned();
        self.execute::<Program>(meta, id, ProgramCommand::Pause { reason })
            .await
    }

    pub async fn resume_program(
        &self,
        meta: &CommandMeta,
        id: &ProgramId,
    ) -> Result<Executed<Option<ProgramState>>, CommandError> {
        self.execute::<Program>(meta, id, ProgramCommand::Resume)
            .await
    }

    pub async fn close_program(
        &self,
        meta: &CommandMeta,
        id: &ProgramId,
    ) -> Result<Executed<Option<ProgramState>>, CommandError> {
        self.execute::<Program>(meta, id, ProgramCommand::Close)
            .await
    }
}
