//! Challenges and the two citizen-card logins (PIN and かざし): certificate checks, the
//! write model's PPID, the ID token.

use super::identity::{CertificateRef, RelyingPartyId, RequestActor};
use super::*;

/// Why a login (PIN or かざし) was refused. Each has a stable code ([`LoginError::code`]); the
/// HTTP status and problem body are made in one place ([`super::problem`]).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    #[error("the signature is not base64 of 1..={MAX_SIGNATURE_BYTES} bytes")]
    SignatureMalformed,
    #[error("expected RSASSA-PKCS1-v1_5 with SHA-256 over the challenge nonce bytes")]
    SignatureInvalid,
    #[error("register with a PIN login for this relying party first")]
    NotRegistered,
    /// The write model refused, or is unavailable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A dependency (signing keys, the challenge claim, the audit trail) is unavailable.
    #[error("{0}")]
    Unavailable(String),
    #[error("the ID token could not be signed")]
    Signing,
}

impl LoginError {
    /// The stable code of the refusal (audited, and the problem's `code`).
    pub fn code(&self) -> &str {
        match self {
            LoginError::Certificate(e) => e.code(),
            LoginError::Revocation(e) => e.code(),
            LoginError::Challenge(e) => e.code(),
            LoginError::SignatureMalformed => "SIGNATURE_MALFORMED",
            LoginError::SignatureInvalid => "SIGNATURE_INVALID",
            LoginError::NotRegistered => "NOT_REGISTERED",
            LoginError::Identity(IdentityError::Rejected { code, .. }) => code,
            LoginError::Identity(IdentityError::Unavailable(_)) | LoginError::Unavailable(_) => {
                "UNAVAILABLE"
            }
            LoginError::Signing => "INTERNAL",
        }
    }
}

/// The relying party `rp` acting in the request `ctx`.
fn relying_party_actor(rp: &RelyingPartyId, ctx: &Ctx) -> RequestActor {
    RequestActor {
        actor: mykey_domain::Actor {
            id: rp.to_string(),
            role: mykey_domain::Role::RelyingParty(rp.clone()),
        },
        correlation_id: ctx.correlation_id,
        client_addr: ctx.client_addr.clone(),
        command_id: None,
    }
}

/// The write model's name of a verified certificate.
fn certificate_ref(cert: &VerifiedCertificate) -> Result<CertificateRef, LoginError> {
    CertificateRef::new(&cert.issuer, &cert.serial)
        .map_err(|d| IdentityError::rejected(d.code(), d.message).into())
}

#[derive(Debug, Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
    acr: &'a str,
    jti: String,
}

#[derive(Debug, Serialize)]
pub struct ChallengeResponse {
    /// Opaque: carries its own authenticated state (see [`challenge`]).
    pub challenge_id: String,
    pub nonce: String,
    pub expires_at: String,
}

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    pub challenge_id: String,
    pub certificate: String,
    pub signature: String,
}

#[derive(Debug, Deserialize)]
pub struct KazashiBody {
    pub certificate: String,
}

#[derive(Debug, Serialize)]
pub struct LoginResponse {
    pub id_token: String,
    pub ppid: String,
    pub acr: &'static str,
    pub expires_at: String,
}

