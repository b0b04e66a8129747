//! Subjects: one citizen, the certificates bound to them, and their active PPID per relying
//! party. Stream `subject-<uuid>`. Invariant: at most one active PPID per (subject, RP) — the
//! subject stream is the single place that decides it, and every PPID issue or release appends
//! to it in the same atomic append as to the `ppid-` stream.

use crate::certificate::CertificateRef;
use crate::{Context, DomainError, ErrorCode, Ppid, RelyingPartyId, SubjectId};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    Revoked,
    Invalidated,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectState {
    pub subject: Option<SubjectId>,
    pub certificates: Vec<CertificateRef>,
    pub active_ppids: BTreeMap<RelyingPartyId, Ppid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubjectCommand {
    Create {
        subject: SubjectId,
        certificate: CertificateRef,
    },
    AddRenewedCertificate {
        certificate: CertificateRef,
    },
    AssignPpid {
        relying_party: RelyingPartyId,
        ppid: Ppid,
    },
    ReleasePpid {
        relying_party: RelyingPartyId,
        ppid: Ppid,
        reason: ReleaseReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectEvent {
    Created {
        subject: SubjectId,
        certificate: CertificateRef,
    },
    CertificateAdded {
        certificate: CertificateRef,
    },
    PpidAssigned {
        relying_party: RelyingPartyId,
        ppid: Ppid,
    },
    PpidReleased {
        relying_party: RelyingPartyId,
        ppid: Ppid,
        reason: ReleaseReason,
    },
}

#[derive(Debug)]
pub struct Subject;

fn exists(state: &SubjectState) -> Result<SubjectId, DomainError> {
    state
        .subject
        .ok_or_else(|| DomainError::new(ErrorCode::SUBJECT_NOT_FOUND, "no such subject"))
}

/// The subject's commands are steps of larger decisions (login, renewal, PPID revocation)
/// that authorise the actor themselves; here only the subject's own invariants are checked.
pub fn decide(
    state: &SubjectState,
    command: SubjectCommand,
    _ctx: &Context<'_>,
) -> Result<Vec<SubjectEvent>, DomainError> {
    use SubjectCommand as C;
    use SubjectEvent as E;
    match command {
        C::Create {
            subject,
            certificate,
        } => {
            if state.subject.is_some() {
                return Err(DomainError::new(
                    ErrorCode::INVALID_INPUT,
                    "the subject already exists",
                ));
            }
            Ok(vec![E::Created {
                subject,
                certificate,
            }])
        }
        C::AddRenewedCertificate { certificate } => {
            exists(state)?;
            if state.certificates.contains(&certificate) {
                return Ok(vec![]);
            }
            Ok(vec![E::CertificateAdded { certificate }])
        }
        C::AssignPpid {
            relying_party,
            ppid,
        } => {
            exists(state)?;
            if state.active_ppids.contains_key(&relying_party) {
                return Err(DomainError::new(
                    ErrorCode::PPID_ALREADY_ISSUED,
                    format!("the subject already has an active PPID for {relying_party}"),
                ));
            }
            Ok(vec![E::PpidAssigned {
                relying_party,
                ppid,
            }])
        }
        C::ReleasePpid {
            relying_party,
            ppid,
            reason,
        } => {
            exists(state)?;
            if state.active_ppids.get(&relying_party) != Some(&ppid) {
                return Err(DomainError::new(
                    ErrorCode::PPID_NOT_FOUND,
                    "the PPID is not the subject's active one for that relying party",
                ));
            }
            Ok(vec![E::PpidReleased {
                relying_party,
                ppid,
                reason,
            }])
        }
    }
}

pub fn evolve(mut state: SubjectState, event: &SubjectEvent) -> SubjectState {
    use SubjectEvent as E;
    match event {
        E::Created {
            subject,
            certificate,
        } => {
            state.subject = Some(*subject);
            state.certificates.push(certificate.clone());
        }
        E::CertificateAdded { certificate } => state.certificates.push(certificate.clone()),
        E::PpidAssigned {
            relying_party,
            ppid,
        } => {
            state
                .active_ppids
                .insert(relying_party.clone(), ppid.clone());
        }
        E::PpidReleased { relying_party, .. } => {
            state.active_ppids.remove(relying_party);
        }
    }
    state
}

crate::aggregate!(
    Subject,
    "subject",
    SubjectState,
    SubjectCommand,
    SubjectEvent
);
