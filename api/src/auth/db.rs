//! The auth tables (store/migrations/0100_auth.sql): audit trail, assertion replay guard,
//! signing keys, CRLs. A small pool of its own, separate from the event store's, so audit
//! writes never queue behind event appends.

use super::metrics::Metrics;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Connections for the auth tables.
pub const AUTH_POOL_SIZE: usize = 8;

/// How long a request waits for a connection before answering 503.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// Audit records waiting to be written. When full, requests wait (backpressure) rather than
/// drop records.
pub const AUDIT_QUEUE: usize = 10_000;

/// Records written in one INSERT: amortises the commit over concurrent logins (group commit).
pub const AUDIT_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
#[error("auth database: {0}")]
pub struct DbError(pub String);

fn db_err(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

#[derive(Clone)]
pub struct AuthDb {
    pool: Pool,
}

impl std::fmt::Debug for AuthDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthDb").finish_non_exhaustive()
    }
}

/// One audit row. Only a fingerprint of the certificate, never the certificate.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub rp_id: Option<String>,
    pub endpoint: &'static str,
    pub outcome: String,
    pub cert_sha256: Option<String>,
    pub correlation_id: Uuid,
    pub client_addr: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub pkcs8: Vec<u8>,
    pub retired_at: Option<i64>,
}

#[derive(Debug, Clone)]
/// A stored CRL without its (possibly large) DER.
pub struct StoredCrl {
    pub id: i64,
    pub ca_key_id: String,
    /// Seconds since the epoch.
    pub this_update: i64,
}

