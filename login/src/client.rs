//! Client authentication: relying parties authenticate with RFC 7523 client assertions and
//! get an access token; every later call presents it.

use super::*;

/// Why a relying party's authentication (client assertion or access token) was refused. Each
/// has a stable code ([`ClientAuthError::code`]); the problem+json is made in
/// [`super::problem`].
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("grant_type must be client_credentials")]
    UnsupportedGrantType,
    #[error("client_assertion_type must be {CLIENT_ASSERTION_TYPE}")]
    AssertionTypeUnsupported,
    #[error("alg must be ES256 or RS256")]
    AssertionAlgorithm,
    /// With what is wrong, when that can be said.
    #[error("malformed client assertion")]
    AssertionMalformed(Option<String>),
    #[error("iss, sub (and client_id) must all be the client id")]
    AssertionIssuerMismatch,
    #[error("{0}")]
    ClientKeyUnusable(String),
    #[error("signature does not verify with the registered key")]
    AssertionSignatureInvalid,
    #[error("aud must be exactly {endpoint} or {issuer} (no other audiences)")]
    AssertionAudience { endpoint: String, issuer: String },
    #[error("exp has passed")]
    AssertionExpired,
    #[error("exp may be at most {MAX_ASSERTION_LIFETIME_SECS} s ahead")]
    AssertionLifetime,
    #[error("nbf is in the future")]
    AssertionNotYetValid,
    #[error("jti must be 1..={MAX_JTI_LEN} characters")]
    AssertionJti,
    #[error("this jti was already used")]
    AssertionReplayed,
    #[error("no such relying party")]
    ClientUnknown,
    #[error("relying party suspended")]
    ClientSuspended,
    #[error("relying party retired")]
    ClientRetired,
    #[error("Authorization: Bearer <access token> required")]
    AccessTokenMissing,
    #[error("access token invalid or expired")]
    AccessTokenInvalid,
    /// The write model refused the relying-party lookup, or is unavailable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A dependency (signing keys, the assertion-id table, the audit trail) is unavailable.
    #[error("{0}")]
    Unavailable(String),
    #[error("the access token could not be signed")]
    Signing,
}

impl ClientAuthError {
    /// The stable code of the refusal (audited, and the problem's `code`).
    pub fn code(&self) -> &str {
        use ClientAuthError as E;
        match self {
            E::UnsupportedGrantType => "UNSUPPORTED_GRANT_TYPE",
            E::AssertionTypeUnsupported => "ASSERTION_TYPE_UNSUPPORTED",
            E::AssertionAlgorithm => "ASSERTION_ALGORITHM",
            E::AssertionMalformed(_) => "ASSERTION_MALFORMED",
            E::AssertionIssuerMismatch => "ASSERTION_ISSUER_MISMATCH",
            E::ClientKeyUnusable(_) => "CLIENT_KEY_UNUSABLE",
            E::AssertionSignatureInvalid => "ASSERTION_SIGNATURE_INVALID",
            E::AssertionAudience { .. } => "ASSERTION_AUDIENCE",
            E::AssertionExpired => "ASSERTION_EXPIRED",
            E::AssertionLifetime => "ASSERTION_LIFETIME",
            E::AssertionNotYetValid => "ASSERTION_NOT_YET_VALID",
            E::AssertionJti => "ASSERTION_JTI",
            E::AssertionReplayed => "ASSERTION_REPLAYED",
            E::ClientUnknown => "CLIENT_UNKNOWN",
            E::ClientSuspended => "CLIENT_SUSPENDED",
            E::ClientRetired => "CLIENT_RETIRED",
            E::AccessTokenMissing => "ACCESS_TOKEN_MISSING",
            E::AccessTokenInvalid => "ACCESS_TOKEN_INVALID",
            E::Identity(IdentityError::Rejected { code, .. }) => code,
            E::Identity(IdentityError::Unavailable(_)) | E::Unavailable(_) => "UNAVAILABLE",
            E::Signing => "INTERNAL",
        }
    }
}

/// `aud` may be a string or an array (RFC 7519 4.1.3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// True when every audience is one of `allowed` (and there is at least one): an assertion
    /// also addressed to another server could be replayed there, so arrays carrying other
    /// audiences are refused, not searched.
    fn only(&self, allowed: &[&str]) -> bool {
        match self {
            Audience::One(a) => allowed.contains(&a.as_str()),
            Audience::Many(v) => !v.is_empty() && v.iter().all(|a| allowed.contains(&a.as_str())),
        }
    }
}

/// Time checks of a client assertion at `now`; returns until when its `jti` must be kept.
/// Saturating arithmetic throughout: `exp`/`nbf` come from the client and may be anything an
/// i64 holds.
fn check_assertion_times(now: i64, exp: i64, nbf: Option<i64>) -> Result<i64, ClientAuthError> {
    if now > exp.saturating_add(ASSERTION_LEEWAY_SECS) {
        return Err(ClientAuthError::AssertionExpired);
    }
    if exp.saturating_sub(now) > MAX_ASSERTION_LIFETIME_SECS {
        return Err(ClientAuthError::AssertionLifetime);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(ASSERTION_LEEWAY_SECS)) {
        return Err(ClientAuthError::AssertionNotYetValid);
    }
    Ok(exp.saturating_add(ASSERTION_LEEWAY_SECS))
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    jti: String,
    #[serde(default)]
    nbf: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// The token endpoint's form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
    pub client_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
}

