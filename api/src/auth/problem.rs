//! Refusals of the login flows as problem+json: the HTTP face of their typed errors, made here
//! and nowhere else (the login logic returns typed errors and knows nothing of HTTP).

use super::challenge::ChallengeError;
use super::crl::{CrlError, RevocationError};
use super::identity::IdentityError;
use super::jpki::CertError;
use super::ratelimit::Limited;
use super::ClientAuthError;
use super::LoginError;
use super::{CrlLoadError, Refusal, RenewalImportError, RotationError, AUDIT_UNAVAILABLE};
use crate::errors::Problem;
use actix_web::http::StatusCode;

pub(super) fn problem(status: StatusCode, code: &str, title: &str) -> Problem {
    Problem::new(status, code, title)
}

pub(super) fn cert_problem(e: &CertError) -> Problem {
    let status = match e {
        CertError::Malformed(_) | CertError::TooLarge => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    };
    problem(status, e.code(), "Certificate refused").with_detail(e.to_string())
}

pub(super) fn revocation_problem(e: &RevocationError) -> Problem {
    match e {
        RevocationError::Revoked => problem(StatusCode::FORBIDDEN, e.code(), "Certificate revoked"),
        // Not the citizen's fault: the platform cannot currently vouch for revocation status.
        RevocationError::Stale | RevocationError::Missing => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            e.code(),
            "Revocation status unavailable",
        )
        .with_detail(e.to_string()),
    }
}

pub(super) fn challenge_problem(e: ChallengeError) -> Problem {
    let status = match e {
        ChallengeError::Unknown => StatusCode::NOT_FOUND,
        ChallengeError::Used => StatusCode::CONFLICT,
        ChallengeError::Expired => StatusCode::GONE,
        ChallengeError::OtherClient => StatusCode::FORBIDDEN,
    };
    problem(status, e.code(), "Challenge refused").with_detail(e.to_string())
}

/// The one conversion of a write-model refusal into problem+json: its status from the code
/// table ([`crate::codes`]).
impl From<IdentityError> for Problem {
    fn from(e: IdentityError) -> Problem {
        match e {
            IdentityError::Rejected { code, detail } => {
                Problem::coded(&code, "Refused by the write model").with_detail(detail)
            }
            IdentityError::Unavailable(d) => Problem::unavailable(d),
        }
    }
}

pub(super) fn unauthorized(code: &str, detail: impl Into<String>) -> Problem {
    problem(
        StatusCode::UNAUTHORIZED,
        code,
        "Client authentication failed",
    )
    .with_detail(detail)
}

/// The one conversion of a refused login into problem+json.
impl From<LoginError> for Problem {
    fn from(e: LoginError) -> Problem {
        match e {
            LoginError::Certificate(e) => cert_problem(&e),
            LoginError::Revocation(e) => revocation_problem(&e),
            LoginError::Challenge(e) => challenge_problem(e),
            LoginError::SignatureMalformed => problem(
                StatusCode::BAD_REQUEST,
                "SIGNATURE_MALFORMED",
                "Malformed signature",
            ),
            LoginError::SignatureInvalid => problem(
                StatusCode::FORBIDDEN,
                "SIGNATURE_INVALID",
                "Signature does not verify",
            )
            .with_detail(LoginError::SignatureInvalid.to_string()),
            LoginError::NotRegistered => {
                problem(StatusCode::NOT_FOUND, "NOT_REGISTERED", "Not registered")
                    .with_detail(LoginError::NotRegistered.to_string())
            }
            LoginError::Identity(e) => e.into(),
            LoginError::Unavailable(d) => Problem::unavailable(d),
            LoginError::Signing => Problem::internal(),
        }
    }
}

/// The one conversion of a refused client authentication into problem+json.
impl From<ClientAuthError> for Problem {
    fn from(e: ClientAuthError) -> Problem {
        use ClientAuthError as E;
        let code = e.code().to_owned();
        match e {
            E::UnsupportedGrantType => {
                problem(StatusCode::BAD_REQUEST, &code, "Unsupported grant type")
                    .with_detail(e.to_string())
            }
            E::AssertionTypeUnsupported => problem(
                StatusCode::BAD_REQUEST,
                &code,
                "Unsupported client assertion type",
            )
            .with_detail(e.to_string()),
            E::AssertionMalformed(detail) => {
                let p = problem(StatusCode::BAD_REQUEST, &code, "Malformed client assertion");
                match detail {
                    Some(d) => p.with_detail(d),
                    None => p,
                }
            }
            E::ClientSuspended => problem(StatusCode::FORBIDDEN, &code, "Relying party suspended"),
            E::ClientRetired => problem(StatusCode::FORBIDDEN, &code, "Relying party retired"),
            E::Identity(e) => e.into(),
            E::Unavailable(d) => Problem::unavailable(d),
            E::Signing => Problem::internal(),
            E::AssertionAlgorithm
            | E::AssertionIssuerMismatch
            | E::ClientKeyUnusable(_)
            | E::AssertionSignatureInvalid
            | E::AssertionAudience { .. }
            | E::AssertionExpired
            | E::AssertionLifetime
            | E::AssertionNotYetValid
            | E::AssertionJti
            | E::AssertionReplayed
            | E::ClientUnknown
            | E::AccessTokenMissing
            | E::AccessTokenInvalid => unauthorized(&code, e.to_string()),
        }
    }
}

/// A refused CRL load: the CRL's own faults are 400 (409 when not newer), the rest 503.
impl From<CrlLoadError> for Problem {
    fn from(e: CrlLoadError) -> Problem {
        match e {
            CrlLoadError::Refused(e) => {
                let status = match e {
                    CrlError::NotNewer => StatusCode::CONFLICT,
                    _ => StatusCode::BAD_REQUEST,
                };
                problem(status, e.code(), "CRL refused").with_detail(e.to_string())
            }
            CrlLoadError::NotInstalled(e) => {
                problem(StatusCode::BAD_REQUEST, e.code(), "CRL refused")
            }
            CrlLoadError::Identity(e) => e.into(),
            e @ CrlLoadError::NotStored => Problem::unavailable(e),
        }
    }
}

impl From<RenewalImportError> for Problem {
    fn from(e: RenewalImportError) -> Problem {
        match e {
            RenewalImportError::TooLarge => Problem::body_too_large(),
            RenewalImportError::Unavailable(d) => Problem::unavailable(d),
        }
    }
}

impl From<RotationError> for Problem {
    fn from(e: RotationError) -> Problem {
        Problem::unavailable(e)
    }
}

/// The rate limiter's refusal (429 with `Retry-After`).
impl From<Limited> for Problem {
    fn from(l: Limited) -> Problem {
        Problem::coded("RATE_LIMITED", "Too many failed attempts from this address")
            .with_retry_after(l.retry_after_secs)
    }
}

/// A route's problem as the audit trail records it.
impl Refusal for Problem {
    fn code(&self) -> &str {
        &self.code
    }
    fn audit_unavailable() -> Problem {
        Problem::unavailable(AUDIT_UNAVAILABLE)
    }
}
