//! Certificates: which subject a JPKI user-authentication certificate belongs to, its renewal
//! links and its revocation. Stream `certificate-<key>`, where the key is the SHA-256 of issuer
//! and serial (see [`CertificateRef::stream_key`]): the serial alone is not unique across CAs,
//! and a hash keeps the stream id short and within the allowed characters.

use crate::{check_text, Context, DomainError, ErrorCode, Role, SubjectId};
use sha2::{Digest, Sha256};

/// Longest issuer identifier accepted (it is an identifier, e.g. a hex fingerprint or a DN).
pub const MAX_ISSUER_LEN: usize = 1_024;
/// X.509 serials are at most 20 octets (RFC 5280), 40 hex digits.
pub const MAX_SERIAL_HEX_LEN: usize = 40;

/// A certificate, by issuer and serial.
///
/// `issuer` is an opaque, stable identifier of the issuing CA chosen by the verifier. Because
/// both JPKI CA generations carry the same subject name, the recommended value is the lowercase
/// hex SHA-256 of the issuing CA certificate (DER), not the DN. `serial` is hex; it is
/// normalised (lowercase, no `:` separators, no leading zeros) so two spellings of one serial
/// name one stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateRef {
    issuer: String,
    serial: String,
}

impl CertificateRef {
    pub fn new(issuer: &str, serial_hex: &str) -> Result<CertificateRef, DomainError> {
        if issuer.trim().is_empty() || issuer.len() > MAX_ISSUER_LEN {
            return Err(DomainError::new(
                ErrorCode::INVALID_INPUT,
                format!("issuer must be 1..={MAX_ISSUER_LEN} bytes"),
            ));
        }
        let cleaned: String = serial_hex
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let trimmed = cleaned.trim_start_matches('0');
        let serial = if trimmed.is_empty() && !cleaned.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        };
        if serial.is_empty()
            || serial.len() > MAX_SERIAL_HEX_LEN
            || !serial.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(DomainError::new(
                ErrorCode::INVALID_INPUT,
                format!("serial must be 1..={MAX_SERIAL_HEX_LEN} hex digits"),
            ));
        }
        Ok(CertificateRef {
            issuer: issuer.to_owned(),
            serial,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Lowercase hex SHA-256 of `issuer || 0x00 || serial`. The separator cannot occur in
    /// either part, so two different certificates never share a key.
    pub fn stream_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.issuer.as_bytes());
        h.update([0u8]);
        h.update(self.serial.as_bytes());
        hex::encode(h.finalize())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateState {
    pub subject: Option<SubjectId>,
    /// The certificate this one replaced (J-LIS renewal link), if any.
    pub renewed_from: Option<CertificateRef>,
    /// The certificate that replaced this one, if any.
    pub renewed_to: Option<CertificateRef>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CertificateCommand {
    /// First PIN login: bind the certificate to a (new) subject.
    Link {
        certificate: CertificateRef,
        subject: SubjectId,
    },
    /// On the old certificate: it was renewed into `new`.
    RecordRenewal { new: CertificateRef },
    /// On the new certificate: it belongs to the old one's subject.
    LinkFromRenewal {
        certificate: CertificateRef,
        subject: SubjectId,
        previous: CertificateRef,
    },
    /// Found on a CRL or by OCSP.
    Revoke {
        certificate: CertificateRef,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateEvent {
    Linked {
        certificate: CertificateRef,
        subject: SubjectId,
    },
    Renewed {
        new: CertificateRef,
    },
    LinkedFromRenewal {
        certificate: CertificateRef,
        subject: SubjectId,
        previous: CertificateRef,
    },
    Revoked {
        certificate: CertificateRef,
        reason: String,
    },
}

#[derive(Debug)]
pub struct Certificate;

fn system_or_operator(ctx: &Context<'_>) -> Result<(), DomainError> {
    match ctx.role() {
        Role::System | Role::Operator => Ok(()),
        _ => Err(DomainError::not_authorised(
            ctx,
            "only the platform or an operator records certificate facts",
        )),
    }
}

fn not_revoked(state: &CertificateState) -> Result<(), DomainError> {
    if state.revoked {
        return Err(DomainError::new(
            ErrorCode::CERTIFICATE_REVOKED,
            "the certificate is revoked",
        ));
    }
    Ok(())
}

pub fn decide(
    state: &CertificateState,
    command: CertificateCommand,
    ctx: &Context<'_>,
) -> Result<Vec<CertificateEvent>, DomainError> {
    use CertificateCommand as C;
    use CertificateEvent as E;
    match command {
        C::Link {
            certificate,
            subject,
        } => {
            // Linking happens inside a login, which the login decision authorises.
            not_revoked(state)?;
            if state.subject.is_some() {
                return Err(DomainError::new(
                    ErrorCode::CERTIFICATE_ALREADY_LINKED,
                    "the certificate is already linked to a subject",
                ));
            }
            Ok(vec![E::Linked {
                certificate,
                subject,
            }])
        }
        C::RecordRenewal { new } => {
            system_or_operator(ctx)?;
            if state.subject.is_none() {
                return Err(DomainError::new(
                    ErrorCode::CERTIFICATE_NOT_LINKED,
                    "the old certificate was never linked to a subject: nothing to carry over",
                ));
            }
            match &state.renewed_to {
                Some(existing) if *existing == new => Ok(vec![]),
                Some(_) => Err(DomainError::new(
                    ErrorCode::CERTIFICATE_ALREADY_RENEWED,
                    "the certificate was already renewed into another certificate",
                )),
                None => Ok(vec![E::Renewed { new }]),
            }
        }
        C::LinkFromRenewal {
            certificate,
            subject,
            previous,
        } => {
            system_or_operator(ctx)?;
            not_revoked(state)?;
            match state.subject {
                Some(s) if s == subject => Ok(vec![]),
                // The citizen already logged in with the new card before the renewal link
                // arrived: merging two subjects is a data patch's job, not an automatic one.
                Some(_) => Err(DomainError::new(
                    ErrorCode::CERTIFICATE_ALREADY_LINKED,
                    "the new certificate is already linked to another subject",
                )),
                None => Ok(vec![E::LinkedFromRenewal {
                    certificate,
                    subject,
                    previous,
                }]),
            }
        }
        C::Revoke {
            certificate,
            reason,
        } => {
            system_or_operator(ctx)?;
            check_text("reason", &reason)?;
            if state.revoked {
                return Err(DomainError::new(
                    ErrorCode::CERTIFICATE_ALREADY_REVOKED,
                    "the certificate is already revoked",
                ));
            }
            Ok(vec![E::Revoked {
                certificate,
                reason,
            }])
        }
    }
}

pub fn evolve(mut state: CertificateState, event: &CertificateEvent) -> CertificateState {
    use CertificateEvent as E;
    match event {
        E::Linked { subject, .. } => state.subject = Some(*subject),
        E::Renewed { new } => state.renewed_to = Some(new.clone()),
        E::LinkedFromRenewal {
            subject, previous, ..
        } => {
            state.subject = Some(*subject);
            state.renewed_from = Some(previous.clone());
        }
        E::Revoked { .. } => state.revoked = true,
    }
    state
}

crate::aggregate!(
    Certificate,
    "certificate",
    CertificateState,
    CertificateCommand,
    CertificateEvent
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised_and_keys_differ_by_issuer() -> Result<(), DomainError> {
        let a = CertificateRef::new("ca1", "00:0A:bC")?;
        let b = CertificateRef::new("ca1", "abc")?;
        assert_eq!(a, b);
        assert_eq!(a.stream_key(), b.stream_key());
        let c = CertificateRef::new("ca2", "abc")?;
        assert_ne!(a.stream_key(), c.stream_key());
        assert_eq!(a.stream_key().len(), 64);
        assert!(CertificateRef::new("ca1", "xyz").is_err());
        assert!(CertificateRef::new("", "01").is_err());
        assert_eq!(CertificateRef::new("ca", "00")?.serial(), "0");
        Ok(())
    }
}
