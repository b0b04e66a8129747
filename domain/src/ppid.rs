//! PPIDs: issued at the first PIN login for a relying party, revoked by the RP or the citizen,
//! invalidated only by a data patch. Stream `ppid-<ppid>`. A revoked or invalidated PPID stays
//! so forever; the next registration issues a new random one.

use crate::{Context, DomainError, ErrorCode, Ppid, RelyingPartyId, Role, SubjectId};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    RelyingParty,
    Citizen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PpidStatus {
    Active,
    Revoked { by: RevokedBy },
    Invalidated { patch_id: Uuid },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PpidState {
    pub ppid: Ppid,
    pub subject: SubjectId,
    pub relying_party: RelyingPartyId,
    pub status: PpidStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PpidCommand {
    Issue {
        ppid: Ppid,
        subject: SubjectId,
        relying_party: RelyingPartyId,
    },
    Revoke,
    Invalidate {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PpidEvent {
    Issued {
        ppid: Ppid,
        subject: SubjectId,
        relying_party: RelyingPartyId,
    },
    Revoked {
        by: RevokedBy,
    },
    Invalidated {
        patch_id: Uuid,
        reason: String,
    },
}

#[derive(Debug)]
pub struct PpidAggregate;

fn active(state: &Option<PpidState>) -> Result<&PpidState, DomainError> {
    let p = state
        .as_ref()
        .ok_or_else(|| DomainError::new(ErrorCode::PPID_NOT_FOUND, "no such PPID"))?;
    match p.status {
        PpidStatus::Active => Ok(p),
        PpidStatus::Revoked { .. } => Err(DomainError::new(
            ErrorCode::PPID_ALREADY_REVOKED,
            format!("PPID {} is already revoked", p.ppid),
        )),
        PpidStatus::Invalidated { .. } => Err(DomainError::new(
            ErrorCode::PPID_ALREADY_INVALIDATED,
            format!("PPID {} is already invalidated", p.ppid),
        )),
    }
}

pub fn decide(
    state: &Option<PpidState>,
    command: PpidCommand,
    ctx: &Context<'_>,
) -> Result<Vec<PpidEvent>, DomainError> {
    match command {
        PpidCommand::Issue {
            ppid,
            subject,
            relying_party,
        } => {
            if state.is_some() {
                return Err(DomainError::new(
                    ErrorCode::PPID_ALREADY_ISSUED,
                    "this PPID value is already taken",
                ));
            }
            Ok(vec![PpidEvent::Issued {
                ppid,
                subject,
                relying_party,
            }])
        }
        PpidCommand::Revoke => {
            let p = active(state)?;
            let by = match ctx.role() {
                Role::RelyingParty(rp) if *rp == p.relying_party => RevokedBy::RelyingParty,
                Role::Citizen(s) if *s == p.subject => RevokedBy::Citizen,
                _ => {
                    return Err(DomainError::not_authorised(
                        ctx,
                        "only the PPID's relying party or its citizen may revoke it",
                    ))
                }
            };
            Ok(vec![PpidEvent::Revoked { by }])
        }
        PpidCommand::Invalidate { reason } => {
            let patch_id = ctx.require_patch()?;
            crate::check_text("reason", &reason)?;
            active(state)?;
            Ok(vec![PpidEvent::Invalidated { patch_id, reason }])
        }
    }
}

pub fn evolve(state: Option<PpidState>, event: &PpidEvent) -> Option<PpidState> {
    match (state, event) {
        (
            _,
            PpidEvent::Issued {
                ppid,
                subject,
                relying_party,
            },
        ) => Some(PpidState {
            ppid: ppid.clone(),
            subject: *subject,
            relying_party: relying_party.clone(),
            status: PpidStatus::Active,
        }),
        (Some(mut p), PpidEvent::Revoked { by }) => {
            p.status = PpidStatus::Revoked { by: *by };
            Some(p)
        }
        (Some(mut p), PpidEvent::Invalidated { patch_id, .. }) => {
            p.status = PpidStatus::Invalidated {
                patch_id: *patch_id,
            };
            Some(p)
        }
        (None, _) => None,
    }
}

crate::aggregate!(
    PpidAggregate,
    "ppid",
    Option<PpidState>,
    PpidCommand,
    PpidEvent
);
