//! Citizen-card login: relying-party authentication (RFC 7523 client assertions → access
//! token), challenges, PIN login and かざし login with JPKI user-authentication certificates,
//! ID tokens and their keys, CRLs and renewal links.
//!
//! This crate is the identity-provider logic without HTTP (no actix-web): it returns typed
//! errors with stable codes, and `mykey-api` (`api/src/auth/problem.rs`) is the one place they
//! become problem+json. So the replay tool, Kafka consumers, the CLI and benchmarks can use it.
//!
//! Promises:
//! - a refused attempt writes no business event (every check runs before the write model is
//!   asked to change anything);
//! - every attempt, accepted or refused, is in `auth_audit` before the response is sent;
//! - raw certificates, signatures and tokens are never logged: only the certificate's
//!   SHA-256 fingerprint is recorded.

mod audit;
pub mod cache;
pub mod challenge;
pub mod claims;
mod client;
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
mod login;
#[cfg(test)]
mod memory_identity;
pub mod metrics;
pub mod operators;
pub mod ratelimit;
pub mod read_model;
mod renewals;
#[cfg(test)]
mod verifier_tests;

use base64::Engine;
use challenge::{ChallengeError, Challenges};
use config::AuthSettings;
use crl::{CrlSet, RevocationError};
use db::{AuditEntry, AuditRecord, AuditSink, AuthDb, RefusalKey};
use identity::{Identity, IdentityError, RpStatus};
use jpki::{CertError, TrustAnchors, VerifiedCertificate};
use jws::{JwsError, Parsed, VerifyKey};
use keys::{KeyRing, ACCESS_TOKEN_TTL_SECS, ID_TOKEN_TTL_SECS};
use metrics::Metrics;
use prometheus::Registry;
use ratelimit::RateLimiter;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

pub use audit::{Refusal, AUDIT_UNAVAILABLE};
pub use client::{ClientAuthError, TokenForm, TokenResponse};
pub use crl_load::CrlLoadError;
pub use keys::RotationError;
pub use login::{ChallengeResponse, KazashiBody, LoginBody, LoginError, LoginResponse};
pub use renewals::RenewalImportError;

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
    /// The registry `metrics` are registered in (the server application's, in `mykey-api`).
    pub registry: Arc<Registry>,
    pub limiter: RateLimiter,
    /// Relying-party ids the write model did not know, until when (clock ms).
    unknown_rps: dashmap::DashMap<identity::RelyingPartyId, i64>,
    pub identity: Arc<dyn Identity>,
    /// Access tokens whose signature and claims already verified: token → (RP id, exp).
    /// A token is immutable, so its verification result is too; expiry and the RP's status
    /// are still checked on every request.
    verified_tokens: dashmap::DashMap<String, (identity::RelyingPartyId, i64)>,
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

fn b64_std(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
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
