//! Certificates, subjects and PPIDs: what the login endpoint calls.

use crate::{stream_of, CommandError, CommandMeta, Commands};
use mykey_domain::certificate::{
    Certificate, CertificateCommand, CertificateRef, CertificateState,
};
use mykey_domain::login::{decide_login, LoginDecision, LoginFacts};
use mykey_domain::ppid::{PpidAggregate, PpidCommand, PpidEvent, PpidState};
use mykey_domain::relying_party::RelyingParty;
use mykey_domain::subject::{ReleaseReason, Subject, SubjectCommand, SubjectState};
use mykey_domain::{Aggregate, DomainError, ErrorCode, Ppid, RelyingPartyId, SubjectId};
use mykey_store::EventStore;

/// A recorded renewal link: the subject both certificates belong to, and the global position
/// of the link's last event (see [`Commands::link_renewal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalLinked {
    pub subject: SubjectId,
    pub position: u64,
}

/// The outcome of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResult {
    pub subject: SubjectId,
    /// The citizen's active PPID for the relying party.
    pub ppid: Ppid,
    /// True when this login issued the PPID (first PIN login for that RP).
    pub newly_issued: bool,
}

impl<S: EventStore> Commands<S> {
    /// Login with a certificate for a relying party: finds or creates the subject bound to
    /// the certificate and finds or issues its active PPID for the RP. Refuses a revoked
    /// certificate (`CERTIFICATE_REVOKED`) and a suspended, retired or unknown RP
    /// (`RP_SUSPENDED`, `RP_RETIRED`, `RP_NOT_FOUND`).
    ///
    /// The caller must have verified the certificate (chain, validity, and for a first
    /// registration the PIN signature); this records the outcome. A かざし (no-PIN) login
    /// should use [`Commands::active_ppid`] instead, which never issues.
    pub async fn register_login(
        &self,
        meta: &CommandMeta,
        certificate: &CertificateRef,
        relying_party: &RelyingPartyId,
    ) -> Result<LoginResult, CommandError> {
        // No `guard_acting_rp`: `decide_login` admits only the platform or the RP itself as
        // the actor and checks that RP's status, from the same read, one query fewer.
        let cert_stream = stream_of::<Certificate>(certificate.stream_key())?;
        let rp_stream = stream_of::<RelyingParty>(relying_party)?;
        let (cert_stream, rp_stream) = (&cert_stream, &rp_stream);
        self.with_retry(meta, None, || async move {
            let (rp, cert) = self
                .load_two::<RelyingParty, Certificate>(rp_stream, cert_stream)
                .await?;
            let subject = match cert.state.subject {
                Some(s) => Some(
                    self.load::<Subject>(&stream_of::<Subject>(s)?, None)
                        .await?,
                ),
                None => None,
            };
            let empty = SubjectState::default();
            let decision = {
                let ctx = self.context(meta, None);
                decide_login(
                    LoginFacts {
                        relying_party_id: relying_party,
                        relying_party: &rp.state,
                        certificate,
                        certificate_state: &cert.state,
                        subject_state: subject.as_ref().map_or(&empty, |s| &s.state),
                    },
                    &ctx,
                )?
            };
            match decision {
                LoginDecision::Existing { subject, ppid } => Ok((
                    vec![],
                    LoginResult {
                        subject,
                        ppid,
                        newly_issued: false,
                    },
                )),
                LoginDecision::Issue {
                    subject: subject_id,
                    ppid,
                    certificate_events,
                    subject_events,
                    ppid_events,
                } => {
                    let subject_loaded = match subject {
                        Some(s) => s,
                        None => crate::Loaded {
                            stream: stream_of::<Subject>(subject_id)?,
                            state: SubjectState::default(),
                            version: 0,
                            position: 0,
                            seen_command: false,
                            command_position: None,
                        },
                    };
                    let ppid_loaded = crate::Loaded::<PpidAggregate> {
                        stream: stream_of::<PpidAggregate>(&ppid)?,
                        state: None,
                        version: 0,
                        position: 0,
                        seen_command: false,
                        command_position: None,
                    };
                    let streams = [
                        self.stream_append(&cert, &certificate_events)?,
                        self.stream_append(&subject_loaded, &subject_events)?,
                        self.stream_append(&ppid_loaded, &ppid_events)?,
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    Ok((
                        streams,
                        LoginResult {
                            subject: subject_id,
                            ppid,
                            newly_issued: true,
                        },
                    ))
                }
            }
        })
        .await
    }

    /// The certificate's stream folded: its subject, renewal links and revocation.
    pub async fn load_certificate(
        &self,
        certificate: &CertificateRef,
    ) -> Result<CertificateState, CommandError> {
        let stream = stream_of::<Certificate>(certificate.stream_key())?;
        Ok(self.load::<Certificate>(&stream, None).await?.state)
    }

    /// Many certificates' states in one read of the log, in the order asked (a CRL check).
    pub async fn load_certificates(
        &self,
        certificates: &[CertificateRef],
    ) -> Result<Vec<CertificateState>, CommandError> {
        Ok(self
            .load_certificates_at(certificates)
            .await?
            .into_iter()
            .map(|(state, _)| state)
            .collect())
    }

    /// [`Commands::load_certificates`] with the global position of each certificate's last
    /// event (0: no stream), so a caller that decides to write nothing can still answer a
    /// position that reflects what it read.
    pub async fn load_certificates_at(
        &self,
        certificates: &[CertificateRef],
    ) -> Result<Vec<(CertificateState, u64)>, CommandError> {
        let streams = certificates
            .iter()
            .map(|c| stream_of::<Certificate>(c.stream_key()))
            .collect::<Result<Vec<_>, _>>()?;
        let read = self.store.read_streams(&streams).await?;
        streams
            .iter()
            .zip(&read)
            .map(|(stream, events)| {
                let loaded = Self::fold::<Certificate>(stream, events, None)?;
                Ok((loaded.state, loaded.position))
            })
            .collect()
    }

    /// The subject a certificate belongs to, if any. A renewed certificate resolves to the
    /// same subject as the one it replaced: the renewal link is recorded on the new
    /// certificate's own stream, so this is one read. Does not check revocation: use
    /// [`Commands::load_certificate`] for that.
    pub async fn resolve_certificate(
        &self,
        certificate: &CertificateRef,
    ) -> Result<Option<SubjectId>, CommandError> {
        Ok(self.load_certificate(certificate).await?.subject)
    }

    /// The subject's stream folded (certificates and active PPIDs).
    pub async fn load_subject(&self, subject: SubjectId) -> Result<SubjectState, CommandError> {
        let stream = stream_of::<Subject>(subject)?;
        Ok(self.load::<Subject>(&stream, None).await?.state)
    }

    /// The subject's active PPID for the relying party, if one was issued and is not revoked
    /// or invalidated. Never issues one (suitable for a no-PIN かざし login).
    pub async fn active_ppid(
        &self,
        subject: SubjectId,
        relying_party: &RelyingPartyId,
    ) -> Result<Option<Ppid>, CommandError> {
        Ok(self
            .load_subject(subject)
            .await?
            .active_ppids
            .get(relying_party)
            .cloned())
    }

    /// A PPID's record (subject, RP, status).
    pub async fn load_ppid(&self, ppid: &Ppid) -> Result<Option<PpidState>, CommandError> {
        let stream = stream_of::<PpidAggregate>(ppid)?;
        Ok(self.load::<PpidAggregate>(&stream, None).await?.state)
    }

    /// Records a J-LIS renewal link: `new` belongs to `old`'s subject, with the same PPIDs.
    /// Appends to the old certificate, the new certificate and the subject atomically.
    /// Refuses when `old` was never linked (`CERTIFICATE_NOT_LINKED`) or `new` is already
    /// linked to another subject (`CERTIFICATE_ALREADY_LINKED`). Repeating it is a no-op.
    ///
    /// Answers the position of the link's last event: this append's, the first append's for
    /// a repeated command id, and for a no-op (already linked) the last position of the three
    /// streams it decided on, as [`crate::Executed::position`] does.
    pub async fn link_renewal(
        &self,
        meta: &CommandMeta,
        old: &CertificateRef,
        new: &CertificateRef,
    ) -> Result<RenewalLinked, CommandError> {
        let old_stream = stream_of::<Certificate>(old.stream_key())?;
        let new_stream = stream_of::<Certificate>(new.stream_key())?;
        if old_stream == new_stream {
            return Err(DomainError::new(
                ErrorCode::INVALID_INPUT,
                "a certificate cannot renew itself",
            )
            .into());
        }
        let (old_stream, new_stream) = (&old_stream, &new_stream);
        let ((subject, read_position), written) = self
            .with_retry_at(meta, None, || async move {
                let (old_c, new_c) = self
                    .load_two::<Certificate, Certificate>(old_stream, new_stream)
                    .await?;
                let subject_id = old_c.state.subject.ok_or_else(|| {
                    DomainError::new(
                        ErrorCode::CERTIFICATE_NOT_LINKED,
                        "the old certificate was never linked to a subject",
                    )
                })?;
                let subj = self
                    .load::<Subject>(&stream_of::<Subject>(subject_id)?, None)
                    .await?;
                let (old_events, new_events, subject_events) = {
                    let ctx = self.context(meta, None);
                    (
                        Certificate::decide(
                            &old_c.state,
                            CertificateCommand::RecordRenewal { new: new.clone() },
                            &ctx,
                        )?,
                        Certificate::decide(
                            &new_c.state,
                            CertificateCommand::LinkFromRenewal {
                                certificate: new.clone(),
                                subject: subject_id,
                                previous: old.clone(),
                            },
                            &ctx,
                        )?,
                        Subject::decide(
                            &subj.state,
                            SubjectCommand::AddRenewedCertificate {
                                certificate: new.clone(),
                            },
                            &ctx,
                        )?,
                    )
                };
                let streams = [
                    self.stream_append(&old_c, &old_events)?,
                    self.stream_append(&new_c, &new_events)?,
                    self.stream_append(&subj, &subject_events)?,
                ]
                .into_iter()
                .flatten()
                .collect();
                let read = old_c.position.max(new_c.position).max(subj.position);
                Ok((streams, (subject_id, read)))
            })
            .await?;
        Ok(RenewalLinked {
            subject,
            position: written.unwrap_or(read_position),
        })
    }

    /// Records that a certificate was found revoked (CRL/OCSP). Works for certificates never
    /// seen before, so a later login with them is refused. Refuses a second revocation
    /// (`CERTIFICATE_ALREADY_REVOKED`). Answers the position of the revocation event (the first
    /// run's for a repeated command id).
    pub async fn mark_certificate_revoked(
        &self,
        meta: &CommandMeta,
        certificate: &CertificateRef,
        reason: &str,
    ) -> Result<u64, CommandError> {
        Ok(self
            .execute::<Certificate>(
                meta,
                certificate.stream_key(),
                CertificateCommand::Revoke {
                    certificate: certificate.clone(),
                    reason: reason.to_owned(),
                },
            )
            .await?
            .position)
    }

    /// Revokes a PPID, by its relying party or its citizen (from `meta.role`). Appends to the
    /// PPID and the subject atomically; the next registration for that RP issues a new PPID.
    ///
    /// Returns the global position of the last event the revocation wrote (the first run's on
    /// a repeated command id).
    pub async fn revoke_ppid(&self, meta: &CommandMeta, ppid: &Ppid) -> Result<u64, CommandError> {
        self.guard_acting_rp(meta).await?;
        let ((), position) = self
            .with_retry_at(meta, None, || async move {
                let s = self
                    .plan_ppid_release(meta, None, ppid, PpidCommand::Revoke)
                    .await?;
                Ok((s, ()))
            })
            .await?;
        if let Some(p) = position {
            return Ok(p);
        }
        // Nothing appended: this command id already revoked it (`plan_ppid_release` found
        // it). Its events are in the PPID's stream and its subject's.
        let ppid_stream = stream_of::<PpidAggregate>(ppid)?;
        let mut streams = vec![ppid_stream.clone()];
        if let Some(record) = self.load::<PpidAggregate>(&ppid_stream, None).await?.state {
            streams.push(stream_of::<Subject>(record.subject)?);
        }
        self.command_position(&streams, meta.command_id)
            .await?
            .ok_or_else(|| {
                CommandError::Store(mykey_store::StoreError::Unavailable(
                    "a repeated PPID revocation left no event of its command".into(),
                ))
            })
    }

    /// The appends that revoke or invalidate a PPID (PPID stream + subject stream).
    pub(crate) async fn plan_ppid_release(
        &self,
        meta: &CommandMeta,
        patch_id: Option<uuid::Uuid>,
        ppid: &Ppid,
        command: PpidCommand,
    ) -> Result<Vec<mykey_store::StreamAppend>, CommandError> {
        let p = self
            .load::<PpidAggregate>(&stream_of::<PpidAggregate>(ppid)?, Some(meta.command_id))
            .await?;
        if p.seen_command {
            // This command was already applied: repeating it is a no-op, not a refusal.
            return Ok(vec![]);
        }
        let record = p.state.clone().ok_or_else(|| {
            DomainError::new(ErrorCode::PPID_NOT_FOUND, format!("no PPID {ppid}"))
        })?;
        let subj = self
            .load::<Subject>(&stream_of::<Subject>(record.subject)?, None)
            .await?;
        let (ppid_events, subject_events) = {
            let ctx = self.context(meta, patch_id);
            let ppid_events = PpidAggregate::decide(&p.state, command, &ctx)?;
            let reason = match ppid_events.first() {
                Some(PpidEvent::Invalidated { .. }) => ReleaseReason::Invalidated,
                _ => ReleaseReason::Revoked,
            };
            let subject_events = Subject::decide(
                &subj.state,
                SubjectCommand::ReleasePpid {
                    relying_party: record.relying_party.clone(),
                    ppid: ppid.clone(),
                    reason,
                },
                &ctx,
            )?;
            (ppid_events, subject_events)
        };
        Ok([
            self.stream_append(&p, &ppid_events)?,
            self.stream_append(&subj, &subject_events)?,
        ]
        .into_iter()
        .flatten()
        .collect())
    }
}
