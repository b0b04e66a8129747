//! Point programs (施策): created by an operator for a municipality with a participation
//! period, extended, paused (access restricted), resumed, closed. Stream `program-<id>`.

use crate::relying_party::{ensure_active, RelyingPartyState, RpKind};
use crate::{check_text, Context, DomainError, ErrorCode, ProgramId, RelyingPartyId};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramStatus {
    Open,
    Paused,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramState {
    pub id: ProgramId,
    pub municipality: RelyingPartyId,
    pub name: String,
    /// Applications are accepted in `[period_start, period_end)`.
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub status: ProgramStatus,
}

impl ProgramState {
    /// Whether a new application may be submitted at `now`.
    pub fn accepting_applications(&self, now: DateTime<Utc>) -> Result<(), DomainError> {
        self.not_paused_or_closed()?;
        if now < self.period_start || now >= self.period_end {
            return Err(DomainError::new(
                ErrorCode::OUTSIDE_PROGRAM_PERIOD,
                format!(
                    "program {} accepts applications from {} until {}",
                    self.id, self.period_start, self.period_end
                ),
            ));
        }
        Ok(())
    }

    /// Paused programs refuse new applications and reviews; nothing is lost meanwhile.
    pub fn not_paused(&self) -> Result<(), DomainError> {
        if self.status == ProgramStatus::Paused {
            return Err(DomainError::new(
                ErrorCode::PROGRAM_PAUSED,
                format!("program {} is paused", self.id),
            ));
        }
        Ok(())
    }

    fn not_paused_or_closed(&self) -> Result<(), DomainError> {
        self.not_closed()?;
        self.not_paused()
    }

    fn not_closed(&self) -> Result<(), DomainError> {
        if self.status == ProgramStatus::Closed {
            return Err(DomainError::new(
                ErrorCode::PROGRAM_CLOSED,
                format!("program {} is closed", self.id),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProgramCommand {
    Create {
        id: ProgramId,
        municipality: RelyingPartyId,
        /// The municipality's relying party as loaded by the shell.
        municipality_rp: Option<RelyingPartyState>,
        name: String,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    },
    Extend {
        new_end: DateTime<Utc>,
    },
    Pause {
        reason: String,
    },
    Resume,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramEvent {
    Created {
        id: ProgramId,
        municipality: RelyingPartyId,
        name: String,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    },
    Extended {
        new_end: DateTime<Utc>,
    },
    Paused {
        reason: String,
    },
    Resumed,
    Closed,
}

#[derive(Debug)]
pub struct Program;

/// Returns the program, or refuses because it does not exist.
pub fn existing(state: &Option<ProgramState>) -> Result<&ProgramState, DomainError> {
    state
        .as_ref()
        .ok_or_else(|| DomainError::new(ErrorCode::PROGRAM_NOT_FOUND, "no such program"))
}

pub fn decide(
    state: &Option<ProgramState>,
    command: ProgramCommand,
    ctx: &Context<'_>,
) -> Result<Vec<ProgramEvent>, DomainError> {
    use ProgramCommand as C;
    use ProgramEvent as E;
    ctx.require_operator()?;
    match command {
        C::Create {
            id,
            municipality,
            municipality_rp,
            name,
            period_start,
            period_end,
        } => {
            if state.is_some() {
                return Err(DomainError::new(
                    ErrorCode::PROGRAM_ALREADY_EXISTS,
                    format!("program {id} already exists"),
                ));
            }
            let rp = ensure_active(&municipality_rp, &municipality)?;
            if rp.kind != RpKind::Municipality {
                return Err(DomainError::new(
                    ErrorCode::RP_WRONG_KIND,
                    format!("{municipality} is not a municipality"),
                ));
            }
            check_text("name", &name)?;
            if period_end <= period_start {
                return Err(DomainError::new(
                    ErrorCode::INVALID_PERIOD,
                    "the period must end after it starts",
                ));
            }
            Ok(vec![E::Created {
                id,
                municipality,
                name,
                period_start,
                period_end,
            }])
        }
        C::Extend { new_end } => {
            let p = existing(state)?;
            p.not_closed()?;
            if new_end <= p.period_end {
                return Err(DomainError::new(
                    ErrorCode::INVALID_PERIOD,
                    "an extension must end later than the current period",
                ));
            }
            Ok(vec![E::Extended { new_end }])
        }
        C::Pause { reason } => {
            existing(state)?.not_paused_or_closed()?;
            check_text("reason", &reason)?;
            Ok(vec![E::Paused { reason }])
        }
        C::Resume => {
            let p = existing(state)?;
            p.not_closed()?;
            if p.status != ProgramStatus::Paused {
                return Err(DomainError::new(
                    ErrorCode::PROGRAM_NOT_PAUSED,
                    format!("program {} is not paused", p.id),
                ));
            }
            Ok(vec![E::Resumed])
        }
        C::Close => {
            existing(state)?.not_closed()?;
            Ok(vec![E::Closed])
        }
    }
}

pub fn evolve(state: Option<ProgramState>, event: &ProgramEvent) -> Option<ProgramState> {
    use ProgramEvent as E;
    match (state, event) {
        (
            _,
            E::Created {
                id,
                municipality,
                name,
                period_start,
                period_end,
            },
        ) => Some(ProgramState {
            id: id.clone(),
            municipality: municipality.clone(),
            name: name.clone(),
            period_start: *period_start,
            period_end: *period_end,
            status: ProgramStatus::Open,
        }),
        (Some(mut p), E::Extended { new_end }) => {
            p.period_end = *new_end;
            Some(p)
        }
        (Some(mut p), E::Paused { .. }) => {
            p.status = ProgramStatus::Paused;
            Some(p)
        }
        (Some(mut p), E::Resumed) => {
            p.status = ProgramStatus::Open;
            Some(p)
        }
        (Some(mut p), E::Closed) => {
            p.status = ProgramStatus::Closed;
            Some(p)
        }
        (None, _) => None,
    }
}

crate::aggregate!(
    Program,
    "program",
    Option<ProgramState>,
    ProgramCommand,
    ProgramEvent
);
