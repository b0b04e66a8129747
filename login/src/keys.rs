//! The platform's token-signing keys: one active key signs, retired keys stay in the JWKS
//! until every token they signed has expired.
//!
//! Persistence: the `auth_signing_key` table (not the var dir), so every instance behind the
//! balancer signs with and publishes the same keys, and keys survive restarts. Each instance
//! reloads the table every [`super::MAINTENANCE_INTERVAL_SECS`]. The private keys are sealed with the
//! key-encryption key when one is configured (see [`super::keywrap`]).

use super::db::{AuthDb, DbError};
use super::jws::{b64, Alg, JwsError, Signer, VerifyKey};
use super::keywrap::{KeyWrap, KeyWrapError};
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};

/// Lifetime of an access token issued to a relying party.
pub const ACCESS_TOKEN_TTL_SECS: i64 = 300;

/// Lifetime of an ID token.
pub const ID_TOKEN_TTL_SECS: i64 = 300;

/// A retired key stays published this long after retirement: the longest token lifetime,
/// plus one reload interval (another instance may still sign with it until it reloads),
/// plus clock-skew leeway.
pub const RETIRED_KEY_PUBLISHED_SECS: i64 =
    ID_TOKEN_TTL_SECS + super::MAINTENANCE_INTERVAL_SECS as i64 + 60;

