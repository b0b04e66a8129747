//! Citizen-card login: relying-party authentication (RFC 7523 client assertions → access
//! token), challenges, PIN login and かざし login with JPKI user-authentication certificates,
//! ID tokens and their keys, CRLs and renewal links.
//!
//! Promises:
//! - a refused attempt writes no business event (every check runs before the write model is
//!   asked to change anything);
//! - every attempt, accepted or refused, is in `auth_audit` before the response is sent;
//! - raw certificates, signatures and tokens are never logged: only the certificate's
//!   SHA-256 fingerprint is recorded.

pub mod cache;
pub mod challenge;
pub mod claims;
pub mod clock;
pub mod config;
pub mod crl;
mod crl_load;
pub mod db;
pub mod dn;
pub mod identity;
pub mod jpki;
pub mod jws;
pub mod keys;
pub mod keywrap;
pub mod metrics;
pub mod operators;
pub mod ratelimit;
mod renewals;
#[cfg(test)]
mod verifier_tests;

use crate::errors::Problem;
use actix_web::http::StatusCode;
use base64::Engine;
use challenge::{ChallengeError, Challenges};
use config::AuthSettings;
use crl::{CrlSet, RevocationError};
use db::{AuditEntry, AuditRecord, AuditSink, AuthDb, RefusalKey};
use identity::{Actor, CertRef, Identity, IdentityError, RpStatus};
use jpki::{CertError, TrustAnchors, VerifiedCertificate};
use jws::{JwsError, Parsed, VerifyKey};
use keys::{KeyRing, ACCESS_TOKEN_TTL_SECS, ID_TOKEN_TTL_SECS};
use metrics::Metrics;
use prometheus::Registry;
use ratelimit::RateLimiter;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

pub const ACR_PIN: &str = "urn:mykey:acr:pin";
pub const ACR_KAZASHI: &str = "urn:mykey:acr:kazashi";
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock skew tolerated on assertion times.
pub const ASSERTION_LEEWAY_SECS: i64 = 30;
/// A client assertion may live at most this long (exp − now): bounds the replay table.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 600;

/// Longest accepted `jti`.
pub const MAX_JTI_LEN: usize = 256;
/// A card's RSA-2048 signature is 256 bytes; RSA-8192 would be 1024.
pub const MAX_SIGNATURE_BYTES: usize = 1024;
/// Verified access tokens remembered; cleared when full (they expire within 5 minutes).
pub const MAX_VERIFIED_TOKENS: usize = 50_000;
/// Verified certificates remembered (~1 KiB each); cleared when full.
pub const MAX_VERIFIED_CERTS: usize = 100_000;
/// How often each instance reloads keys and CRLs, prunes used assertion and challenge ids and
/// forgets refilled rate-limit buckets.
pub const MAINTENANCE_INTERVAL_SECS: u64 = 30;
/// How long "no such relying party" is remembered: a flood of token requests for an unknown
/// client costs one event-store read per id and window, and a newly registered RP is usable
/// at another instance at most this much later (at once at the instance that registered it).
pub const NEGATIVE_RP_CACHE_MS: i64 = 5_000;
/// Unknown relying-party ids remembered at once; when full, no more are added (until the
/// maintenance drops expired ones).
pub const MAX_NEGATIVE_RPS: usize = 10_000;
/// Label the challenge key is sealed under (associated data of its AES-GCM seal).
const CHALLENGE_KEY_LABEL: &str = "auth_challenge_key";

