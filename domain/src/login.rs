//! The login decision: from a certificate and a relying party to the citizen's PPID for that
//! RP, creating the subject and issuing the PPID when this is the first PIN login. It spans
//! three aggregates (certificate, subject, PPID); the shell appends what it returns to all of
//! them in one atomic append.

use crate::certificate::{
    self, CertificateCommand, CertificateEvent, CertificateRef, CertificateState,
};
use crate::ppid::{self, PpidCommand, PpidEvent};
use crate::relying_party::{ensure_active, RelyingPartyState};
use crate::subject::{self, SubjectCommand, SubjectEvent, SubjectState};
use crate::{Context, DomainError, ErrorCode, Ppid, RelyingPartyId, Role, SubjectId};

/// What the shell loaded for one login.
#[derive(Debug)]
pub struct LoginFacts<'a> {
    pub relying_party_id: &'a RelyingPartyId,
    pub relying_party: &'a Option<RelyingPartyState>,
    pub certificate: &'a CertificateRef,
    pub certificate_state: &'a CertificateState,
    /// The linked subject's state (default when the certificate is not linked yet).
    pub subject_state: &'a SubjectState,
}

/// The decision: either the active PPID already exists, or these events create it.
#[derive(Debug, Clone, PartialEq)]
pub enum LoginDecision {
    Existing {
        subject: SubjectId,
        ppid: Ppid,
    },
    Issue {
        subject: SubjectId,
        ppid: Ppid,
        /// Empty when the certificate was already linked.
        certificate_events: Vec<CertificateEvent>,
        /// Starts with `Created` when the subject is new.
        subject_events: Vec<SubjectEvent>,
        ppid_events: Vec<PpidEvent>,
    },
}

/// Decides a PIN login (registration) or a later login for `facts.relying_party_id`.
///
/// Who may call: the platform's login endpoint (`System`) or the relying party itself; never
/// an operator (operators do not log in as citizens). A citizen has no subject id before the
/// login resolves one, so a `Citizen` role is refused too.
pub fn decide_login(
    facts: LoginFacts<'_>,
    ctx: &Context<'_>,
) -> Result<LoginDecision, DomainError> {
    match ctx.role() {
        Role::System => {}
        Role::RelyingParty(me) if me == facts.relying_party_id => {}
        _ => {
            return Err(DomainError::not_authorised(
                ctx,
                "a login is recorded by the platform or the relying party itself",
            ))
        }
    }
    ensure_active(facts.relying_party, facts.relying_party_id)?;
    if facts.certificate_state.revoked {
        return Err(DomainError::new(
            ErrorCode::CERTIFICATE_REVOKED,
            "the certificate is revoked",
        ));
    }
    let (subject, certificate_events, mut subject_events, subject_state) =
        match facts.certificate_state.subject {
            Some(s) => (s, vec![], vec![], facts.subject_state.clone()),
            None => {
                let s = SubjectId(ctx.ids.next_uuid());
                let cert_events = certificate::decide(
                    facts.certificate_state,
                    CertificateCommand::Link {
                        certificate: facts.certificate.clone(),
                        subject: s,
                    },
                    ctx,
                )?;
                let created = subject::decide(
                    &SubjectState::default(),
                    SubjectCommand::Create {
                        subject: s,
                        certificate: facts.certificate.clone(),
                    },
                    ctx,
                )?;
                let state = created
                    .iter()
                    .fold(SubjectState::default(), subject::evolve);
                (s, cert_events, created, state)
            }
        };
    if let Some(p) = subject_state.active_ppids.get(facts.relying_party_id) {
        if certificate_events.is_empty() && subject_events.is_empty() {
            return Ok(LoginDecision::Existing {
                subject,
                ppid: p.clone(),
            });
        }
    }
    let ppid = Ppid::from_uuid(ctx.ids.next_uuid());
    subject_events.extend(subject::decide(
        &subject_state,
        SubjectCommand::AssignPpid {
            relying_party: facts.relying_party_id.clone(),
            ppid: ppid.clone(),
        },
        ctx,
    )?);
    let ppid_events = ppid::decide(
        &None,
        PpidCommand::Issue {
            ppid: ppid.clone(),
            subject,
            relying_party: facts.relying_party_id.clone(),
        },
        ctx,
    )?;
    Ok(LoginDecision::Issue {
        subject,
        ppid,
        certificate_events,
        subject_events,
        ppid_events,
    })
}
