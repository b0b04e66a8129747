//! The citizen session token: what the platform's own citizen screens hold for a citizen
//! after a PIN login there.
//!
//! The citizen screens are a relying party of the platform like any other (registered through
//! the operator door; its id configured as `MYKEY_CITIZEN_RP`). They log the citizen in with
//! the card and the PIN (`/v1/auth/login`, an ID token whose `sub` is the citizen's PPID at the
//! screens), then trade that ID token, with their own access token, for a session token at
//! `POST /v1/citizen/sessions`. The session token is a JWS signed with the platform's
//! token-signing keys (the same [`crate::auth::keys::KeyRing`] and [`crate::auth::jws`] code as
//! access and ID tokens; no second JWT implementation) with `typ: citizen+jwt`,
//! `aud: <issuer>/v1/citizen`, `sub` = the citizen's subject id and a 15-minute life.
//!
//! Refusals, each with its code: no token (`CITIZEN_TOKEN_MISSING`), not ours
//! (`CITIZEN_TOKEN_INVALID`), ours but not a citizen session, e.g. an RP's access token
//! (`CITIZEN_TOKEN_NOT_CITIZEN`), another audience (`CITIZEN_TOKEN_AUDIENCE`), expired
//! (`CITIZEN_SESSION_EXPIRED`), its PPID at the screens revoked or invalidated since
//! (`CITIZEN_SESSION_REVOKED`, checked by the door against the subjects read model). The type
//! is checked only after the signature, so "not a citizen token" is never said about a token
//! someone else made.
//!
//! The subject id is in the token: the screens are the platform's own, not a third party
//! (third parties only ever see PPIDs). So is the screens' PPID it was opened with: a session
//! ends when that PPID does (the citizen revokes the screens, or a data patch invalidates it).
//! An ID token opens at most one session: its `jti` is claimed in the same single-use store as
//! client assertions' (`CITIZEN_ID_TOKEN_USED` the second time).

use crate::auth::jws::{JwsError, Parsed, Signer, VerifyKey};
use crate::errors::Problem;
use mykey_domain::SubjectId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A citizen session lives 15 minutes: long enough to apply and link, short enough that a
/// forgotten browser tab is soon useless.
pub const SESSION_TTL_SECS: i64 = 15 * 60;
/// The JOSE `typ` of a session token (access tokens are `at+jwt`, ID tokens `JWT`).
pub const SESSION_TYP: &str = "citizen+jwt";
/// The `typ` of the ID tokens the login endpoints issue.
pub const ID_TOKEN_TYP: &str = "JWT";

/// The `aud` of every citizen session of the platform `issuer`.
pub fn audience(issuer: &str) -> String {
    format!("{issuer}/v1/citizen")
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
    /// The citizen's PPID at the screens, from the ID token the session was opened with.
    ppid: String,
}

/// A verified session: whose, opened with which PPID at the screens, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub subject: SubjectId,
    pub ppid: String,
    pub expires_at: i64,
}

/// Why a request's session token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("Authorization: Bearer <citizen session token> required")]
    Missing,
    #[error("not a session token of this platform")]
    Invalid,
    #[error("a token of this platform, but not a citizen session")]
    NotCitizen,
    #[error("the session is for another audience")]
    Audience,
    #[error("the session expired; log in again")]
    Expired,
    #[error("the session ended: the citizen's PPID at the screens is no longer active")]
    Revoked,
}

impl SessionError {
    pub fn code(self) -> &'static str {
        match self {
            SessionError::Missing => "CITIZEN_TOKEN_MISSING",
            SessionError::Invalid => "CITIZEN_TOKEN_INVALID",
            SessionError::NotCitizen => "CITIZEN_TOKEN_NOT_CITIZEN",
            SessionError::Audience => "CITIZEN_TOKEN_AUDIENCE",
            SessionError::Expired => "CITIZEN_SESSION_EXPIRED",
            SessionError::Revoked => "CITIZEN_SESSION_REVOKED",
        }
    }

    pub fn problem(self) -> Problem {
        Problem::coded(self.code(), "Citizen session refused").with_detail(self.to_string())
    }
}

