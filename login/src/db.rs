//! The auth tables (store/migrations/0100_auth.sql): audit trail, assertion replay guard,
//! signing keys, CRLs. A small pool of its own, separate from the event store's, so audit
//! writes never queue behind event appends.

use super::metrics::Metrics;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
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

/// Longest string stored in an audit column (longer ones are cut): keeps every row far below
/// the btree index row limit (~2.7 KB) of `auth_audit_rp_time`.
pub const MAX_AUDIT_FIELD: usize = 256;

/// What the audit trail records for a value the request gave that did not validate (e.g. a
/// relying-party id in a path): never the raw value.
pub const INVALID_VALUE: &str = "<invalid>";

/// `s` as it may be stored: NUL (which PostgreSQL `text` refuses) and other control
/// characters replaced, at most [`MAX_AUDIT_FIELD`] bytes (cut at a character boundary).
pub fn audit_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_AUDIT_FIELD));
    for c in s.chars() {
        let c = if c.is_control() { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > MAX_AUDIT_FIELD {
            break;
        }
        out.push(c);
    }
    out
}

/// One audit row. Only a fingerprint of the certificate, never the certificate. Build it
/// with validated values; strings pass through [`audit_text`] on the way in anyway.
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
        let pool =
            mykey_store::pg::pool(pg, AUTH_POOL_SIZE, POOL_WAIT, POOL_WAIT).map_err(db_err)?;
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

    /// The challenge MAC key shared by every instance: `candidate` becomes it when none is
    /// stored yet (the first instance wins a start-up race; the others read its key).
    pub async fn challenge_secret(&self, candidate: &[u8]) -> Result<Vec<u8>, DbError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO auth_challenge_key (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING",
            &[&candidate],
        )
        .await
        .map_err(db_err)?;
        c.query_one("SELECT secret FROM auth_challenge_key WHERE id = 1", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)
    }

    /// Marks challenges used, in one statement; returns the ids that were not used before
    /// (by any instance). An id given twice is fresh at most once.
    pub async fn claim_challenges(
        &self,
        claims: &[(Uuid, i64)],
    ) -> Result<std::collections::HashSet<Uuid>, DbError> {
        let c = self.client().await?;
        let ids: Vec<Uuid> = claims.iter().map(|(id, _)| *id).collect();
        let exps: Vec<_> = claims
            .iter()
            .map(|(_, ms)| chrono::DateTime::from_timestamp_millis(*ms).unwrap_or_default())
            .collect();
        let rows = c
            .query(
                "INSERT INTO auth_challenge_used (id, expires_at) \
                 SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) \
                 ON CONFLICT DO NOTHING RETURNING id",
                &[&ids, &exps],
            )
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| r.try_get::<_, Uuid>(0).map_err(db_err))
            .collect()
    }

    /// Forgets used challenges that have expired anyway.
    pub async fn prune_challenges(&self, now_ms: i64) -> Result<u64, DbError> {
        let c = self.client().await?;
        let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        c.execute(
            "DELETE FROM auth_challenge_used WHERE expires_at < $1",
            &[&now],
        )
        .await
        .map_err(db_err)
    }

    /// Adds aggregated refusal counts: one row per (minute, endpoint, code).
    async fn add_refusals(&self, counts: &HashMap<RefusalKey, i64>) -> Result<(), DbError> {
        if counts.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        let minute: Vec<_> = counts.keys().map(|k| k.minute).collect();
        let endpoint: Vec<_> = counts.keys().map(|k| k.endpoint).collect();
        let outcome: Vec<_> = counts.keys().map(|k| k.outcome.as_str()).collect();
        let n: Vec<_> = counts.values().copied().collect();
        c.execute(
            "INSERT INTO auth_refusal_count (minute, endpoint, outcome, count) \
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[]) \
             ON CONFLICT (minute, endpoint, outcome) \
             DO UPDATE SET count = auth_refusal_count.count + EXCLUDED.count",
            &[&minute, &endpoint, &outcome, &n],
        )
        .await
        .map_err(db_err)?;
        Ok(())
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

/// An aggregated refusal's row key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefusalKey {
    pub minute: chrono::DateTime<chrono::Utc>,
    pub endpoint: &'static str,
    pub outcome: String,
}

/// What the audit writer records.
#[derive(Debug, Clone)]
pub enum AuditEntry {
    /// An attempt by an authenticated caller (or an accepted one): a row of its own.
    Record(AuditRecord),
    /// A refusal of a caller that did not authenticate: one more on its minute's counter.
    Refusal(RefusalKey),
}

type AuditItem = (AuditEntry, oneshot::Sender<bool>);

/// Writes audit entries in batches; each caller waits until its entry is committed, so a
/// response never goes out for an attempt that was not recorded. A batch whose INSERT fails
/// is retried record by record, so one bad record never fails the others.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditItem>,
}

impl AuditSink {
    /// Spawns the writer task on the current runtime.
    pub fn spawn(db: AuthDb, metrics: Metrics) -> AuditSink {
        let (tx, mut rx) = mpsc::channel::<AuditItem>(AUDIT_QUEUE);
        tokio::spawn(async move {
            let mut batch: Vec<AuditItem> = Vec::with_capacity(AUDIT_BATCH);
            while rx.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
                let mut records = Vec::new();
                let mut record_acks = Vec::new();
                let mut counts: HashMap<RefusalKey, i64> = HashMap::new();
                let mut refusal_acks = Vec::new();
                for (entry, ack) in batch.drain(..) {
                    match entry {
                        AuditEntry::Record(r) => {
                            records.push(r);
                            record_acks.push(ack);
                        }
                        AuditEntry::Refusal(k) => {
                            *counts.entry(k).or_default() += 1;
                            refusal_acks.push(ack);
                        }
                    }
                }
                let refusals = db.add_refusals(&counts).await;
                if let Err(e) = &refusals {
                    tracing::error!(
                        refusals = refusal_acks.len(),
                        "refusal counters not written: {e}"
                    );
                    metrics
                        .audit_write_failures
                        .inc_by(refusal_acks.len() as u64);
                }
                for ack in refusal_acks {
                    let _ = ack.send(refusals.is_ok());
                }
                let results = write_records(&db, &metrics, &records).await;
                for (ack, ok) in record_acks.into_iter().zip(results) {
                    let _ = ack.send(ok);
                }
            }
        });
        AuditSink { tx }
    }

    /// Records one entry; true once it is committed.
    pub async fn record(&self, entry: AuditEntry) -> bool {
        let (ack, done) = oneshot::channel();
        if self.tx.send((entry, ack)).await.is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }
}

/// One result per record: the batch in one INSERT, or each record alone when that fails.
pub async fn write_records(db: &AuthDb, metrics: &Metrics, records: &[AuditRecord]) -> Vec<bool> {
    if records.is_empty() {
        return Vec::new();
    }
    match db.insert_audit(records).await {
        Ok(()) => return vec![true; records.len()],
        Err(e) if records.len() > 1 => {
            tracing::warn!(
                records = records.len(),
                "audit batch failed, retrying one by one: {e}"
            );
            metrics.audit_batch_retries.inc();
        }
        Err(e) => {
            tracing::error!("audit write failed: {e}");
            metrics.audit_write_failures.inc();
            return vec![false];
        }
    }
    let mut results = Vec::with_capacity(records.len());
    for r in records {
        let ok = match db.insert_audit(std::slice::from_ref(r)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(endpoint = r.endpoint, "audit write failed: {e}");
                metrics.audit_write_failures.inc();
                false
            }
        };
        results.push(ok);
    }
    results
}
