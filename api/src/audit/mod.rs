//! Signed checkpoints of the event log, for auditors (issue 12).
//!
//! The server holds an Ed25519 checkpoint key in `audit_checkpoint_key` (made on first start,
//! sealed with `MYKEY_KEY_ENCRYPTION_KEY_FILE` like the token-signing keys) and signs the
//! log's head — global position, the hash at that position, the time — as a C2SP signed note
//! ([`mykey_store::checkpoint`]) every `MYKEY_CHECKPOINT_INTERVAL_SECS` (when the log grew)
//! and on demand (`POST /v1/audit/checkpoints`, `mykey-server sign-checkpoint`). Checkpoints
//! are kept in the append-only `audit_checkpoint` table and served to auditors with every
//! public key that ever signed ([`routes`]). A saved checkpoint proves that a later log is an
//! extension of the one it signed: `mykey-replay verify --checkpoint` checks it.
//!
//! Rotation (`mykey-server rotate-checkpoint-key`) appends a new key; the old one stays listed
//! (valid until the next key's creation), so every old checkpoint still verifies.

pub mod routes;

use crate::auth::keywrap::{self, KeyWrap};
use crate::config::ConfigError;
use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Pool;
use mykey_schemas::{Hash, GENESIS_HASH};
use mykey_store::checkpoint::{self, Checkpoint, VerifierKey};
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Default `MYKEY_CHECKPOINT_INTERVAL_SECS`: hourly. An auditor who saves one checkpoint a day
/// pins the log to within the hour; signing costs one query and one row.
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 3_600;

/// Shortest interval accepted (0 disables periodic signing).
pub const MIN_CHECKPOINT_INTERVAL_SECS: u64 = 10;

/// Connections for the checkpoint tables: signing and listing are rare.
const POOL_SIZE: usize = 2;

/// How long a request waits for a connection before answering 503.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// Serialises checkpoint inserts so their ids commit in order.
const CHECKPOINT_LOCK: i64 = 0x6d79_6b65_795f_6370; // "mykey_cp"
/// Advisory lock (transaction scope) so two instances starting at once make one key.
const KEY_LOCK: i64 = 0x6d79_6b65_795f_636b; // "mykey_ck"

#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// `MYKEY_CHECKPOINT_INTERVAL_SECS`; 0 = only on demand.
    pub checkpoint_interval_secs: u64,
    /// `MYKEY_CHECKPOINT_ORIGIN`: the checkpoints' origin line and key name; default the
    /// issuer's host and port followed by `/log` (e.g. `mykey.example/log`).
    pub checkpoint_origin: String,
}

impl AuditSettings {
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        issuer: &str,
    ) -> Result<AuditSettings, ConfigError> {
        let invalid = |name: &'static str, value: String, reason: &str| ConfigError::Invalid {
            name,
            value,
            reason: reason.to_owned(),
        };
        let checkpoint_interval_secs = match get("MYKEY_CHECKPOINT_INTERVAL_SECS") {
            None => DEFAULT_CHECKPOINT_INTERVAL_SECS,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|s| *s == 0 || (MIN_CHECKPOINT_INTERVAL_SECS..=86_400 * 7).contains(s))
                .ok_or_else(|| {
                    invalid(
                        "MYKEY_CHECKPOINT_INTERVAL_SECS",
                        v.clone(),
                        "0 (on demand only) or 10..=604800 seconds",
                    )
                })?,
        };
        let default_origin = || {
            let host = issuer
                .split_once("://")
                .map_or(issuer, |(_, rest)| rest)
                .trim_end_matches('/');
            format!("{host}/log")
        };
        let checkpoint_origin = get("MYKEY_CHECKPOINT_ORIGIN")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(default_origin);
        if VerifierKey::new(&checkpoint_origin, [0; 32]).is_err() {
            return Err(invalid(
                "MYKEY_CHECKPOINT_ORIGIN",
                checkpoint_origin,
                "non-empty, without spaces or '+'",
            ));
        }
        Ok(AuditSettings {
            checkpoint_interval_secs,
            checkpoint_origin,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("checkpoint database: {0}")]
    Db(String),
    #[error("checkpoint key: {0}")]
    Key(String),
}

fn db_err(e: impl std::fmt::Display) -> AuditError {
    AuditError::Db(e.to_string())
}

