//! Identifiers. String ids are restricted to the characters a stream id allows
//! (`[A-Za-z0-9_.:-]`), so `<category>-<id>` always parses.

use crate::{DomainError, ErrorCode};
use std::fmt;
use uuid::Uuid;

/// Longest string id: keeps `<category>-<id>` under the store's stream id limit (200 bytes)
/// even for the composed application id `<program>.<subject>`.
pub const MAX_ID_LEN: usize = 100;

fn check_id(kind: &str, raw: &str) -> Result<(), DomainError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_ID_LEN
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::new(
            ErrorCode::INVALID_INPUT,
            format!("{kind} must be 1..={MAX_ID_LEN} characters of [A-Za-z0-9_.:-]"),
        ))
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<$name, DomainError> {
                check_id($kind, raw)?;
                Ok($name(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A connected system, chosen by the operator at registration (e.g. `city-131016`).
    RelyingPartyId,
    "relying party id"
);
string_id!(
    /// A point program (施策).
    ProgramId,
    "program id"
);
string_id!(
    /// A maintenance notice.
    NoticeId,
    "notice id"
);
string_id!(
    /// A test card in the operator's register.
    TestCardId,
    "test card id"
);
string_id!(
    /// A pairwise pseudonymous identifier: random, never derived from the certificate.
    Ppid,
    "ppid"
);
string_id!(
    /// A point application: one per (program, subject), so the id is derived from both.
    ApplicationId,
    "application id"
);

impl Ppid {
    /// A PPID from a random uuid (the context's id source), as 32 lowercase hex digits.
    pub fn from_uuid(u: Uuid) -> Ppid {
        Ppid(u.simple().to_string())
    }
}

impl ApplicationId {
    /// The deterministic id of `subject`'s application to `program`.
    pub fn of(program: &ProgramId, subject: &SubjectId) -> ApplicationId {
        ApplicationId(format!("{}.{}", program.0, subject.0))
    }
}

/// The platform's internal, random identifier for one citizen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectId(pub Uuid);

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_characters_a_stream_id_cannot_hold() {
        assert!(RelyingPartyId::parse("city-131016").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(MAX_ID_LEN + 1)] {
            assert_eq!(
                RelyingPartyId::parse(bad).map_err(|e| e.code),
                Err(ErrorCode::INVALID_INPUT)
            );
        }
    }
}