impl Auth {
    /// Records that the ID token `jti`, issued to `rp` and valid until `expires_at`, has been
    /// traded (for a citizen session): true the first time only. The ids share the
    /// client-assertion single-use store, namespaced so that no assertion id can collide.
    pub async fn claim_id_token(
        &self,
        rp: &RelyingPartyId,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool, db::DbError> {
        self.db
            .claim_jti(rp.as_str(), &format!("id-token:{jti}"), expires_at)
            .await
    }

    /// POST /v1/auth/challenges. Stateless (see [`challenge`]): no storage, never refused
    /// once the RP is authenticated, and not an attempt to audit.
    pub fn challenge(&self, rp: &RelyingPartyId) -> ChallengeResponse {
        let c = self
            .challenges
            .issue(rp.as_str(), self.settings.clock.now_ms());
        ChallengeResponse {
            challenge_id: c.token,
            nonce: challenge::b64(&c.nonce),
            expires_at: rfc3339(c.expires_at_ms, true),
        }
    }

    fn decode_certificate(&self, b64: &str) -> Result<Vec<u8>, LoginError> {
        // Size before decoding: base64 is 4/3 of the DER.
        if b64.len() > jpki::MAX_CERTIFICATE_BYTES * 4 / 3 + 8 {
            return Err(CertError::TooLarge.into());
        }
        b64_std(b64).ok_or_else(|| CertError::Malformed("not base64".into()).into())
    }

    /// Certificate checks shared by both logins: path, time, profile, revocation.
    fn check_certificate(
        &self,
        der: &[u8],
        fingerprint: &str,
    ) -> Result<VerifiedCertificate, LoginError> {
        let now = self.settings.clock.now_secs();
        let cached = self.verified_certs.get(fingerprint).map(|c| c.clone());
        let cert = match cached {
            Some(c) => {
                c.check_time(now)?;
                c
            }
            None => {
                let c = self.anchors.verify(der, now)?;
                if self.verified_certs.len() >= MAX_VERIFIED_CERTS {
                    self.verified_certs.clear();
                }
                self.verified_certs
                    .insert(fingerprint.to_owned(), c.clone());
                c
            }
        };
        self.crls
            .check(
                &cert,
                now,
                self.settings.crl_grace_secs,
                self.settings.require_crl,
            )
            .inspect_err(|e| {
                if *e != RevocationError::Revoked {
                    self.metrics.crl_stale_refusals.inc();
                    tracing::error!(ca = %cert.anchor.label, "login refused: {e} (alert)");
                }
            })?;
        Ok(cert)
    }

    fn id_token(
        &self,
        rp_id: &str,
        ppid: &str,
        acr: &'static str,
    ) -> Result<(String, i64), LoginError> {
        let key = self
            .keys
            .active()
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        let now = self.settings.clock.now_secs();
        let exp = now + ID_TOKEN_TTL_SECS;
        let claims = IdClaims {
            iss: &self.settings.issuer,
            aud: rp_id,
            sub: ppid,
            iat: now,
            exp,
            acr,
            jti: Uuid::new_v4().to_string(),
        };
        let token = key
            .signer
            .sign(&key.kid, "JWT", &claims)
            .map_err(|_| LoginError::Signing)?;
        Ok((token, exp))
    }

    /// POST /v1/auth/login (PIN).
    pub async fn pin_login(
        &self,
        rp: &RelyingPartyId,
        body: LoginBody,
        ctx: &Ctx,
    ) -> Result<LoginResponse, LoginError> {
        let mut fingerprint = None;
        let result = self.pin_login_inner(rp, body, ctx, &mut fingerprint).await;
        self.count(&result, &self.metrics.pin_logins);
        self.finish(ctx, "auth.login", Some(rp.as_str()), fingerprint, result)
            .await
    }

    async fn pin_login_inner(
        &self,
        rp: &RelyingPartyId,
        body: LoginBody,
        ctx: &Ctx,
        fingerprint: &mut Option<String>,
    ) -> Result<LoginResponse, LoginError> {
        let der = self.decode_certificate(&body.certificate)?;
        let fp = jpki::fingerprint(&der);
        *fingerprint = Some(fp.clone());
        let signature = b64_std(&body.signature)
            .filter(|s| !s.is_empty() && s.len() <= MAX_SIGNATURE_BYTES)
            .ok_or(LoginError::SignatureMalformed)?;
        let opened = self.challenges.open(
            &body.challenge_id,
            rp.as_str(),
            self.settings.clock.now_ms(),
        )?;
        // Consumed before the certificate is checked: a failed attempt burns its challenge.
        // The claim is the one database write of a challenge: any instance, exactly once.
        let fresh = self
            .claims
            .claim(opened.id, opened.expires_at_ms)
            .await
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        if !fresh {
            return Err(ChallengeError::Used.into());
        }
        let nonce = opened.nonce;
        let cert = self.check_certificate(&der, &fp)?;
        if !cert.verify_signature(&nonce, &signature) {
            return Err(LoginError::SignatureInvalid);
        }
        let actor = relying_party_actor(rp, ctx);
        let ppid = self
            .identity
            .register_login(&certificate_ref(&cert)?, rp, &actor)
            .await?;
        let (id_token, exp) = self.id_token(rp.as_str(), &ppid, ACR_PIN)?;
        Ok(LoginResponse {
            id_token,
            ppid,
            acr: ACR_PIN,
            expires_at: rfc3339(exp, false),
        })
    }

    /// POST /v1/auth/kazashi.
    pub async fn kazashi(
        &self,
        rp: &RelyingPartyId,
        body: KazashiBody,
        ctx: &Ctx,
    ) -> Result<LoginResponse, LoginError> {
        let mut fingerprint = None;
        let result = async {
            let der = self.decode_certificate(&body.certificate)?;
            let fp = jpki::fingerprint(&der);
            fingerprint = Some(fp.clone());
            let cert = self.check_certificate(&der, &fp)?;
            let ppid = self
                .identity
                .active_ppid(&certificate_ref(&cert)?, rp)
                .await?
                .ok_or(LoginError::NotRegistered)?;
            let (id_token, exp) = self.id_token(rp.as_str(), &ppid, ACR_KAZASHI)?;
            Ok(LoginResponse {
                id_token,
                ppid,
                acr: ACR_KAZASHI,
                expires_at: rfc3339(exp, false),
            })
        }
        .await;
        self.count(&result, &self.metrics.kazashi_logins);
        self.finish(ctx, "auth.kazashi", Some(rp.as_str()), fingerprint, result)
            .await
    }

    fn count<T, E>(&self, result: &Result<T, E>, ok: &prometheus::IntCounter) {
        match result {
            Ok(_) => ok.inc(),
            Err(_) => self.metrics.login_refusals.inc(),
        }
    }
}
