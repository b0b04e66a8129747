//! Pure aggregates of the MyKey Platform.
//!
//! Promise: `decide(&State, Command, &Context) -> Result<Vec<Event>, DomainError>` and
//! `evolve(State, &Event) -> State`, with time, the acting user and an id source passed in the
//! context. No I/O, no clock, no randomness in this crate.
//!
//! Invariants this crate keeps (each has a given/when/then test in `mykey-commands`):
//! - every rejection is a [`DomainError`] with a stable [`ErrorCode`];
//! - `evolve` never fails: it only folds facts that `decide` already accepted;
//! - a decision that needs another aggregate's state (e.g. a program's period when an
//!   application is submitted) receives that state *inside the command*, loaded by the shell,
//!   so the rule itself stays here and stays pure;
//! - events that only a data patch may produce (`PpidInvalidated`, `ReviewOutcomeCorrected`)
//!   require [`Context::patch_id`].

pub mod application;
pub mod certificate;
pub mod error;
pub mod ids;
pub mod login;
pub mod maintenance;
pub mod patch;
pub mod ppid;
pub mod program;
pub mod relying_party;
pub mod subject;
pub mod test_card;

use chrono::{DateTime, Utc};
use std::fmt;
use uuid::Uuid;

pub use error::{DomainError, ErrorCode};
pub use ids::{ApplicationId, NoticeId, Ppid, ProgramId, RelyingPartyId, SubjectId, TestCardId};

/// Longest free text (names, reasons, messages) accepted in a command: these are labels and
/// notes, not documents, and every byte ends up in an immutable log.
pub const MAX_TEXT_LEN: usize = 2_000;

/// The role an actor acts in. The role decides what the actor may do; the id is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Digital Agency operations staff.
    Operator,
    /// A connected system acting for itself (municipality, payment provider, ...).
    RelyingParty(RelyingPartyId),
    /// A citizen, authenticated as this subject.
    Citizen(SubjectId),
    /// A platform component (login endpoint, CRL importer, payment batch, expiry job).
    System,
}

impl Role {
    /// The label stored in event metadata (`EventMetadata::actor_role`).
    pub fn label(&self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::RelyingParty(_) => "relying_party",
            Role::Citizen(_) => "citizen",
            Role::System => "system",
        }
    }
}

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: String,
    pub role: Role,
}

/// Where new ids come from. The shell passes a random source; tests pass a counter.
pub trait IdSource: Send + Sync {
    fn next_uuid(&self) -> Uuid;
}

impl<F: Fn() -> Uuid + Send + Sync> IdSource for F {
    fn next_uuid(&self) -> Uuid {
        self()
    }
}

/// Everything a decision may depend on besides the state and the command.
pub struct Context<'a> {
    pub now: DateTime<Utc>,
    pub actor: Actor,
    pub ids: &'a dyn IdSource,
    /// Set only while a data patch is dry-run: the patch's id.
    pub patch_id: Option<Uuid>,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.now)
            .field("actor", &self.actor)
            .field("patch_id", &self.patch_id)
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    pub fn role(&self) -> &Role {
        &self.actor.role
    }

    pub fn require_operator(&self) -> Result<(), DomainError> {
        match self.actor.role {
            Role::Operator => Ok(()),
            _ => Err(DomainError::not_authorised(
                self,
                "only an operator may do this",
            )),
        }
    }

    /// Returns the patch id, or refuses: the command exists only as a patch's compensation.
    pub fn require_patch(&self) -> Result<Uuid, DomainError> {
        match (self.patch_id, &self.actor.role) {
            (Some(p), Role::Operator) => Ok(p),
            _ => Err(DomainError::new(
                ErrorCode::ONLY_BY_DATA_PATCH,
                "this change can only be made by an applied data patch",
            )),
        }
    }
}

/// One aggregate: its stream category, state, commands and events.
/// Implements [`Aggregate`] for a marker type whose module defines free functions `decide` and
/// `evolve` with the trait's signatures (every aggregate here is written that way, so the
/// rules read as plain functions and the trait is only the shape the handlers need).
#[macro_export]
macro_rules! aggregate {
    ($ty:ty, $category:literal, $state:ty, $command:ty, $event:ty) => {
        impl $crate::Aggregate for $ty {
            const CATEGORY: &'static str = $category;
            type State = $state;
            type Command = $command;
            type Event = $event;

            fn decide(
                state: &Self::State,
                command: Self::Command,
                ctx: &$crate::Context<'_>,
            ) -> Result<Vec<Self::Event>, $crate::DomainError> {
                decide(state, command, ctx)
            }

            fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
                evolve(state, event)
            }
        }
    };
}

pub trait Aggregate {
    /// Stream category: streams are `<CATEGORY>-<id>`.
    const CATEGORY: &'static str;
    type State: Clone + fmt::Debug + Default + PartialEq;
    type Command: fmt::Debug;
    type Event: Clone + fmt::Debug + PartialEq;

    fn decide(
        state: &Self::State,
        command: Self::Command,
        ctx: &Context<'_>,
    ) -> Result<Vec<Self::Event>, DomainError>;

    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Folds a history into a state.
    fn fold<'e>(events: impl IntoIterator<Item = &'e Self::Event>) -> Self::State
    where
        Self::Event: 'e,
    {
        events
            .into_iter()
            .fold(Self::State::default(), |s, e| Self::evolve(s, e))
    }
}

/// Checks a free-text field: non-empty after trimming, at most [`MAX_TEXT_LEN`] bytes, and no
/// NUL (U+0000), which the read models' PostgreSQL `text` columns cannot hold: recorded, it
/// would stop every projection that shows the field.
pub(crate) fn check_text(field: &str, value: &str) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        return Err(DomainError::new(
            ErrorCode::INVALID_INPUT,
            format!("{field} must not be empty"),
        ));
    }
    if value.contains('\0') {
        return Err(DomainError::new(
            ErrorCode::INVALID_INPUT,
            format!("{field} must not contain NUL"),
        ));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(DomainError::new(
            ErrorCode::INVALID_INPUT,
            format!("{field} is longer than {MAX_TEXT_LEN} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod purity {
    /// The crate's promise (no I/O, no clock, no randomness) checked on its own sources: the
    /// workspace enables chrono's `clock` and uuid's `v4`, so the compiler alone would allow
    /// `Utc::now()` or `Uuid::new_v4()` here.
    #[test]
    fn the_domain_reads_no_clock_and_draws_no_random_numbers() {
        let forbidden = [
            "Utc::now",
            "Local::now",
            "SystemTime",
            "Instant::now",
            "new_v4",
            "now_v7",
            "rand::",
            "std::fs",
            "std::net",
            "std::env",
            "tokio",
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Only the code before this test module: the list above names what it forbids.
            let code = text.split("mod purity").next().unwrap_or_default();
            for f in forbidden {
                assert!(!code.contains(f), "{} uses {f}", path.display());
            }
            checked += 1;
        }
        assert!(
            checked >= 10,
            "only {checked} source files found in {}",
            dir.display()
        );
    }
}