impl Auth {
    /// POST /v1/oauth/token.
    pub async fn token(
        &self,
        form: TokenForm,
        ctx: &Ctx,
    ) -> Result<TokenResponse, ClientAuthError> {
        let mut rp_seen: Option<String> = None;
        let result = self.token_inner(form, &mut rp_seen).await;
        match &result {
            Ok(_) => self.metrics.tokens_issued.inc(),
            Err(_) => self.metrics.token_refusals.inc(),
        }
        match (&result, &rp_seen) {
            // Nobody proved who they are: counted, not recorded one by one.
            (Err(e), None) => {
                self.refuse_unauthenticated(ctx, "oauth.token", e.code())
                    .await;
                result
            }
            _ => {
                // The assertion verified: the caller's correlation id may be used.
                let mut ctx = ctx.clone();
                ctx.adopt_correlation_id();
                self.finish(&ctx, "oauth.token", rp_seen.as_deref(), None, result)
                    .await
            }
        }
    }

    async fn token_inner(
        &self,
        form: TokenForm,
        rp_seen: &mut Option<String>,
    ) -> Result<TokenResponse, ClientAuthError> {
        if form.grant_type.as_deref() != Some("client_credentials") {
            return Err(ClientAuthError::UnsupportedGrantType);
        }
        if form.client_assertion_type.as_deref() != Some(CLIENT_ASSERTION_TYPE) {
            return Err(ClientAuthError::AssertionTypeUnsupported);
        }
        let raw = form.client_assertion.as_deref().unwrap_or_default();
        let jws = Parsed::parse(raw).map_err(|e| match e {
            JwsError::Algorithm => ClientAuthError::AssertionAlgorithm,
            JwsError::Critical => ClientAuthError::AssertionMalformed(Some(e.to_string())),
            _ => ClientAuthError::AssertionMalformed(None),
        })?;
        let claims: AssertionClaims = jws.claims().map_err(|_| {
            ClientAuthError::AssertionMalformed(Some(
                "iss, sub, aud, exp and jti are required".to_owned(),
            ))
        })?;
        if claims.iss != claims.sub || form.client_id.as_deref().is_some_and(|c| c != claims.iss) {
            return Err(ClientAuthError::AssertionIssuerMismatch);
        }
        let rp_id = claims.iss.clone();
        let rp = self.active_rp(&rp_id).await?;
        let key = VerifyKey::from_jwk(&rp.jwk)
            .map_err(|e| ClientAuthError::ClientKeyUnusable(e.to_string()))?;
        jws.verify(&key)
            .map_err(|_| ClientAuthError::AssertionSignatureInvalid)?;
        // From here on the caller is this RP: its refusals are audited as its attempts.
        *rp_seen = Some(rp_id.clone());
        // Claims are checked only after the signature: nothing unsigned reaches the jti table.
        let now = self.settings.clock.now_secs();
        let endpoint = self.settings.token_endpoint();
        if !claims.aud.only(&[&endpoint, &self.settings.issuer]) {
            return Err(ClientAuthError::AssertionAudience {
                endpoint,
                issuer: self.settings.issuer.clone(),
            });
        }
        let keep_jti_until = check_assertion_times(now, claims.exp, claims.nbf)?;
        // Every value is validated before it reaches PostgreSQL (whose text refuses NUL).
        if claims.jti.chars().any(char::is_control) {
            return Err(ClientAuthError::AssertionMalformed(Some(
                "jti must not contain control characters".to_owned(),
            )));
        }
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(ClientAuthError::AssertionJti);
        }
        let fresh = self
            .db
            .claim_jti(&rp_id, &claims.jti, keep_jti_until)
            .await
            .map_err(|e| ClientAuthError::Unavailable(e.to_string()))?;
        if !fresh {
            return Err(ClientAuthError::AssertionReplayed);
        }
        let key = self
            .keys
            .active()
            .map_err(|e| ClientAuthError::Unavailable(e.to_string()))?;
        let access = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: rp_id,
            aud: self.settings.issuer.clone(),
            iat: now,
            exp: now + ACCESS_TOKEN_TTL_SECS,
            jti: Uuid::new_v4().to_string(),
        };
        let token = key
            .signer
            .sign(&key.kid, "at+jwt", &access)
            .map_err(|_| ClientAuthError::Signing)?;
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: ACCESS_TOKEN_TTL_SECS,
        })
    }

    /// The RP, if it exists and is active. An id that is no valid RP id, or that the write
    /// model recently did not know, is answered without asking it (no event-store read).
    async fn active_rp(&self, rp_id: &str) -> Result<identity::RelyingParty, ClientAuthError> {
        let Ok(rp_id) = identity::RelyingPartyId::parse(rp_id) else {
            return Err(ClientAuthError::ClientUnknown);
        };
        let now_ms = self.settings.clock.now_ms();
        if self
            .unknown_rps
            .get(&rp_id)
            .is_some_and(|until| *until > now_ms)
        {
            return Err(ClientAuthError::ClientUnknown);
        }
        self.metrics.rp_lookups.inc();
        let found = self.identity.relying_party(&rp_id).await?;
        let Some(rp) = found else {
            if self.unknown_rps.len() < MAX_NEGATIVE_RPS {
                self.unknown_rps
                    .insert(rp_id, now_ms + NEGATIVE_RP_CACHE_MS);
            }
            return Err(ClientAuthError::ClientUnknown);
        };
        match rp.status {
            RpStatus::Active => Ok(rp),
            RpStatus::Suspended => Err(ClientAuthError::ClientSuspended),
            RpStatus::Retired => Err(ClientAuthError::ClientRetired),
        }
    }

    /// Forgets that `rp_id` was unknown (it was just registered here).
    pub fn forget_unknown_rp(&self, rp_id: &identity::RelyingPartyId) {
        self.unknown_rps.remove(rp_id);
    }

    /// [`Auth::authenticate`], auditing a refusal as an attempt on `endpoint`.
    pub async fn authenticate_for(
        &self,
        authorization: Option<&str>,
        endpoint: &'static str,
        ctx: &Ctx,
    ) -> Result<identity::RelyingPartyId, ClientAuthError> {
        let result = self.authenticate(authorization).await;
        if let Err(e) = &result {
            self.refuse(ctx, endpoint, None, e).await;
        }
        result
    }

    /// Checks a bearer access token; returns the RP id. The RP must still be active.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<identity::RelyingPartyId, ClientAuthError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ClientAuthError::AccessTokenMissing)?;
        let invalid = || ClientAuthError::AccessTokenInvalid;
        let now = self.settings.clock.now_secs();
        if let Some(hit) = self.verified_tokens.get(token).map(|e| e.clone()) {
            if now > hit.1 {
                return Err(invalid());
            }
            self.active_rp(hit.0.as_str()).await?;
            return Ok(hit.0);
        }
        let jws = Parsed::parse(token).map_err(|_| invalid())?;
        // typ at+jwt keeps an ID token (also signed by us) from passing as an access token.
        if jws.header.typ.as_deref() != Some("at+jwt") {
            return Err(invalid());
        }
        let kid = jws.header.kid.as_deref().ok_or_else(invalid)?;
        let key = self.keys.verifying(kid, now).ok_or_else(invalid)?;
        jws.verify(&key.public).map_err(|_| invalid())?;
        let claims: AccessClaims = jws.claims().map_err(|_| invalid())?;
        if claims.iss != self.settings.issuer
            || claims.aud != self.settings.issuer
            || now > claims.exp
        {
            return Err(invalid());
        }
        let rp = self.active_rp(&claims.sub).await?;
        if self.verified_tokens.len() >= MAX_VERIFIED_TOKENS {
            self.verified_tokens.clear();
        }
        self.verified_tokens
            .insert(token.to_owned(), (rp.id.clone(), claims.exp));
        Ok(rp.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertion_time_arithmetic_never_overflows() {
        let now = 1_700_000_000;
        let code = |r: Result<i64, ClientAuthError>| r.map_err(|e| e.code().to_owned());
        assert_eq!(
            code(check_assertion_times(now, now + 60, None)),
            Ok(now + 90)
        );
        for (exp, want) in [
            (i64::MAX, "ASSERTION_LIFETIME"),
            (i64::MIN, "ASSERTION_EXPIRED"),
            (-1, "ASSERTION_EXPIRED"),
            (now + MAX_ASSERTION_LIFETIME_SECS + 1, "ASSERTION_LIFETIME"),
        ] {
            assert_eq!(
                code(check_assertion_times(now, exp, None)),
                Err(want.into())
            );
        }
        assert_eq!(
            code(check_assertion_times(now, now + 60, Some(i64::MAX))),
            Err("ASSERTION_NOT_YET_VALID".into())
        );
        assert!(check_assertion_times(now, now + 60, Some(i64::MIN)).is_ok());
        assert!(check_assertion_times(i64::MIN, i64::MIN, None).is_ok());
    }

    #[test]
    fn audience_must_hold_only_our_names() {
        let allowed = ["https://i/v1/oauth/token", "https://i"];
        let one = |a: &str| Audience::One(a.into());
        let many = |v: &[&str]| Audience::Many(v.iter().map(|s| (*s).to_owned()).collect());
        assert!(one("https://i").only(&allowed));
        assert!(one("https://i/v1/oauth/token").only(&allowed));
        assert!(many(&["https://i"]).only(&allowed));
        assert!(!one("https://i/").only(&allowed));
        assert!(!many(&[]).only(&allowed));
        assert!(!many(&["https://i", "https://other"]).only(&allowed));
    }
}