/// Signs a session for `subject`, opened with their screens' `ppid`, at `now` (seconds); the
/// token and its expiry.
pub fn issue(
    signer: &Signer,
    kid: &str,
    issuer: &str,
    subject: SubjectId,
    ppid: &str,
    now: i64,
) -> Result<(String, i64), JwsError> {
    let exp = now + SESSION_TTL_SECS;
    let claims = SessionClaims {
        iss: issuer.to_owned(),
        aud: audience(issuer),
        sub: subject.0.to_string(),
        iat: now,
        exp,
        jti: Uuid::new_v4().to_string(),
        ppid: ppid.to_owned(),
    };
    Ok((signer.sign(kid, SESSION_TYP, &claims)?, exp))
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Checks a request's `Authorization` header at `now` (seconds) against the platform `issuer`;
/// `key` finds a verifying key by `kid` (the key ring's published keys).
pub fn verify(
    authorization: Option<&str>,
    issuer: &str,
    now: i64,
    key: impl Fn(&str) -> Option<VerifyKey>,
) -> Result<Session, SessionError> {
    let token = bearer(authorization).ok_or(SessionError::Missing)?;
    let jws = Parsed::parse(token).map_err(|_| SessionError::Invalid)?;
    let kid = jws.header.kid.as_deref().ok_or(SessionError::Invalid)?;
    let key = key(kid).ok_or(SessionError::Invalid)?;
    jws.verify(&key).map_err(|_| SessionError::Invalid)?;
    if jws.header.typ.as_deref() != Some(SESSION_TYP) {
        return Err(SessionError::NotCitizen);
    }
    let claims: SessionClaims = jws.claims().map_err(|_| SessionError::Invalid)?;
    if claims.iss != issuer {
        return Err(SessionError::Invalid);
    }
    if claims.aud != audience(issuer) {
        return Err(SessionError::Audience);
    }
    if now > claims.exp {
        return Err(SessionError::Expired);
    }
    let subject = Uuid::parse_str(&claims.sub).map_err(|_| SessionError::Invalid)?;
    Ok(Session {
        subject: SubjectId(subject),
        ppid: claims.ppid,
        expires_at: claims.exp,
    })
}

/// The claims of an ID token that matter to the exchange.
#[derive(Debug, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub aud: String,
    /// The PPID at the relying party the token was issued to.
    pub sub: String,
    pub exp: i64,
    pub acr: String,
    pub jti: String,
}

/// A verified ID token: the PPID it names, and its id and expiry (for single use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdToken {
    pub ppid: String,
    pub jti: String,
    pub expires_at: i64,
}

/// Why an ID token cannot be traded for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("not a valid ID token of this platform")]
    Invalid,
    #[error("the ID token expired")]
    Expired,
    #[error("the ID token was issued to another relying party")]
    Audience,
    #[error("a citizen session needs a PIN login")]
    PinRequired,
    #[error("the ID token's PPID is no longer active")]
    PpidInactive,
    #[error("the ID token already opened a session; log in again")]
    Used,
}

impl IdTokenError {
    pub fn code(self) -> &'static str {
        match self {
            IdTokenError::Invalid | IdTokenError::Expired | IdTokenError::PpidInactive => {
                "CITIZEN_ID_TOKEN_INVALID"
            }
            IdTokenError::Audience => "CITIZEN_ID_TOKEN_AUDIENCE",
            IdTokenError::PinRequired => "CITIZEN_PIN_REQUIRED",
            IdTokenError::Used => "CITIZEN_ID_TOKEN_USED",
        }
    }

    pub fn problem(self) -> Problem {
        Problem::coded(self.code(), "ID token refused").with_detail(self.to_string())
    }
}

