//! Data patches (データパッチ): the only way operators change business data. Stream
//! `patch-<uuid>`.
//!
//! requested → dry-run recorded (the exact events and expected stream versions) → approved by
//! a *different* operator → applied; or rejected, or expired. A new dry-run voids an approval.
//!
//! Invariant: applying appends exactly the events of the last recorded dry-run, with their
//! recorded ids, payloads and expected versions — [`PatchState::plan`] is the only source the
//! shell may append from — so a patch can never append what its dry-run did not show.

use crate::application::ReviewOutcome;
use crate::{check_text, Context, DomainError, ErrorCode, Ppid, ProgramId, Role, SubjectId};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// Most target streams one patch may touch: a patch is a reviewed, targeted correction, and a
/// reviewer cannot meaningfully check more in one go.
pub const MAX_PATCH_TARGETS: usize = 50;

/// A compensating command a patch runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchAction {
    InvalidatePpid {
        ppid: Ppid,
        reason: String,
    },
    UnlinkPaymentService {
        program: ProgramId,
        subject: SubjectId,
        reason: String,
    },
    CorrectReviewOutcome {
        program: ProgramId,
        subject: SubjectId,
        outcome: ReviewOutcome,
        reason: String,
    },
}

/// One event as the dry-run computed it, in stored form (opaque to the domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: String,
}

/// The events the dry-run would append to one stream, and the version it expects there
/// (0: the stream must not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAppend {
    pub stream: String,
    pub expected_version: u64,
    pub events: Vec<PlannedEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchStatus {
    Requested,
    DryRun,
    Approved,
    Applied,
    Rejected,
    Expired,
}