/// A stored checkpoint as served.
#[derive(Debug, Clone, Serialize)]
pub struct StoredCheckpoint {
    pub id: String,
    pub size: u64,
    /// Hex of the hash at `size` (the note carries it in base64).
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    pub key_id: String,
    /// The signed note, verbatim: what an auditor saves and later passes to
    /// `mykey-replay verify --checkpoint`.
    pub note: String,
}

/// A checkpoint public key as served.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedKey {
    pub name: String,
    pub key_id: String,
    /// `<name>+<key id>+<base64(0x01 || key)>`, what `mykey-replay --public-key` takes.
    pub verifier_key: String,
    pub valid_from: DateTime<Utc>,
    /// When the next key replaced it; `None` for the active key.
    pub valid_until: Option<DateTime<Utc>>,
}

/// Signs and stores checkpoints.
pub struct CheckpointSigner {
    pool: Pool,
    origin: String,
    wrap: Option<KeyWrap>,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The AAD a sealed checkpoint key is bound to (a sealed key copied to another row fails).
fn seal_id(name: &str, key_id: &str) -> String {
    format!("checkpoint:{name}+{key_id}")
}

impl CheckpointSigner {
    /// Connects and makes the first key for the origin if there is none.
    pub async fn start(
        pg: tokio_postgres::Config,
        origin: String,
        kek_file: Option<&std::path::Path>,
    ) -> Result<Arc<CheckpointSigner>, AuditError> {
        let wrap = kek_file
            .map(KeyWrap::from_file)
            .transpose()
            .map_err(|e| AuditError::Key(e.to_string()))?;
        let pool = mykey_store::pg::pool(pg, POOL_SIZE, POOL_WAIT, POOL_WAIT).map_err(db_err)?;
        let signer = Arc::new(CheckpointSigner { pool, origin, wrap });
        signer.ensure_key(false).await?;
        // Like the token-signing keys: an instance that cannot open the stored key refuses to
        // start rather than failing at its first checkpoint.
        signer.active_key().await?;
        Ok(signer)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Adds a key for the origin when there is none (or always, to rotate). Returns its id.
    async fn ensure_key(&self, rotate: bool) -> Result<String, AuditError> {
        let mut c = self.pool.get().await.map_err(db_err)?;
        let tx = c.transaction().await.map_err(db_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK])
            .await
            .map_err(db_err)?;
        if !rotate {
            let existing = tx
                .query_opt(
                    "SELECT key_id FROM audit_checkpoint_key WHERE name = $1 \
                     ORDER BY id DESC LIMIT 1",
                    &[&self.origin],
                )
                .await
                .map_err(db_err)?;
            if let Some(row) = existing {
                return row.try_get(0).map_err(db_err);
            }
        }
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| AuditError::Key("no randomness".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| AuditError::Key(e.to_string()))?;
        let vkey = checkpoint::verifier_key(&self.origin, &pair)
            .map_err(|e| AuditError::Key(e.to_string()))?;
        let key_id = vkey.id_hex();
        let stored = match &self.wrap {
            Some(w) => w
                .seal(&seal_id(&self.origin, &key_id), pkcs8.as_ref())
                .map_err(|e| AuditError::Key(e.to_string()))?,
            None => {
                tracing::warn!(
                    "MYKEY_KEY_ENCRYPTION_KEY_FILE is not set: the checkpoint key is stored unencrypted"
                );
                pkcs8.as_ref().to_vec()
            }
        };
        tx.execute(
            "INSERT INTO audit_checkpoint_key (name, key_id, public_key, private_pkcs8) \
             VALUES ($1, $2, $3, $4)",
            &[&self.origin, &key_id, &vkey.public_key.as_slice(), &stored],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        tracing::info!(origin = %self.origin, key_id = %key_id, "checkpoint key created");
        Ok(key_id)
    }

    /// Appends a new checkpoint key; later checkpoints are signed with it. Returns its key id.
    pub async fn rotate(&self) -> Result<String, AuditError> {
        self.ensure_key(true).await
    }

    /// The newest key of the origin, opened: (row id, key id, key pair).
    async fn active_key(&self) -> Result<(i64, String, Ed25519KeyPair), AuditError> {
        let c = self.pool.get().await.map_err(db_err)?;
        let key = c
            .query_one(
                "SELECT id, key_id, private_pkcs8 FROM audit_checkpoint_key WHERE name = $1 \
                 ORDER BY id DESC LIMIT 1",
                &[&self.origin],
            )
            .await
            .map_err(db_err)?;
        let serial: i64 = key.try_get(0).map_err(db_err)?;
        let key_id: String = key.try_get(1).map_err(db_err)?;
        let stored: Vec<u8> = key.try_get(2).map_err(db_err)?;
        let pkcs8 = keywrap::open(self.wrap.as_ref(), &seal_id(&self.origin, &key_id), &stored)
            .map_err(|e| AuditError::Key(e.to_string()))?;
        let pair =
            Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| AuditError::Key(e.to_string()))?;
        Ok((serial, key_id, pair))
    }