/// Checks an ID token the platform issued to relying party `rp` by a PIN login.
pub fn verify_id_token(
    token: &str,
    issuer: &str,
    rp: &str,
    pin_acr: &str,
    now: i64,
    key: impl Fn(&str) -> Option<VerifyKey>,
) -> Result<VerifiedIdToken, IdTokenError> {
    let jws = Parsed::parse(token).map_err(|_| IdTokenError::Invalid)?;
    let kid = jws.header.kid.as_deref().ok_or(IdTokenError::Invalid)?;
    let key = key(kid).ok_or(IdTokenError::Invalid)?;
    jws.verify(&key).map_err(|_| IdTokenError::Invalid)?;
    if jws.header.typ.as_deref() != Some(ID_TOKEN_TYP) {
        return Err(IdTokenError::Invalid);
    }
    let claims: IdTokenClaims = jws.claims().map_err(|_| IdTokenError::Invalid)?;
    if claims.iss != issuer {
        return Err(IdTokenError::Invalid);
    }
    if now > claims.exp {
        return Err(IdTokenError::Expired);
    }
    if claims.aud != rp {
        return Err(IdTokenError::Audience);
    }
    if claims.acr != pin_acr {
        return Err(IdTokenError::PinRequired);
    }
    Ok(VerifiedIdToken {
        ppid: claims.sub,
        jti: claims.jti,
        expires_at: claims.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://mykey.test";

    fn signer() -> Signer {
        let pkcs8 = Signer::generate_es256_pkcs8().unwrap_or_else(|e| panic!("{e}"));
        Signer::from_pkcs8(crate::auth::jws::Alg::ES256, &pkcs8).unwrap_or_else(|e| panic!("{e}"))
    }

    fn keys(s: &Signer) -> impl Fn(&str) -> Option<VerifyKey> + '_ {
        move |kid| (kid == "k1").then(|| s.public())
    }

    fn header(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn a_session_verifies_until_it_expires() {
        let s = signer();
        let subject = SubjectId(Uuid::from_u128(7));
        let (token, exp) =
            issue(&s, "k1", ISSUER, subject, "ppid-s", 1_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(exp, 1_000 + SESSION_TTL_SECS);
        let got = verify(Some(&header(&token)), ISSUER, exp, keys(&s));
        assert_eq!(
            got,
            Ok(Session {
                subject,
                ppid: "ppid-s".into(),
                expires_at: exp
            })
        );
        assert_eq!(
            verify(Some(&header(&token)), ISSUER, exp + 1, keys(&s)),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn each_refusal_has_its_code() {
        let s = signer();
        let subject = SubjectId(Uuid::from_u128(7));
        let (token, _) =
            issue(&s, "k1", ISSUER, subject, "ppid-s", 1_000).unwrap_or_else(|e| panic!("{e}"));
        let refused = |auth: Option<&str>, issuer: &str| verify(auth, issuer, 1_000, keys(&s));
        assert_eq!(refused(None, ISSUER), Err(SessionError::Missing));
        assert_eq!(refused(Some("Basic x"), ISSUER), Err(SessionError::Missing));
        assert_eq!(
            refused(Some("Bearer opaque-operator-token"), ISSUER),
            Err(SessionError::Invalid)
        );
        // Another key (unknown kid, or a forged signature): not ours.
        let other = signer();
        let (forged, _) =
            issue(&other, "k1", ISSUER, subject, "ppid-s", 1_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            refused(Some(&header(&forged)), ISSUER),
            Err(SessionError::Invalid)
        );
        let (unknown_kid, _) =
            issue(&s, "k2", ISSUER, subject, "ppid-s", 1_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            refused(Some(&header(&unknown_kid)), ISSUER),
            Err(SessionError::Invalid)
        );
        // Ours, but an access token.
        let access = s
            .sign(
                "k1",
                "at+jwt",
                &serde_json::json!({ "iss": ISSUER, "sub": "city", "aud": ISSUER, "exp": 2_000 }),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            refused(Some(&header(&access)), ISSUER),
            Err(SessionError::NotCitizen)
        );
        // A session of another audience (same keys, another deployment's issuer).
        let claims = SessionClaims {
            iss: ISSUER.into(),
            aud: "https://elsewhere.test/v1/citizen".into(),
            sub: subject.0.to_string(),
            iat: 1_000,
            exp: 2_000,
            jti: "j".into(),
            ppid: "ppid-s".into(),
        };
        let elsewhere = s
            .sign("k1", SESSION_TYP, &claims)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            refused(Some(&header(&elsewhere)), ISSUER),
            Err(SessionError::Audience)
        );
        // Another issuer altogether.
        assert_eq!(
            refused(Some(&header(&token)), "https://other.test"),
            Err(SessionError::Invalid)
        );
        for e in [
            SessionError::Missing,
            SessionError::Invalid,
            SessionError::NotCitizen,
            SessionError::Audience,
            SessionError::Expired,
            SessionError::Revoked,
        ] {
            assert_eq!(
                e.problem().status(),
                actix_web::http::StatusCode::UNAUTHORIZED
            );
        }
    }

    #[test]
    fn only_a_fresh_pin_id_token_of_the_caller_is_traded() {
        let s = signer();
        let id = |aud: &str, acr: &str, exp: i64, typ: &str| {
            s.sign(
                "k1",
                typ,
                &serde_json::json!({ "iss": ISSUER, "aud": aud, "sub": "ppid-1", "exp": exp, "acr": acr, "iat": 0, "jti": "j" }),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let check = |t: &str| verify_id_token(t, ISSUER, "screens", "pin", 1_000, keys(&s));
        assert_eq!(
            check(&id("screens", "pin", 1_000, "JWT")),
            Ok(VerifiedIdToken {
                ppid: "ppid-1".to_owned(),
                jti: "j".to_owned(),
                expires_at: 1_000
            })
        );
        assert_eq!(
            check(&id("screens", "pin", 999, "JWT")),
            Err(IdTokenError::Expired)
        );
        assert_eq!(
            check(&id("city", "pin", 1_000, "JWT")),
            Err(IdTokenError::Audience)
        );
        assert_eq!(
            check(&id("screens", "tap", 1_000, "JWT")),
            Err(IdTokenError::PinRequired)
        );
        assert_eq!(
            check(&id("screens", "pin", 1_000, "at+jwt")),
            Err(IdTokenError::Invalid)
        );
        assert_eq!(check("nonsense"), Err(IdTokenError::Invalid));
    }
}
