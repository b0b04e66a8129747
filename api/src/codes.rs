//! Every machine `code` the HTTP API answers with, and its HTTP status: the one place that
//! maps a code to a status (`/work/shared/api.md` "Errors"): bad input 400; no or bad
//! credential 401; authenticated but not allowed 403; not found 404; wrong method 405; wrong
//! state, conflict or duplicate 409; gone 410; too large 413; wrong media type 415; idempotency
//! key reused with another body 422; rate
//! limited 429; a dependency down 503.
//!
//! Write-model refusals (`mykey_domain::ErrorCode`) that an endpoint can cause are listed here
//! too; any other domain code falls back to [`domain_status`]. `/openapi.json`'s code enum
//! ([`crate::http::openapi`]) is held equal to [`ApiCode::ALL`] by a test.

use actix_web::http::StatusCode;

macro_rules! api_codes {
    ($($(#[$doc:meta])* $name:ident = $status:literal),* $(,)?) => {
        /// A stable API problem code. The variant name is the code.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ApiCode { $($(#[$doc])* $name),* }

        impl ApiCode {
            pub const ALL: &'static [ApiCode] = &[$(ApiCode::$name),*];

            pub fn as_str(self) -> &'static str {
                match self { $(ApiCode::$name => stringify!($name)),* }
            }

            pub fn status(self) -> StatusCode {
                let s: u16 = match self { $(ApiCode::$name => $status),* };
                StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }

            pub fn parse(code: &str) -> Option<ApiCode> {
                match code { $(stringify!($name) => Some(ApiCode::$name),)* _ => None }
            }
        }
    };
}

api_codes! {
    // request shape, routing, limits
    MALFORMED_BODY = 400,
    BODY_TOO_LARGE = 413,
    UNSUPPORTED_MEDIA_TYPE = 415,
    /// No such path (or no such action on a relying party).
    NOT_FOUND = 404,
    METHOD_NOT_ALLOWED = 405,
    /// Too many failed (unauthenticated) attempts from this address.
    RATE_LIMITED = 429,
    UNAVAILABLE = 503,
    INTERNAL = 500,
    // token endpoint
    UNSUPPORTED_GRANT_TYPE = 400,
    ASSERTION_TYPE_UNSUPPORTED = 400,
    ASSERTION_MALFORMED = 400,
    ASSERTION_ALGORITHM = 401,
    ASSERTION_ISSUER_MISMATCH = 401,
    ASSERTION_SIGNATURE_INVALID = 401,
    ASSERTION_AUDIENCE = 401,
    ASSERTION_EXPIRED = 401,
    ASSERTION_LIFETIME = 401,
    ASSERTION_NOT_YET_VALID = 401,
    ASSERTION_JTI = 401,
    ASSERTION_REPLAYED = 401,
    CLIENT_UNKNOWN = 401,
    CLIENT_KEY_UNUSABLE = 401,
    CLIENT_SUSPENDED = 403,
    CLIENT_RETIRED = 403,
    // access token
    ACCESS_TOKEN_MISSING = 401,
    ACCESS_TOKEN_INVALID = 401,
    // challenges
    CHALLENGE_UNKNOWN = 404,
    CHALLENGE_USED = 409,
    CHALLENGE_EXPIRED = 410,
    CHALLENGE_OTHER_CLIENT = 403,
    // certificate
    CERTIFICATE_MALFORMED = 400,
    CERTIFICATE_TOO_LARGE = 400,
    CERTIFICATE_UNKNOWN_ISSUER = 403,
    CERTIFICATE_SIGNATURE_INVALID = 403,
    CERTIFICATE_ALGORITHM_UNSUPPORTED = 403,
    CERTIFICATE_EXPIRED = 403,
    CERTIFICATE_NOT_YET_VALID = 403,
    CERTIFICATE_ISSUER_EXPIRED = 403,
    CERTIFICATE_KEY_USAGE = 403,
    CERTIFICATE_EXTENDED_KEY_USAGE = 403,
    CERTIFICATE_IS_CA = 403,
    CERTIFICATE_POLICY = 403,
    CERTIFICATE_CRITICAL_EXTENSION = 403,
    CERTIFICATE_REVOKED = 403,
    CRL_MISSING = 503,
    CRL_STALE = 503,
    // login
    SIGNATURE_MALFORMED = 400,
    SIGNATURE_INVALID = 403,
    NOT_REGISTERED = 404,
    // operator
    OPERATOR_DISABLED = 403,
    OPERATOR_UNAUTHORIZED = 401,
    /// The person's credential is past its expiry date.
    CREDENTIAL_EXPIRED = 401,
    /// The credential is valid but lacks the role this door needs.
    ROLE_REQUIRED = 403,
    /// A query parameter (limit, cursor, …) is malformed.
    INVALID_QUERY = 400,
    CRL_MALFORMED = 400,
    CRL_TOO_LARGE = 400,
    CRL_UNKNOWN_ISSUER = 400,
    CRL_SIGNATURE_INVALID = 400,
    CRL_NO_NEXT_UPDATE = 400,
    CRL_UNSUPPORTED = 400,
    CRL_NOT_NEWER = 409,
    JWK_INVALID = 400,
    // shared by every door (api/src/http)
    IDEMPOTENCY_KEY_MISSING = 400,
    IDEMPOTENCY_KEY_MALFORMED = 400,
    /// The same Idempotency-Key with another request (method, path or body).
    IDEMPOTENCY_KEY_REUSED = 422,
    IDEMPOTENCY_KEY_IN_FLIGHT = 409,
    MIN_POSITION_MALFORMED = 400,
    /// The read model did not reach `min_position` within the bound.
    READ_MODEL_BEHIND = 503,
    // write-model refusals an endpoint can cause (mykey_domain::ErrorCode)
    INVALID_INPUT = 400,
    INVALID_LOCAL_GOVERNMENT_CODE = 400,
    INVALID_JWK = 400,
    NOT_AUTHORISED = 403,
    RP_NOT_FOUND = 404,
    RP_ALREADY_REGISTERED = 409,
    RP_SUSPENDED = 409,
    RP_RETIRED = 409,
    RP_NOT_SUSPENDED = 409,
    COMMAND_ID_REUSED = 409,
    CERTIFICATE_ALREADY_REVOKED = 409,
    CERTIFICATE_NOT_LINKED = 409,
    CERTIFICATE_ALREADY_LINKED = 409,
    CERTIFICATE_ALREADY_RENEWED = 409,
    SUBJECT_NOT_FOUND = 404,
    PPID_ALREADY_ISSUED = 409,
    // the operator door (api/src/routes/operations) and the RP, provider and citizen doors
    // (api/src/routes/rp.rs, provider.rs): write-model refusals they can cause
    PPID_NOT_FOUND = 404,
    PPID_ALREADY_REVOKED = 409,
    PPID_ALREADY_INVALIDATED = 409,
    APPLICATION_NOT_FOUND = 404,
    ONLY_BY_DATA_PATCH = 409,
    RP_WRONG_KIND = 403,
    PROGRAM_ALREADY_EXISTS = 409,
    PROGRAM_NOT_PAUSED = 409,
    PROGRAM_CLOSED = 409,
    INVALID_PERIOD = 400,
    PROGRAM_NOT_FOUND = 404,
    PROGRAM_PAUSED = 409,
    ALREADY_REVIEWED = 409,
    NOT_REVIEWED = 409,
    APPLICATION_REJECTED = 409,
    POINTS_ALREADY_GRANTED = 409,
    POINTS_MUST_BE_POSITIVE = 400,
    PAYMENT_SERVICE_NOT_LINKED = 409,
    NO_REVERSAL_OWED = 409,
    REVERSAL_EXCEEDS_OWED = 409,
    /// The application has had the most failed grants recorded for its payment-service link.
    GRANT_FAILURES_EXHAUSTED = 409,
    SAME_OUTCOME = 409,
    PATCH_ALREADY_REQUESTED = 409,
    PATCH_NOT_FOUND = 404,
    PATCH_NOT_DRY_RUN = 409,
    PATCH_NOT_APPROVED = 409,
    /// Four eyes: the requester or the dry-runner may not approve their own patch.
    PATCH_SELF_APPROVAL = 403,
    PATCH_CLOSED = 409,
    PATCH_EXPIRED = 409,
    PATCH_NOT_EXPIRED = 409,
    PATCH_EMPTY = 400,
    PATCH_TARGET_NOT_DECLARED = 400,
    /// A target stream moved since the dry-run: dry-run again and have it re-approved.
    PATCH_TARGET_MOVED = 409,
    NOTICE_ALREADY_SCHEDULED = 409,
    NOTICE_NOT_FOUND = 404,
    NOTICE_CANCELLED = 409,
    MAINTENANCE_END_BEFORE_START = 400,
    MAINTENANCE_IN_PAST = 400,
    CARD_ALREADY_REGISTERED = 409,
    CARD_NOT_FOUND = 404,
    CARD_ALREADY_LENT = 409,
    CARD_NOT_LENT = 409,
    CARD_LOST = 409,
    // the citizen door (api/src/routes/citizen): its session token and the write-model
    // refusals only a citizen's command causes
    /// No citizen session token (`Authorization: Bearer <session token>`).
    CITIZEN_TOKEN_MISSING = 401,
    /// Not a token this platform signed (malformed, bad signature, unknown key, other issuer).
    CITIZEN_TOKEN_INVALID = 401,
    /// A token of this platform, but not a citizen session (an access token, an ID token).
    CITIZEN_TOKEN_NOT_CITIZEN = 401,
    /// A citizen session addressed to another audience.
    CITIZEN_TOKEN_AUDIENCE = 401,
    /// The citizen session expired: log in again.
    CITIZEN_SESSION_EXPIRED = 401,
    /// The citizen's PPID at the screens, which the session was opened with, was revoked or
    /// invalidated: the session ended. Log in again.
    CITIZEN_SESSION_REVOKED = 401,
    /// Only the platform's own citizen screens (`MYKEY_CITIZEN_RP`) open citizen sessions.
    NOT_CITIZEN_RP = 403,
    /// The ID token to exchange is not valid (malformed, bad signature, expired, its PPID no
    /// longer active).
    CITIZEN_ID_TOKEN_INVALID = 401,
    /// The ID token to exchange was issued to another relying party.
    CITIZEN_ID_TOKEN_AUDIENCE = 401,
    /// The ID token already opened a session (an ID token is traded once).
    CITIZEN_ID_TOKEN_USED = 401,
    /// A citizen session needs a PIN login; a かざし login does not prove possession.
    CITIZEN_PIN_REQUIRED = 403,
    APPLICATION_ALREADY_SUBMITTED = 409,
    PAYMENT_SERVICE_ALREADY_LINKED = 409,
    OUTSIDE_PROGRAM_PERIOD = 409,
}

/// The status of a write-model code not listed above, by its kind.
pub fn domain_status(code: &str) -> StatusCode {
    if code.starts_with("INVALID_") || code.ends_with("_MUST_BE_POSITIVE") {
        StatusCode::BAD_REQUEST
    } else if code.ends_with("_NOT_FOUND") {
        StatusCode::NOT_FOUND
    } else if code == "NOT_AUTHORISED" {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::CONFLICT
    }
}

/// The HTTP status of any code the API answers with.
pub fn status_of(code: &str) -> StatusCode {
    match ApiCode::parse(code) {
        Some(c) => c.status(),
        None => domain_status(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_statuses_follow_the_rules() {
        for c in ApiCode::ALL {
            assert_eq!(ApiCode::parse(c.as_str()), Some(*c));
            assert!(c.status().is_client_error() || c.status().is_server_error());
        }
        // Issue 8 item 10: bad input, unknown and state refusals of the operator API.
        assert_eq!(
            status_of("INVALID_LOCAL_GOVERNMENT_CODE"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_of("INVALID_INPUT"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of("RP_NOT_FOUND"), StatusCode::NOT_FOUND);
        assert_eq!(status_of("RP_ALREADY_REGISTERED"), StatusCode::CONFLICT);
        assert_eq!(status_of("PROGRAM_NOT_FOUND"), StatusCode::NOT_FOUND);
        assert_eq!(status_of("PATCH_CLOSED"), StatusCode::CONFLICT);
    }

    /// Upper-case string literals in `api/src` and `login/src` that are not problem codes.
    const NOT_CODES: &[&str] = &[
        "DATABASE_URL",
        // Environment variables of the Kafka relay (api/src/config.rs tests).
        "KAFKA_BROKERS",
        "KAFKA_PARTITIONS",
        "CARGO_MANIFEST_DIR",
        "PG_VERSION",
        // `MemoryIdentity`, the write model's test double (compiled for unit tests only).
        "RELYING_PARTY_EXISTS",
        "RELYING_PARTY_UNKNOWN",
        "CERTIFICATE_UNKNOWN",
        // Per-line results in a renewal import's 200 report (documented with that path), not
        // problems.
        "RENEWAL_LINE_MALFORMED",
        "RENEWAL_SERIAL_MALFORMED",
        "RENEWAL_ISSUER_UNKNOWN",
    ];

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("codes.rs") {
                out.push(path);
            }
        }
    }

    /// A code written anywhere in the API's sources or the login crate's (a `Problem`, an
    /// error enum's `code()`) must be in the table, so its status is decided here and the
    /// OpenAPI test sees it.
    #[test]
    fn every_code_literal_in_the_sources_is_in_the_table() {
        let mut files = Vec::new();
        let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        rust_files(&api.join("src"), &mut files);
        let before = files.len();
        rust_files(&api.join("../login/src"), &mut files);
        assert!(
            files.len() > before + 10,
            "the login crate's sources not found"
        );
        assert!(files.len() > 10, "sources not found");
        let mut missing = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for literal in text.split('"').skip(1).step_by(2) {
                let looks_like_code = literal.contains('_')
                    && literal.len() > 3
                    && literal
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && literal.starts_with(|c: char| c.is_ascii_uppercase());
                if looks_like_code
                    && !literal.starts_with("MYKEY_")
                    && !NOT_CODES.contains(&literal)
                    && ApiCode::parse(literal).is_none()
                {
                    missing.push(format!("{}: {literal}", file.display()));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "codes missing from ApiCode: {missing:#?}"
        );
    }

    #[test]
    fn every_listed_domain_code_exists_in_the_domain() {
        let domain: Vec<&str> = mykey_domain::ErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .collect();
        for c in [
            "INVALID_INPUT",
            "INVALID_LOCAL_GOVERNMENT_CODE",
            "INVALID_JWK",
            "NOT_AUTHORISED",
            "RP_NOT_FOUND",
            "RP_ALREADY_REGISTERED",
            "RP_SUSPENDED",
            "RP_RETIRED",
            "RP_NOT_SUSPENDED",
            "COMMAND_ID_REUSED",
        ] {
            assert!(domain.contains(&c), "{c}");
            assert_eq!(
                ApiCode::parse(c).map(|a| a.status()),
                Some(domain_status(c))
            );
        }
    }
}