    /// Signs the log's current head and stores the note.
    pub async fn sign_now(&self) -> Result<StoredCheckpoint, AuditError> {
        let (serial, key_id, pair) = self.active_key().await?;
        let mut c = self.pool.get().await.map_err(db_err)?;
        // Positions become visible in order (store/src/pg/writer.rs), so the highest visible
        // position is a complete prefix.
        let head = c
            .query_opt(
                "SELECT global_position, hash FROM events ORDER BY global_position DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(db_err)?;
        let (size, hash) = match head {
            None => (0u64, GENESIS_HASH),
            Some(r) => {
                let p: i64 = r.try_get(0).map_err(db_err)?;
                let h: &[u8] = r.try_get(1).map_err(db_err)?;
                let hash = Hash::from_slice(h)
                    .ok_or_else(|| AuditError::Db(format!("hash at {p} is not 32 bytes")))?;
                (u64::try_from(p).unwrap_or(0), hash)
            }
        };
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            hash,
            time: Utc::now().trunc_subsecs(0),
        };
        let note = checkpoint::sign(&cp, &pair).map_err(|e| AuditError::Key(e.to_string()))?;
        let size_db = i64::try_from(size).unwrap_or(i64::MAX);
        // Checkpoint ids are a bigserial and readers page by id: the id is taken and committed
        // under one lock, so ids become visible in order and no reader's cursor skips a row
        // that commits later with a smaller id (the event log's reason, ARCHITECTURE.md).
        let tx = c.transaction().await.map_err(db_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHECKPOINT_LOCK])
            .await
            .map_err(db_err)?;
        let row = tx
            .query_one(
                "INSERT INTO audit_checkpoint (size, hash, signed_at, key_serial, note) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&size_db, &hash.0.as_slice(), &cp.time, &serial, &note],
            )
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let id: i64 = row.try_get(0).map_err(db_err)?;
        tracing::info!(size, %hash, "checkpoint signed");
        Ok(StoredCheckpoint {
            id: id.to_string(),
            size,
            hash: hash.to_hex(),
            signed_at: cp.time,
            key_id,
            note,
        })
    }

    /// Signs when the log grew since the newest checkpoint; `None` when it did not.
    pub async fn sign_if_grown(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        let c = self.pool.get().await.map_err(db_err)?;
        let row = c
            .query_one(
                "SELECT (SELECT coalesce(max(global_position), 0) FROM events), \
                        (SELECT coalesce(max(size), -1) FROM audit_checkpoint)",
                &[],
            )
            .await
            .map_err(db_err)?;
        let head: i64 = row.try_get(0).map_err(db_err)?;
        let signed: i64 = row.try_get(1).map_err(db_err)?;
        drop(c);
        // An empty log has nothing worth signing.
        if head == 0 || head <= signed {
            return Ok(None);
        }
        self.sign_now().await.map(Some)
    }