/// Everything login needs, shared by all requests.
#[derive(Debug)]
pub struct Auth {
    pub settings: AuthSettings,
    pub anchors: TrustAnchors,
    pub crls: CrlSet,
    /// Stored CRLs that no longer verify (e.g. their CA was removed from the anchors): not
    /// fetched and parsed again at every reload.
    crl_skipped: std::sync::Mutex<std::collections::HashSet<i64>>,
    pub challenges: Challenges,
    claims: claims::ChallengeClaims,
    pub keys: KeyRing,
    pub db: AuthDb,
    audit: AuditSink,
    pub metrics: Metrics,
    /// The registry `metrics` are registered in (the [`crate::startup::Application`]'s).
    pub registry: Arc<Registry>,
    pub limiter: RateLimiter,
    /// Relying-party ids the write model did not know, until when (clock ms).
    unknown_rps: dashmap::DashMap<String, i64>,
    pub identity: Arc<dyn Identity>,
    /// Access tokens whose signature and claims already verified: token → (RP id, exp).
    /// A token is immutable, so its verification result is too; expiry and the RP's status
    /// are still checked on every request.
    verified_tokens: dashmap::DashMap<String, (String, i64)>,
    /// Certificates that passed path and profile checks, by SHA-256 of their DER. Those
    /// results depend only on the bytes and the anchors (fixed for the process); time
    /// validity and revocation are still checked on every login.
    verified_certs: dashmap::DashMap<String, VerifiedCertificate>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthStartError {
    #[error("trust anchors: {0}")]
    Trust(#[from] jpki::TrustError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("signing keys: {0}")]
    Keys(#[from] keys::KeyError),
    #[error("{0}")]
    Config(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Request context for audit and event metadata.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Generated per request; a caller's `X-Correlation-Id` is adopted only once the caller
    /// has authenticated ([`Ctx::adopt_correlation_id`]).
    pub correlation_id: Uuid,
    pub client_addr: Option<String>,
    /// The peer address the rate limiter keys on.
    pub peer: Option<std::net::IpAddr>,
    /// The caller's `X-Correlation-Id`, if it was a UUID: not trusted until adopted.
    pub offered_correlation_id: Option<Uuid>,
}

impl Ctx {
    /// After the caller authenticated: its correlation id (if it sent one) is used from now.
    pub fn adopt_correlation_id(&mut self) {
        if let Some(id) = self.offered_correlation_id {
            self.correlation_id = id;
        }
    }
}

fn problem(status: StatusCode, code: &str, title: &str) -> Problem {
    Problem::new(status, code, title)
}

fn cert_problem(e: &CertError) -> Problem {
    let status = match e {
        CertError::Malformed(_) | CertError::TooLarge => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    };
    problem(status, e.code(), "Certificate refused").with_detail(e.to_string())
}

fn revocation_problem(e: &RevocationError) -> Problem {
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

fn challenge_problem(e: ChallengeError) -> Problem {
    let status = match e {
        ChallengeError::Unknown => StatusCode::NOT_FOUND,
        ChallengeError::Used => StatusCode::CONFLICT,
        ChallengeError::Expired => StatusCode::GONE,
        ChallengeError::OtherClient => StatusCode::FORBIDDEN,
    };
    problem(status, e.code(), "Challenge refused").with_detail(e.to_string())
}

fn identity_problem(e: IdentityError) -> Problem {
    match e {
        IdentityError::Rejected { code, detail } => {
            Problem::coded(&code, "Refused by the write model").with_detail(detail)
        }
        IdentityError::Unavailable(d) => Problem::unavailable(d),
    }
}

fn unauthorized(code: &str, detail: impl Into<String>) -> Problem {
    problem(
        StatusCode::UNAUTHORIZED,
        code,
        "Client authentication failed",
    )
    .with_detail(detail)
}

fn b64_std(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
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
fn check_assertion_times(now: i64, exp: i64, nbf: Option<i64>) -> Result<i64, Problem> {
    if now > exp.saturating_add(ASSERTION_LEEWAY_SECS) {
        return Err(unauthorized("ASSERTION_EXPIRED", "exp has passed"));
    }
    if exp.saturating_sub(now) > MAX_ASSERTION_LIFETIME_SECS {
        return Err(unauthorized(
            "ASSERTION_LIFETIME",
            format!("exp may be at most {MAX_ASSERTION_LIFETIME_SECS} s ahead"),
        ));
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(ASSERTION_LEEWAY_SECS)) {
        return Err(unauthorized(
            "ASSERTION_NOT_YET_VALID",
            "nbf is in the future",
        ));
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

#[derive(Debug, Serialize)]
pub struct CrlReport {
    pub ca_key_id: String,
    pub issuer: String,
    pub this_update: String,
    pub next_update: String,
    pub revoked_entries: usize,
    pub known_certificates_revoked: usize,
}

#[derive(Debug, Serialize)]
pub struct RenewalReport {
    pub linked: usize,
    pub failed: Vec<RenewalFailure>,
}

#[derive(Debug, Serialize)]
pub struct RenewalFailure {
    pub line: usize,
    pub code: String,
    pub detail: String,
}

/// Largest renewal CSV accepted in one request/file: ~100k lines.
pub const MAX_RENEWAL_CSV_BYTES: usize = 16 * 1024 * 1024;

fn rfc3339(secs_or_ms: i64, ms: bool) -> String {
    let t = if ms {
        chrono::DateTime::from_timestamp_millis(secs_or_ms)
    } else {
        chrono::DateTime::from_timestamp(secs_or_ms, 0)
    };
    t.unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Auth {
    /// Loads trust anchors and keys, loads CRLs from the database, starts the audit writer.
    pub async fn build(
        settings: AuthSettings,
        pg: tokio_postgres::Config,
        identity: Arc<dyn Identity>,
    ) -> Result<Arc<Auth>, AuthStartError> {
        Self::build_with_registry(settings, pg, identity, Arc::new(Registry::new())).await
    }

    /// [`Auth::build`] with its metrics registered into `registry` (the server's).
    pub async fn build_with_registry(
        settings: AuthSettings,
        pg: tokio_postgres::Config,
        identity: Arc<dyn Identity>,
        registry: Arc<Registry>,
    ) -> Result<Arc<Auth>, AuthStartError> {
        let anchors = match &settings.trust_anchors_dir {
            Some(dir) => TrustAnchors::from_dir(dir)?,
            None => TrustAnchors::shipped()?,
        };
        let db = AuthDb::connect(pg)?;
        let wrap = match &settings.key_encryption_key_file {
            Some(path) => Some(keywrap::KeyWrap::from_file(path).map_err(keys::KeyError::from)?),
            None => {
                tracing::warn!(
                    "MYKEY_KEY_ENCRYPTION_KEY_FILE is not set: token-signing keys are stored unencrypted in the database"
                );
                None
            }
        };
        let challenges = challenge_key(&db, &settings).await?;
        let keys = KeyRing::new(wrap);
        let rsa = operator_rsa_key(&settings).map_err(AuthStartError::Config)?;
        keys.init(&db, settings.id_token_alg, rsa.as_deref())
            .await?;
        let metrics = Metrics::register(&registry)?;
        let audit = AuditSink::spawn(db.clone(), metrics.clone());
        let claims = claims::ChallengeClaims::spawn(db.clone());
        let limiter = RateLimiter::new(settings.rate_limit);
        let auth = Arc::new(Auth {
            settings,
            anchors,
            crls: CrlSet::default(),
            crl_skipped: std::sync::Mutex::default(),
            challenges,
            claims,
            keys,
            db,
            audit,
            metrics,
            registry,
            limiter,
            unknown_rps: dashmap::DashMap::new(),
            identity,
            verified_tokens: dashmap::DashMap::new(),
            verified_certs: dashmap::DashMap::new(),
        });
        auth.reload_crls().await?;
        tracing::info!(
            trust_anchors = auth.anchors.len(),
            crls = auth.crls.len(),
            "citizen-card login ready"
        );
        Ok(auth)
    }

    /// Periodic upkeep on the current runtime; stops when the last `Arc<Auth>` is gone.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_secs(MAINTENANCE_INTERVAL_SECS));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(auth) = weak.upgrade() else { return };
                let now = auth.settings.clock.now_secs();
                let now_ms = auth.settings.clock.now_ms();
                auth.limiter.sweep(now_ms);
                auth.unknown_rps.retain(|_, until| *until > now_ms);
                if let Err(e) = auth
                    .db
                    .prune_challenges(now_ms - challenge::CLAIM_PRUNE_MARGIN_MS)
                    .await
                {
                    tracing::warn!("used challenge pruning failed: {e}");
                }
                if let Err(e) = auth.keys.reload(&auth.db).await {
                    tracing::warn!("signing key reload failed: {e}");
                }
                if let Err(e) = auth.reload_crls().await {
                    tracing::warn!("CRL reload failed: {e}");
                }
                if let Err(e) = auth.db.prune_jti(now - ASSERTION_LEEWAY_SECS).await {
                    tracing::warn!("assertion id pruning failed: {e}");
                }
            }
        });
    }

    /// Rotates the token-signing key (operator endpoint and CLI): new tokens use a new key,
    /// the old one stays published until its last token has expired. Returns the new kid.
    pub async fn rotate_signing_key(&self) -> Result<String, Problem> {
        let rsa = operator_rsa_key(&self.settings).map_err(Problem::unavailable)?;
        self.keys
            .rotate(&self.db, self.settings.id_token_alg, rsa.as_deref())
            .await
            .map_err(Problem::unavailable)
    }

    /// Records one attempt of an authenticated caller (or an accepted one) in `auth_audit`;
    /// true once committed. `rp_id` must be a validated id (or [`db::INVALID_VALUE`]); every
    /// string is bounded and cleaned by [`db::audit_text`] anyway.
    pub async fn audit(
        &self,
        ctx: &Ctx,
        endpoint: &'static str,
        rp_id: Option<&str>,
        outcome: &str,
        cert: Option<String>,
    ) -> bool {
        self.audit
            .record(AuditEntry::Record(AuditRecord {
                occurred_at: self.settings.clock.now(),
                rp_id: rp_id.map(db::audit_text),
                endpoint,
                outcome: db::audit_text(outcome),
                cert_sha256: cert.as_deref().map(db::audit_text),
                correlation_id: ctx.correlation_id,
                client_addr: ctx.client_addr.as_deref().map(db::audit_text),
            }))
            .await
    }

    /// Before any work on an endpoint open to unauthenticated callers: 429 when the caller's
    /// address has failed too often (see [`ratelimit`]). Costs no database work.
    pub fn admit(&self, ctx: &Ctx, endpoint: &'static str) -> Result<(), Problem> {
        self.limiter
            .check(ctx.peer, self.settings.clock.now_ms())
            .map_err(|l| {
                self.metrics
                    .rate_limited
                    .with_label_values(&[endpoint])
                    .inc();
                Problem::coded("RATE_LIMITED", "Too many failed attempts from this address")
                    .with_retry_after(l.retry_after_secs)
            })
    }

    /// A refusal of a caller that did not authenticate: added to its minute's counter in
    /// `auth_refusal_count` (not a row of its own: nobody grows the audit trail without
    /// credentials) and charged to its address's rate limit. True once committed.
    pub async fn refuse_unauthenticated(
        &self,
        ctx: &Ctx,
        endpoint: &'static str,
        outcome: &str,
    ) -> bool {
        use chrono::DurationRound;
        let now = self.settings.clock.now();
        if !self.limiter.charge(ctx.peer, now.timestamp_millis()) {
            self.metrics.rate_limiter_full.inc();
        }
        let minute = now
            .duration_trunc(chrono::TimeDelta::minutes(1))
            .unwrap_or(now);
        self.audit
            .record(AuditEntry::Refusal(RefusalKey {
                minute,
                endpoint,
                outcome: db::audit_text(outcome),
            }))
            .await
    }

    /// Audits the outcome of an attempt; a success that cannot be audited is refused.
    async fn finish<T>(
        &self,
        ctx: &Ctx,
        endpoint: &'static str,
        rp_id: Option<&str>,
        cert: Option<String>,
        result: Result<T, Problem>,
    ) -> Result<T, Problem> {
        let outcome = match &result {
            Ok(_) => "OK",
            Err(p) => p.code.as_str(),
        };
        let recorded = self.audit(ctx, endpoint, rp_id, outcome, cert).await;
        match result {
            Ok(_) if !recorded => Err(Problem::unavailable("audit trail unavailable")),
            r => r,
        }
    }

    // ---- relying-party authentication ----

    /// POST /v1/oauth/token.
    pub async fn token(&self, form: TokenForm, ctx: &Ctx) -> Result<TokenResponse, Problem> {
        let mut rp_seen: Option<String> = None;
        let result = self.token_inner(form, &mut rp_seen).await;
        match &result {
            Ok(_) => self.metrics.tokens_issued.inc(),
            Err(_) => self.metrics.token_refusals.inc(),
        }
        match (&result, &rp_seen) {
            // Nobody proved who they are: counted, not recorded one by one.
            (Err(p), None) => {
                self.refuse_unauthenticated(ctx, "oauth.token", &p.code)
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
    ) -> Result<TokenResponse, Problem> {
        if form.grant_type.as_deref() != Some("client_credentials") {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED_GRANT_TYPE",
                "Unsupported grant type",
            )
            .with_detail("grant_type must be client_credentials"));
        }
        if form.client_assertion_type.as_deref() != Some(CLIENT_ASSERTION_TYPE) {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "ASSERTION_TYPE_UNSUPPORTED",
                "Unsupported client assertion type",
            )
            .with_detail(format!(
                "client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
            )));
        }
        let raw = form.client_assertion.as_deref().unwrap_or_default();
        let jws = Parsed::parse(raw).map_err(|e| match e {
            JwsError::Algorithm => {
                unauthorized("ASSERTION_ALGORITHM", "alg must be ES256 or RS256")
            }
            JwsError::Critical => problem(
                StatusCode::BAD_REQUEST,
                "ASSERTION_MALFORMED",
                "Malformed client assertion",
            )
            .with_detail(JwsError::Critical.to_string()),
            _ => problem(
                StatusCode::BAD_REQUEST,
                "ASSERTION_MALFORMED",
                "Malformed client assertion",
            ),
        })?;
        let claims: AssertionClaims = jws.claims().map_err(|_| {
            problem(
                StatusCode::BAD_REQUEST,
                "ASSERTION_MALFORMED",
                "Malformed client assertion",
            )
            .with_detail("iss, sub, aud, exp and jti are required")
        })?;
        if claims.iss != claims.sub || form.client_id.as_deref().is_some_and(|c| c != claims.iss) {
            return Err(unauthorized(
                "ASSERTION_ISSUER_MISMATCH",
                "iss, sub (and client_id) must all be the client id",
            ));
        }
        let rp_id = claims.iss.clone();
        let rp = self.active_rp(&rp_id).await?;
        let key = VerifyKey::from_jwk(&rp.jwk)
            .map_err(|e| unauthorized("CLIENT_KEY_UNUSABLE", e.to_string()))?;
        jws.verify(&key).map_err(|_| {
            unauthorized(
                "ASSERTION_SIGNATURE_INVALID",
                "signature does not verify with the registered key",
            )
        })?;
        // From here on the caller is this RP: its refusals are audited as its attempts.
        *rp_seen = Some(rp_id.clone());
        // Claims are checked only after the signature: nothing unsigned reaches the jti table.
        let now = self.settings.clock.now_secs();
        let endpoint = self.settings.token_endpoint();
        if !claims.aud.only(&[&endpoint, &self.settings.issuer]) {
            return Err(unauthorized(
                "ASSERTION_AUDIENCE",
                format!(
                    "aud must be exactly {endpoint} or {} (no other audiences)",
                    self.settings.issuer
                ),
            ));
        }
        let keep_jti_until = check_assertion_times(now, claims.exp, claims.nbf)?;
        // Every value is validated before it reaches PostgreSQL (whose text refuses NUL).
        if claims.jti.chars().any(char::is_control) {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "ASSERTION_MALFORMED",
                "Malformed client assertion",
            )
            .with_detail("jti must not contain control characters"));
        }
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(unauthorized(
                "ASSERTION_JTI",
                format!("jti must be 1..={MAX_JTI_LEN} characters"),
            ));
        }
        let fresh = self
            .db
            .claim_jti(&rp_id, &claims.jti, keep_jti_until)
            .await
            .map_err(Problem::unavailable)?;
        if !fresh {
            return Err(unauthorized(
                "ASSERTION_REPLAYED",
                "this jti was already used",
            ));
        }
        let key = self.keys.active().map_err(Problem::unavailable)?;
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
            .map_err(|_| Problem::internal())?;
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: ACCESS_TOKEN_TTL_SECS,
        })
    }

    /// The RP, if it exists and is active. An id that is no valid RP id, or that the write
    /// model recently did not know, is answered without asking it (no event-store read).
    async fn active_rp(&self, rp_id: &str) -> Result<identity::RelyingParty, Problem> {
        let unknown = || unauthorized("CLIENT_UNKNOWN", "no such relying party");
        if mykey_domain::RelyingPartyId::parse(rp_id).is_err() {
            return Err(unknown());
        }
        let now_ms = self.settings.clock.now_ms();
        if self
            .unknown_rps
            .get(rp_id)
            .is_some_and(|until| *until > now_ms)
        {
            return Err(unknown());
        }
        self.metrics.rp_lookups.inc();
        let found = self
            .identity
            .relying_party(rp_id)
            .await
            .map_err(identity_problem)?;
        let Some(rp) = found else {
            if self.unknown_rps.len() < MAX_NEGATIVE_RPS {
                self.unknown_rps
                    .insert(rp_id.to_owned(), now_ms + NEGATIVE_RP_CACHE_MS);
            }
            return Err(unknown());
        };
        match rp.status {
            RpStatus::Active => Ok(rp),
            RpStatus::Suspended => Err(problem(
                StatusCode::FORBIDDEN,
                "CLIENT_SUSPENDED",
                "Relying party suspended",
            )),
            RpStatus::Retired => Err(problem(
                StatusCode::FORBIDDEN,
                "CLIENT_RETIRED",
                "Relying party retired",
            )),
        }
    }

    /// Forgets that `rp_id` was unknown (it was just registered here).
    pub fn forget_unknown_rp(&self, rp_id: &str) {
        self.unknown_rps.remove(rp_id);
    }

    /// Counts and audits a refused attempt on `endpoint`: as the RP's attempt when one is
    /// authenticated, else on the unauthenticated refusal counters.
    pub async fn refuse(
        &self,
        ctx: &Ctx,
        endpoint: &'static str,
        rp_id: Option<&str>,
        p: &Problem,
    ) {
        self.metrics.login_refusals.inc();
        match rp_id {
            Some(_) => {
                self.audit(ctx, endpoint, rp_id, &p.code, None).await;
            }
            None => {
                self.refuse_unauthenticated(ctx, endpoint, &p.code).await;
            }
        }
    }

    /// [`Auth::authenticate`], auditing a refusal as an attempt on `endpoint`.
    pub async fn authenticate_for(
        &self,
        authorization: Option<&str>,
        endpoint: &'static str,
        ctx: &Ctx,
    ) -> Result<String, Problem> {
        let result = self.authenticate(authorization).await;
        if let Err(p) = &result {
            self.refuse(ctx, endpoint, None, p).await;
        }
        result
    }

    /// Checks a bearer access token; returns the RP id. The RP must still be active.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<String, Problem> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "ACCESS_TOKEN_MISSING",
                    "Authorization: Bearer <access token> required",
                )
            })?;
        let invalid = || unauthorized("ACCESS_TOKEN_INVALID", "access token invalid or expired");
        let now = self.settings.clock.now_secs();
        if let Some(hit) = self.verified_tokens.get(token).map(|e| e.clone()) {
            if now > hit.1 {
                return Err(invalid());
            }
            self.active_rp(&hit.0).await?;
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
        self.active_rp(&claims.sub).await?;
        if self.verified_tokens.len() >= MAX_VERIFIED_TOKENS {
            self.verified_tokens.clear();
        }
        self.verified_tokens
            .insert(token.to_owned(), (claims.sub.clone(), claims.exp));
        Ok(claims.sub)
    }

    // ---- challenges and logins ----

    /// POST /v1/auth/challenges. Stateless (see [`challenge`]): no storage, never refused
    /// once the RP is authenticated, and not an attempt to audit.
    pub fn challenge(&self, rp_id: &str) -> ChallengeResponse {
        let c = self.challenges.issue(rp_id, self.settings.clock.now_ms());
        ChallengeResponse {
            challenge_id: c.token,
            nonce: challenge::b64(&c.nonce),
            expires_at: rfc3339(c.expires_at_ms, true),
        }
    }

    fn decode_certificate(&self, b64: &str) -> Result<Vec<u8>, Problem> {
        // Size before decoding: base64 is 4/3 of the DER.
        if b64.len() > jpki::MAX_CERTIFICATE_BYTES * 4 / 3 + 8 {
            return Err(cert_problem(&CertError::TooLarge));
        }
        b64_std(b64).ok_or_else(|| cert_problem(&CertError::Malformed("not base64".into())))
    }

    /// Certificate checks shared by both logins: path, time, profile, revocation.
    fn check_certificate(
        &self,
        der: &[u8],
        fingerprint: &str,
    ) -> Result<VerifiedCertificate, Problem> {
        let now = self.settings.clock.now_secs();
        let cached = self.verified_certs.get(fingerprint).map(|c| c.clone());
        let cert = match cached {
            Some(c) => {
                c.check_time(now).map_err(|e| cert_problem(&e))?;
                c
            }
            None => {
                let c = self
                    .anchors
                    .verify(der, now)
                    .map_err(|e| cert_problem(&e))?;
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
            .map_err(|e| {
                if e != RevocationError::Revoked {
                    self.metrics.crl_stale_refusals.inc();
                    tracing::error!(ca = %cert.anchor.label, "login refused: {e} (alert)");
                }
                revocation_problem(&e)
            })?;
        Ok(cert)
    }

    fn id_token(
        &self,
        rp_id: &str,
        ppid: &str,
        acr: &'static str,
    ) -> Result<(String, i64), Problem> {
        let key = self.keys.active().map_err(Problem::unavailable)?;
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
            .map_err(|_| Problem::internal())?;
        Ok((token, exp))
    }

    /// POST /v1/auth/login (PIN).
    pub async fn pin_login(
        &self,
        rp_id: &str,
        body: LoginBody,
        ctx: &Ctx,
    ) -> Result<LoginResponse, Problem> {
        let mut fingerprint = None;
        let result = self
            .pin_login_inner(rp_id, body, ctx, &mut fingerprint)
            .await;
        self.count(&result, &self.metrics.pin_logins);
        self.finish(ctx, "auth.login", Some(rp_id), fingerprint, result)
            .await
    }

    async fn pin_login_inner(
        &self,
        rp_id: &str,
        body: LoginBody,
        ctx: &Ctx,
        fingerprint: &mut Option<String>,
    ) -> Result<LoginResponse, Problem> {
        let der = self.decode_certificate(&body.certificate)?;
        let fp = jpki::fingerprint(&der);
        *fingerprint = Some(fp.clone());
        let signature = b64_std(&body.signature)
            .filter(|s| !s.is_empty() && s.len() <= MAX_SIGNATURE_BYTES)
            .ok_or_else(|| {
                problem(
                    StatusCode::BAD_REQUEST,
                    "SIGNATURE_MALFORMED",
                    "Malformed signature",
                )
            })?;
        let opened = self
            .challenges
            .open(&body.challenge_id, rp_id, self.settings.clock.now_ms())
            .map_err(challenge_problem)?;
        // Consumed before the certificate is checked: a failed attempt burns its challenge.
        // The claim is the one database write of a challenge: any instance, exactly once.
        let fresh = self
            .claims
            .claim(opened.id, opened.expires_at_ms)
            .await
            .map_err(Problem::unavailable)?;
        if !fresh {
            return Err(challenge_problem(ChallengeError::Used));
        }
        let nonce = opened.nonce;
        let cert = self.check_certificate(&der, &fp)?;
        if !cert.verify_signature(&nonce, &signature) {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "SIGNATURE_INVALID",
                "Signature does not verify",
            )
            .with_detail(
                "expected RSASSA-PKCS1-v1_5 with SHA-256 over the challenge nonce bytes",
            ));
        }
        let actor = Actor {
            actor_id: rp_id.to_owned(),
            role: "relying_party".to_owned(),
            correlation_id: ctx.correlation_id,
            client_addr: ctx.client_addr.clone(),
        };
        let cert_ref = CertRef {
            issuer: cert.issuer.clone(),
            serial: cert.serial.clone(),
        };
        let ppid = self
            .identity
            .register_login(&cert_ref, rp_id, &actor)
            .await
            .map_err(identity_problem)?;
        let (id_token, exp) = self.id_token(rp_id, &ppid, ACR_PIN)?;
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
        rp_id: &str,
        body: KazashiBody,
        ctx: &Ctx,
    ) -> Result<LoginResponse, Problem> {
        let mut fingerprint = None;
        let result = async {
            let der = self.decode_certificate(&body.certificate)?;
            let fp = jpki::fingerprint(&der);
            fingerprint = Some(fp.clone());
            let cert = self.check_certificate(&der, &fp)?;
            let cert_ref = CertRef {
                issuer: cert.issuer.clone(),
                serial: cert.serial.clone(),
            };
            let ppid = self
                .identity
                .active_ppid(&cert_ref, rp_id)
                .await
                .map_err(identity_problem)?
                .ok_or_else(|| {
                    problem(StatusCode::NOT_FOUND, "NOT_REGISTERED", "Not registered")
                        .with_detail("register with a PIN login for this relying party first")
                })?;
            let (id_token, exp) = self.id_token(rp_id, &ppid, ACR_KAZASHI)?;
            Ok(LoginResponse {
                id_token,
                ppid,
                acr: ACR_KAZASHI,
                expires_at: rfc3339(exp, false),
            })
        }
        .await;
        self.count(&result, &self.metrics.kazashi_logins);
        self.finish(ctx, "auth.kazashi", Some(rp_id), fingerprint, result)
            .await
    }

    fn count<T>(&self, result: &Result<T, Problem>, ok: &prometheus::IntCounter) {
        match result {
            Ok(_) => ok.inc(),
            Err(_) => self.metrics.login_refusals.inc(),
        }
    }
}