impl PatchStatus {
    fn is_closed(self) -> bool {
        matches!(
            self,
            PatchStatus::Applied | PatchStatus::Rejected | PatchStatus::Expired
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchState {
    pub patch_id: Uuid,
    pub ticket_id: String,
    pub reason: String,
    pub targets: Vec<String>,
    pub actions: Vec<PatchAction>,
    pub requested_by: String,
    pub expires_at: DateTime<Utc>,
    pub status: PatchStatus,
    /// The last dry-run's plan.
    pub plan: Vec<PlannedAppend>,
    pub dry_run_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatchCommand {
    Request {
        patch_id: Uuid,
        ticket_id: String,
        reason: String,
        /// The streams the patch may touch (checked against the dry-run).
        targets: Vec<String>,
        actions: Vec<PatchAction>,
        /// How long until it expires (configured in the shell).
        ttl: Duration,
    },
    /// The shell computed `plan` by running the actions' decisions against current state.
    RecordDryRun {
        plan: Vec<PlannedAppend>,
    },
    Approve,
    Reject {
        reason: String,
    },
    Apply,
    Expire,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchEvent {
    Requested {
        patch_id: Uuid,
        ticket_id: String,
        reason: String,
        targets: Vec<String>,
        actions: Vec<PatchAction>,
        requested_by: String,
        expires_at: DateTime<Utc>,
    },
    DryRunRecorded {
        plan: Vec<PlannedAppend>,
        by: String,
    },
    Approved {
        by: String,
    },
    Rejected {
        by: String,
        reason: String,
    },
    Applied {
        by: String,
    },
    Expired,
}

#[derive(Debug)]
pub struct Patch;

fn existing(state: &Option<PatchState>) -> Result<&PatchState, DomainError> {
    let p = state
        .as_ref()
        .ok_or_else(|| DomainError::new(ErrorCode::PATCH_NOT_FOUND, "no such patch"))?;
    if p.status.is_closed() {
        return Err(DomainError::new(
            ErrorCode::PATCH_CLOSED,
            format!("patch {} is already {:?}", p.patch_id, p.status),
        ));
    }
    Ok(p)
}

fn not_expired(p: &PatchState, now: DateTime<Utc>) -> Result<(), DomainError> {
    if now >= p.expires_at {
        return Err(DomainError::new(
            ErrorCode::PATCH_EXPIRED,
            format!("patch {} expired at {}", p.patch_id, p.expires_at),
        ));
    }
    Ok(())
}

pub fn decide(
    state: &Option<PatchState>,
    command: PatchCommand,
    ctx: &Context<'_>,
) -> Result<Vec<PatchEvent>, DomainError> {
    use PatchCommand as C;
    use PatchEvent as E;
    match command {
        C::Request {
            patch_id,
            ticket_id,
            reason,
            targets,
            actions,
            ttl,
        } => {
            ctx.require_operator()?;
            if state.is_some() {
                return Err(DomainError::new(
                    ErrorCode::PATCH_ALREADY_REQUESTED,
                    format!("patch {patch_id} already exists"),
                ));
            }
            check_text("ticket_id", &ticket_id)?;
            check_text("reason", &reason)?;
            if actions.is_empty() || targets.is_empty() {
                return Err(DomainError::new(
                    ErrorCode::PATCH_EMPTY,
                    "a patch names at least one target stream and one action",
                ));
            }
            if targets.len() > MAX_PATCH_TARGETS || actions.len() > MAX_PATCH_TARGETS {
                return Err(DomainError::new(
                    ErrorCode::INVALID_INPUT,
                    format!("a patch touches at most {MAX_PATCH_TARGETS} streams"),
                ));
            }
            Ok(vec![E::Requested {
                patch_id,
                ticket_id,
                reason,
                targets,
                actions,
                requested_by: ctx.actor.id.clone(),
                expires_at: ctx.now + ttl,
            }])
        }
        C::RecordDryRun { plan } => {
            ctx.require_operator()?;
            let p = existing(state)?;
            not_expired(p, ctx.now)?;
            if plan.iter().all(|a| a.events.is_empty()) {
                return Err(DomainError::new(
                    ErrorCode::PATCH_EMPTY,
                    "the dry-run produced no events",
                ));
            }
            if let Some(stray) = plan.iter().find(|a| !p.targets.contains(&a.stream)) {
                return Err(DomainError::new(
                    ErrorCode::PATCH_TARGET_NOT_DECLARED,
                    format!(
                        "the dry-run touches {}, which the request did not name",
                        stray.stream
                    ),
                ));
            }
            Ok(vec![E::DryRunRecorded {
                plan,
                by: ctx.actor.id.clone(),
            }])
        }
        C::Approve => {
            ctx.require_operator()?;
            let p = existing(state)?;
            not_expired(p, ctx.now)?;
            if p.status != PatchStatus::DryRun {
                return Err(DomainError::new(
                    ErrorCode::PATCH_NOT_DRY_RUN,
                    "only a dry-run patch, not yet approved, can be approved",
                ));
            }
            // Four eyes: whoever prepared the patch cannot approve it.
            if ctx.actor.id == p.requested_by || Some(&ctx.actor.id) == p.dry_run_by.as_ref() {
                return Err(DomainError::new(
                    ErrorCode::PATCH_SELF_APPROVAL,
                    "a patch must be approved by an operator other than the one who prepared it",
                ));
            }
            Ok(vec![E::Approved {
                by: ctx.actor.id.clone(),
            }])
        }
        C::Reject { reason } => {
            ctx.require_operator()?;
            existing(state)?;
            check_text("reason", &reason)?;
            Ok(vec![E::Rejected {
                by: ctx.actor.id.clone(),
                reason,
            }])
        }
        C::Apply => {
            ctx.require_operator()?;
            let p = existing(state)?;
            not_expired(p, ctx.now)?;
            if p.status != PatchStatus::Approved {
                return Err(DomainError::new(
                    ErrorCode::PATCH_NOT_APPROVED,
                    "the patch has not been approved since its last dry-run",
                ));
            }
            Ok(vec![E::Applied {
                by: ctx.actor.id.clone(),
            }])
        }
        C::Expire => {
            match ctx.role() {
                Role::System | Role::Operator => {}
                _ => {
                    return Err(DomainError::not_authorised(
                        ctx,
                        "patches expire by the platform",
                    ))
                }
            }
            let p = existing(state)?;
            if ctx.now < p.expires_at {
                return Err(DomainError::new(
                    ErrorCode::PATCH_NOT_EXPIRED,
                    format!("patch {} is valid until {}", p.patch_id, p.expires_at),
                ));
            }
            Ok(vec![E::Expired])
        }
    }
}

pub fn evolve(state: Option<PatchState>, event: &PatchEvent) -> Option<PatchState> {
    use PatchEvent as E;
    match (state, event) {
        (
            _,
            E::Requested {
                patch_id,
                ticket_id,
                reason,
                targets,
                actions,
                requested_by,
                expires_at,
            },
        ) => Some(PatchState {
            patch_id: *patch_id,
            ticket_id: ticket_id.clone(),
            reason: reason.clone(),
            targets: targets.clone(),
            actions: actions.clone(),
            requested_by: requested_by.clone(),
            expires_at: *expires_at,
            status: PatchStatus::Requested,
            plan: vec![],
            dry_run_by: None,
        }),
        (Some(mut p), E::DryRunRecorded { plan, by }) => {
            p.plan = plan.clone();
            p.dry_run_by = Some(by.clone());
            p.status = PatchStatus::DryRun;
            Some(p)
        }
        (Some(mut p), E::Approved { .. }) => {
            p.status = PatchStatus::Approved;
            Some(p)
        }
        (Some(mut p), E::Rejected { .. }) => {
            p.status = PatchStatus::Rejected;
            Some(p)
        }
        (Some(mut p), E::Applied { .. }) => {
            p.status = PatchStatus::Applied;
            Some(p)
        }
        (Some(mut p), E::Expired) => {
            p.status = PatchStatus::Expired;
            Some(p)
        }
        (None, _) => None,
    }
}

crate::aggregate!(Patch, "patch", Option<PatchState>, PatchCommand, PatchEvent);