    /// Signs every `interval` while the log grows; stops when the last `Arc` is gone.
    pub fn spawn_periodic(self: &Arc<Self>, interval_secs: u64) {
        if interval_secs == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(interval_secs));
            loop {
                tick.tick().await;
                let Some(signer) = weak.upgrade() else { return };
                if let Err(e) = signer.sign_if_grown().await {
                    tracing::warn!("periodic checkpoint failed: {e}");
                }
            }
        });
    }

    /// Newest first; `before` is the id the previous page ended at.
    pub async fn list(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<StoredCheckpoint>, Option<i64>), AuditError> {
        let c = self.pool.get().await.map_err(db_err)?;
        let rows = c
            .query(
                "SELECT c.id, c.size, c.hash, c.signed_at, k.key_id, c.note \
                 FROM audit_checkpoint c JOIN audit_checkpoint_key k ON k.id = c.key_serial \
                 WHERE c.id < $1 ORDER BY c.id DESC LIMIT $2",
                &[&before.unwrap_or(i64::MAX), &(limit + 1)],
            )
            .await
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows.iter().take(usize::try_from(limit).unwrap_or(0)) {
            let id: i64 = r.try_get(0).map_err(db_err)?;
            let size: i64 = r.try_get(1).map_err(db_err)?;
            let hash: &[u8] = r.try_get(2).map_err(db_err)?;
            out.push((
                id,
                StoredCheckpoint {
                    id: id.to_string(),
                    size: u64::try_from(size).unwrap_or(0),
                    hash: hex::encode(hash),
                    signed_at: r.try_get(3).map_err(db_err)?,
                    key_id: r.try_get(4).map_err(db_err)?,
                    note: r.try_get(5).map_err(db_err)?,
                },
            ));
        }
        let more = rows.len() > out.len();
        let next = if more {
            out.last().map(|(id, _)| *id)
        } else {
            None
        };
        Ok((out.into_iter().map(|(_, c)| c).collect(), next))
    }

    /// Every key that ever signed, oldest first, with its validity.
    pub async fn keys(&self) -> Result<Vec<PublishedKey>, AuditError> {
        let c = self.pool.get().await.map_err(db_err)?;
        let rows = c
            .query(
                "SELECT name, key_id, public_key, created_at, \
                        lead(created_at) OVER (PARTITION BY name ORDER BY id) \
                 FROM audit_checkpoint_key ORDER BY id",
                &[],
            )
            .await
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let name: String = r.try_get(0).map_err(db_err)?;
            let public: &[u8] = r.try_get(2).map_err(db_err)?;
            let public: [u8; 32] = public
                .try_into()
                .map_err(|_| AuditError::Db("public key is not 32 bytes".into()))?;
            let vkey =
                VerifierKey::new(&name, public).map_err(|e| AuditError::Key(e.to_string()))?;
            out.push(PublishedKey {
                key_id: r.try_get(1).map_err(db_err)?,
                verifier_key: vkey.to_string(),
                name,
                valid_from: r.try_get(3).map_err(db_err)?,
                valid_until: r.try_get(4).map_err(db_err)?,
            });
        }
        Ok(out)
    }
}

/// `mykey-server sign-checkpoint` / `rotate-checkpoint-key`; `None` for other commands.
pub async fn run_cli(
    settings: &crate::config::Settings,
    pg: &tokio_postgres::Config,
    cmd: &str,
) -> Option<Result<serde_json::Value, Box<dyn std::error::Error>>> {
    if !matches!(cmd, "sign-checkpoint" | "rotate-checkpoint-key") {
        return None;
    }
    Some(
        async {
            // Connecting the store applies pending migrations (the tables may be new).
            let _store =
                mykey_store::pg::PgEventStore::connect(pg.clone(), Default::default()).await?;
            let signer = CheckpointSigner::start(
                pg.clone(),
                settings.audit.checkpoint_origin.clone(),
                settings.auth.key_encryption_key_file.as_deref(),
            )
            .await?;
            Ok(if cmd == "sign-checkpoint" {
                serde_json::to_value(signer.sign_now().await?)?
            } else {
                serde_json::json!({ "key_id": signer.rotate().await?, "keys": signer.keys().await? })
            })
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<AuditSettings, ConfigError> {
        AuditSettings::from_lookup(
            &|k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            },
            "https://mykey.example.jp",
        )
    }

    #[test]
    fn defaults_and_each_rejected_setting() {
        let s = settings(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.checkpoint_interval_secs, DEFAULT_CHECKPOINT_INTERVAL_SECS);
        assert_eq!(s.checkpoint_origin, "mykey.example.jp/log");
        let off = settings(&[("MYKEY_CHECKPOINT_INTERVAL_SECS", "0")]);
        assert_eq!(off.map(|s| s.checkpoint_interval_secs).ok(), Some(0));
        for (name, value) in [
            ("MYKEY_CHECKPOINT_INTERVAL_SECS", "5"),
            ("MYKEY_CHECKPOINT_INTERVAL_SECS", "hourly"),
            ("MYKEY_CHECKPOINT_INTERVAL_SECS", "99999999"),
            ("MYKEY_CHECKPOINT_ORIGIN", "has space/log"),
            ("MYKEY_CHECKPOINT_ORIGIN", "a+b"),
        ] {
            match settings(&[(name, value)]) {
                Err(ConfigError::Invalid { name: n, .. }) => assert_eq!(n, name, "{value}"),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }
}