/// The challenge MAC key shared through the database, sealed under the key-encryption key
/// when one is configured.
async fn challenge_key(db: &AuthDb, settings: &AuthSettings) -> Result<Challenges, AuthStartError> {
    use ring::rand::SecureRandom;
    let wrap = match &settings.key_encryption_key_file {
        Some(path) => Some(keywrap::KeyWrap::from_file(path).map_err(keys::KeyError::from)?),
        None => None,
    };
    let mut secret = [0u8; challenge::CHALLENGE_KEY_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| AuthStartError::Config("no randomness for the challenge key".into()))?;
    let candidate = match &wrap {
        Some(w) => w
            .seal(CHALLENGE_KEY_LABEL, &secret)
            .map_err(keys::KeyError::from)?,
        None => secret.to_vec(),
    };
    let stored = db.challenge_secret(&candidate).await?;
    let secret =
        keywrap::open(wrap.as_ref(), CHALLENGE_KEY_LABEL, &stored).map_err(keys::KeyError::from)?;
    if secret.len() != challenge::CHALLENGE_KEY_BYTES {
        return Err(AuthStartError::Config(
            "stored challenge key has the wrong length".into(),
        ));
    }
    Ok(Challenges::new(&secret))
}

/// The operator-supplied RSA key new RS256 signing keys are made from (ring cannot generate
/// RSA keys); `None` for ES256.
fn operator_rsa_key(settings: &AuthSettings) -> Result<Option<Vec<u8>>, String> {
    match (settings.id_token_alg, &settings.rsa_signing_key) {
        (jws::Alg::RS256, Some(path)) => read_pkcs8_pem(path).map(Some),
        _ => Ok(None),
    }
}

/// Reads the DER of the first `PRIVATE KEY` block of a PEM file.
pub fn read_pkcs8_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    jpki::pem_blocks(&text, "PRIVATE KEY")?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: no PKCS#8 PRIVATE KEY block", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertion_time_arithmetic_never_overflows() {
        let now = 1_700_000_000;
        let code = |r: Result<i64, Problem>| r.map_err(|p| p.code);
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