#[derive(Debug)]
pub struct PlatformKey {
    pub kid: String,
    pub signer: Signer,
    pub public: VerifyKey,
    pub retired_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Jws(#[from] JwsError),
    #[error("no active signing key")]
    NoActiveKey,
    #[error(transparent)]
    Wrap(#[from] KeyWrapError),
}

/// `kid` = base64url of the first 12 bytes of SHA-256 of the public JWK members: stable for a
/// key, different across keys.
fn kid_for(public: &VerifyKey) -> String {
    let mut h = Sha256::new();
    match public {
        VerifyKey::Es256(p) => h.update(p),
        VerifyKey::Rs256 { n, e } => {
            h.update(n);
            h.update(e);
        }
    }
    b64(&h.finalize()[..12])
}

#[derive(Debug, Default)]
pub struct KeyRing {
    /// Newest first.
    keys: RwLock<Arc<Vec<Arc<PlatformKey>>>>,
    /// Seals private keys at rest; `None` stores them bare.
    wrap: Option<KeyWrap>,
}

impl KeyRing {
    pub fn new(wrap: Option<KeyWrap>) -> KeyRing {
        KeyRing {
            keys: RwLock::default(),
            wrap,
        }
    }

    fn snapshot(&self) -> Arc<Vec<Arc<PlatformKey>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key that signs new tokens: the newest unretired one.
    pub fn active(&self) -> Result<Arc<PlatformKey>, KeyError> {
        self.snapshot()
            .iter()
            .find(|k| k.retired_at.is_none())
            .cloned()
            .ok_or(KeyError::NoActiveKey)
    }

    pub fn find(&self, kid: &str) -> Option<Arc<PlatformKey>> {
        self.snapshot().iter().find(|k| k.kid == kid).cloned()
    }

    /// Whether a token signed by `key` may still be accepted / published at `now`.
    fn published(key: &PlatformKey, now: i64) -> bool {
        key.retired_at
            .is_none_or(|r| now <= r.saturating_add(RETIRED_KEY_PUBLISHED_SECS))
    }

    /// The JWKS document at `now`.
    pub fn jwks(&self, now: i64) -> serde_json::Value {
        let keys: Vec<_> = self
            .snapshot()
            .iter()
            .filter(|k| Self::published(k, now))
            .map(|k| k.public.to_jwk(&k.kid))
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// A published key by kid (for verifying our own access tokens).
    pub fn verifying(&self, kid: &str, now: i64) -> Option<Arc<PlatformKey>> {
        self.find(kid).filter(|k| Self::published(k, now))
    }

    /// Re-reads the table.
    pub async fn reload(&self, db: &AuthDb) -> Result<(), KeyError> {
        let stored = db.signing_keys().await?;
        let current = self.snapshot();
        let mut keys = Vec::with_capacity(stored.len());
        for s in stored {
            // Unchanged since the last reload: keep it rather than open and parse it again.
            if let Some(same) = current
                .iter()
                .find(|k| k.kid == s.kid && k.retired_at == s.retired_at)
            {
                keys.push(same.clone());
                continue;
            }
            let Some(alg) = Alg::parse(&s.alg) else {
                tracing::error!(kid = %s.kid, "signing key with unknown alg skipped");
                continue;
            };
            // A key that does not open is fatal, not skipped: skipping it would leave this
            // instance without an active key and make it mint one of its own.
            let pkcs8 = super::keywrap::open(self.wrap.as_ref(), &s.kid, &s.pkcs8)?;
            let signer = match Signer::from_pkcs8(alg, &pkcs8) {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(kid = %s.kid, "unusable signing key skipped: {e}");
                    continue;
                }
            };
            let public = signer.public();
            keys.push(Arc::new(PlatformKey {
                kid: s.kid,
                signer,
                public,
                retired_at: s.retired_at,
            }));
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Loads the keys; creates the first one (`alg`) when there is no active key.
    pub async fn init(
        &self,
        db: &AuthDb,
        alg: Alg,
        rsa_pkcs8: Option<&[u8]>,
    ) -> Result<(), KeyError> {
        self.reload(db).await?;
        if self.active().is_err() {
            self.create(db, alg, rsa_pkcs8, false).await?;
            self.reload(db).await?;
        }
        Ok(())
    }

    /// Rotates: a new key signs from now on; the old ones are retired (still published for
    /// [`RETIRED_KEY_PUBLISHED_SECS`]). Returns the new kid.
    pub async fn rotate(
        &self,
        db: &AuthDb,
        alg: Alg,
        rsa_pkcs8: Option<&[u8]>,
    ) -> Result<String, KeyError> {
        let kid = self.create(db, alg, rsa_pkcs8, true).await?;
        self.reload(db).await?;
        Ok(kid)
    }

    async fn create(
        &self,
        db: &AuthDb,
        alg: Alg,
        rsa_pkcs8: Option<&[u8]>,
        retire_others: bool,
    ) -> Result<String, KeyError> {
        let pkcs8 = match (alg, rsa_pkcs8) {
            (Alg::ES256, _) => Signer::generate_es256_pkcs8()?,
            (Alg::RS256, Some(k)) => k.to_vec(),
            (Alg::RS256, None) => {
                return Err(JwsError::Key(
                    "RS256 needs an RSA private key (PKCS#8) supplied by the operator".into(),
                )
                .into())
            }
        };
        let signer = Signer::from_pkcs8(alg, &pkcs8)?;
        let kid = kid_for(&signer.public());
        let stored = match &self.wrap {
            Some(w) => w.seal(&kid, &pkcs8)?,
            None => pkcs8,
        };
        db.insert_signing_key(&kid, alg.as_str(), &stored, retire_others)
            .await?;
        Ok(kid)
    }
}

/// Why a signing-key rotation failed (an operator or infrastructure matter, never the
/// caller's request).
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The operator-supplied RSA key could not be read.
    #[error("{0}")]
    OperatorKey(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

impl super::Auth {
    /// Rotates the token-signing key (operator endpoint and CLI): new tokens use a new key,
    /// the old one stays published until its last token has expired. Returns the new kid.
    pub async fn rotate_signing_key(&self) -> Result<String, RotationError> {
        let rsa = super::operator_rsa_key(&self.settings).map_err(RotationError::OperatorKey)?;
        Ok(self
            .keys
            .rotate(&self.db, self.settings.id_token_alg, rsa.as_deref())
            .await?)
    }
}
