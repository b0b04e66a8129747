//! Rejections: a stable machine code plus a readable message.

use crate::Context;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Stable machine codes. The variant name *is* the code: renaming one is a breaking
        /// change for every API client, so don't.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($(#[$doc])* $name),* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$name => stringify!($name)),* }
            }
        }
    };
}

error_codes! {
    /// The actor's role may not issue this command (or not for this target).
    NOT_AUTHORISED,
    /// A field is malformed (empty, too long, wrong shape).
    INVALID_INPUT,
    /// The command may only be produced by an applied data patch.
    ONLY_BY_DATA_PATCH,
    /// A command id (the idempotency key) was reused for a different command.
    COMMAND_ID_REUSED,

    RP_ALREADY_REGISTERED,
    RP_NOT_FOUND,
    RP_SUSPENDED,
    RP_RETIRED,
    RP_NOT_SUSPENDED,
    /// The relying party is of the wrong kind for this use (e.g. a program for a library).
    RP_WRONG_KIND,
    INVALID_LOCAL_GOVERNMENT_CODE,
    INVALID_JWK,

    PROGRAM_ALREADY_EXISTS,
    PROGRAM_NOT_FOUND,
    PROGRAM_PAUSED,
    PROGRAM_NOT_PAUSED,
    PROGRAM_CLOSED,
    OUTSIDE_PROGRAM_PERIOD,
    INVALID_PERIOD,

    CERTIFICATE_REVOKED,
    CERTIFICATE_ALREADY_REVOKED,
    CERTIFICATE_NOT_LINKED,
    CERTIFICATE_ALREADY_LINKED,
    CERTIFICATE_ALREADY_RENEWED,
    SUBJECT_NOT_FOUND,
    PPID_NOT_FOUND,
    PPID_ALREADY_ISSUED,
    PPID_ALREADY_REVOKED,
    PPID_ALREADY_INVALIDATED,

    APPLICATION_ALREADY_SUBMITTED,
    APPLICATION_NOT_FOUND,
    PAYMENT_SERVICE_NOT_LINKED,
    PAYMENT_SERVICE_ALREADY_LINKED,
    ALREADY_REVIEWED,
    NOT_REVIEWED,
    APPLICATION_REJECTED,
    POINTS_ALREADY_GRANTED,
    POINTS_MUST_BE_POSITIVE,
    SAME_OUTCOME,
    /// A reversal paid was recorded where none is owed.
    NO_REVERSAL_OWED,
    /// A reversal paid larger than the points still owed.
    REVERSAL_EXCEEDS_OWED,
    /// [`crate::application::MAX_GRANT_FAILURES`] failed grants on the current link.
    GRANT_FAILURES_EXHAUSTED,

    PATCH_ALREADY_REQUESTED,
    PATCH_NOT_FOUND,
    PATCH_NOT_DRY_RUN,
    PATCH_NOT_APPROVED,
    PATCH_SELF_APPROVAL,
    PATCH_CLOSED,
    PATCH_EXPIRED,
    PATCH_NOT_EXPIRED,
    PATCH_EMPTY,
    PATCH_TARGET_NOT_DECLARED,
    /// A target stream moved since the dry-run: a new dry-run (and approval) is needed.
    PATCH_TARGET_MOVED,

    NOTICE_ALREADY_SCHEDULED,
    NOTICE_NOT_FOUND,
    NOTICE_CANCELLED,
    MAINTENANCE_END_BEFORE_START,
    MAINTENANCE_IN_PAST,

    CARD_ALREADY_REGISTERED,
    CARD_NOT_FOUND,
    CARD_ALREADY_LENT,
    CARD_NOT_LENT,
    CARD_LOST,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A business rule refused the command. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    pub code: ErrorCode,
    pub message: String,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> DomainError {
        DomainError {
            code,
            message: message.into(),
        }
    }

    pub fn not_authorised(ctx: &Context<'_>, why: &str) -> DomainError {
        DomainError::new(
            ErrorCode::NOT_AUTHORISED,
            format!(
                "{} acting as {}: {why}",
                ctx.actor.id,
                ctx.actor.role.label()
            ),
        )
    }

    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
}