impl AuthDb {
    pub fn connect(pg: tokio_postgres::Config) -> Result<AuthDb, DbError> {
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(AUTH_POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(db_err)?;
        Ok(AuthDb { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(db_err)
    }

    /// Records `(rp, jti)` as used until `expires_at`. False when it was already used.
    pub async fn claim_jti(
        &self,
        rp_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool, DbError> {
        let c = self.client().await?;
        let exp = chrono::DateTime::from_timestamp(expires_at, 0).unwrap_or_default();
        let n = c
            .execute(
                "INSERT INTO auth_assertion_jti (rp_id, jti, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&rp_id, &jti, &exp],
            )
            .await
            .map_err(db_err)?;
        Ok(n == 1)
    }

    /// Forgets assertion ids whose assertions can no longer be presented anyway.
    pub async fn prune_jti(&self, now: i64) -> Result<u64, DbError> {
        let c = self.client().await?;
        let now = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
        c.execute(
            "DELETE FROM auth_assertion_jti WHERE expires_at < $1",
            &[&now],
        )
        .await
        .map_err(db_err)
    }

    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, DbError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT kid, alg, private_pkcs8, retired_at FROM auth_signing_key \
                 ORDER BY created_at DESC, kid",
                &[],
            )
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get(0).map_err(db_err)?,
                    alg: r.try_get(1).map_err(db_err)?,
                    pkcs8: r.try_get(2).map_err(db_err)?,
                    retired_at: r
                        .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(3)
                        .map_err(db_err)?
                        .map(|t| t.timestamp()),
                })
            })
            .collect()
    }

    /// Inserts a new signing key; with `retire_others` every other active key is retired in
    /// the same transaction (a rotation).
    pub async fn insert_signing_key(
        &self,
        kid: &str,
        alg: &str,
        pkcs8: &[u8],
        retire_others: bool,
    ) -> Result<(), DbError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        if retire_others {
            tx.execute(
                "UPDATE auth_signing_key SET retired_at = clock_timestamp() WHERE retired_at IS NULL",
                &[],
            )
            .await
            .map_err(db_err)?;
        }
        tx.execute(
            "INSERT INTO auth_signing_key (kid, alg, private_pkcs8) VALUES ($1, $2, $3)",
            &[&kid, &alg, &pkcs8],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    pub async fn insert_crl(
        &self,
        crl: &super::crl::LoadedCrl,
        der: &[u8],
        loaded_by: &str,
    ) -> Result<i64, DbError> {
        let c = self.client().await?;
        let ts = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap_or_default();
        let row = c
            .query_one(
                "INSERT INTO auth_crl (ca_key_id, issuer, this_update, next_update, der, loaded_by) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &crl.ca_key_id,
                    &crl.issuer,
                    &ts(crl.this_update),
                    &ts(crl.next_update),
                    &der,
                    &loaded_by,
                ],
            )
            .await
            .map_err(db_err)?;
        row.try_get(0).map_err(db_err)
    }

    /// The newest stored CRL of each CA key, without the DER: most are already installed, so
    /// only newer ones need [`Self::crl_der`]. Reads every CA key's head (a handful of rows
    /// through `auth_crl_ca`), never "rows after id N": a bigserial is allocated before its
    /// transaction commits, so a row with a smaller id can become visible after a larger one.
    pub async fn newest_crls(&self) -> Result<Vec<StoredCrl>, DbError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT DISTINCT ON (ca_key_id) id, ca_key_id, this_update FROM auth_crl \
                 ORDER BY ca_key_id, this_update DESC, id DESC",
                &[],
            )
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(StoredCrl {
                    id: r.try_get(0).map_err(db_err)?,
                    ca_key_id: r.try_get(1).map_err(db_err)?,
                    this_update: r
                        .try_get::<_, chrono::DateTime<chrono::Utc>>(2)
                        .map_err(db_err)?
                        .timestamp(),
                })
            })
            .collect()
    }

    pub async fn crl_der(&self, id: i64) -> Result<Vec<u8>, DbError> {
        let c = self.client().await?;
        c.query_one("SELECT der FROM auth_crl WHERE id = $1", &[&id])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)
    }

    async fn insert_audit(&self, batch: &[AuditRecord]) -> Result<(), DbError> {
        let c = self.client().await?;
        let occurred: Vec<_> = batch.iter().map(|r| r.occurred_at).collect();
        let rp: Vec<_> = batch.iter().map(|r| r.rp_id.clone()).collect();
        let endpoint: Vec<_> = batch.iter().map(|r| r.endpoint).collect();
        let outcome: Vec<_> = batch.iter().map(|r| r.outcome.as_str()).collect();
        let cert: Vec<_> = batch.iter().map(|r| r.cert_sha256.clone()).collect();
        let corr: Vec<_> = batch.iter().map(|r| r.correlation_id).collect();
        let addr: Vec<_> = batch.iter().map(|r| r.client_addr.clone()).collect();
        c.execute(
            "INSERT INTO auth_audit (occurred_at, rp_id, endpoint, outcome, cert_sha256, correlation_id, client_addr) \
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::text[])",
            &[&occurred, &rp, &endpoint, &outcome, &cert, &corr, &addr],
        )
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

type AuditItem = (AuditRecord, oneshot::Sender<bool>);

/// Writes audit records in batches; each caller waits until its record is committed, so a
/// response never goes out for an attempt that was not recorded.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditItem>,
}

impl AuditSink {
    /// Spawns the writer task on the current runtime.
    pub fn spawn(db: AuthDb, metrics: Arc<Metrics>) -> AuditSink {
        let (tx, mut rx) = mpsc::channel::<AuditItem>(AUDIT_QUEUE);
        tokio::spawn(async move {
            let mut batch: Vec<AuditItem> = Vec::with_capacity(AUDIT_BATCH);
            while rx.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
                let (records, acks): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                let ok = match db.insert_audit(&records).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(records = records.len(), "audit write failed: {e}");
                        for _ in &records {
                            Metrics::inc(&metrics.audit_write_failures);
                        }
                        false
                    }
                };
                for ack in acks {
                    let _ = ack.send(ok);
                }
            }
        });
        AuditSink { tx }
    }

    /// Records one attempt; true once it is committed.
    pub async fn record(&self, record: AuditRecord) -> bool {
        let (ack, done) = oneshot::channel();
        if self.tx.send((record, ack)).await.is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }
}
