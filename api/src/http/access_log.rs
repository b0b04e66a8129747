//! The access log: every request (time, principal, role, relying party, route template,
//! method, status, latency, correlation id) in the append-only table `access_log` (migration
//! 0400), separate from the event log; exportable as CSV or NDJSON by time range and principal
//! ([`export`]: the auditor door and `mykey-server access-log` call it).
//!
//! Records are queued by the middleware and written in batches by one task, never on the
//! request path. The queue is bounded ([`ACCESS_LOG_QUEUE`]): when it is full (the database is
//! down or slower than the traffic) a record is **dropped and counted** in
//! `mykey_access_log_dropped_total` rather than making requests wait or memory grow; a batch
//! the database refuses is counted in `mykey_access_log_write_failures_total`. Alert on
//! either. Login attempts keep their own, synchronous audit trail (`auth_audit`).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prometheus::{IntCounter, Registry};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Records waiting for the writer; beyond this they are dropped (and counted).
pub const ACCESS_LOG_QUEUE: usize = 10_000;
/// Records per INSERT.
pub const ACCESS_LOG_BATCH: usize = 500;
/// Rows per query when exporting (memory stays bounded whatever the range).
pub const EXPORT_PAGE: i64 = 1_000;

/// One request as the access log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRecord {
    pub at: DateTime<Utc>,
    pub principal: Option<String>,
    pub role: Option<String>,
    pub rp: Option<String>,
    pub route: String,
    pub method: String,
    pub status: u16,
    pub latency_us: i64,
    pub correlation_id: Uuid,
}

/// The middleware's handle on the writer task.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<AccessRecord>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer task on `pool`; its counters go to `registry`.
    pub fn spawn(pool: Pool, registry: &Registry) -> Result<AccessLog, prometheus::Error> {
        let dropped = IntCounter::new(
            "mykey_access_log_dropped_total",
            "Access-log records dropped because the writer's queue was full.",
        )?;
        let failures = IntCounter::new(
            "mykey_access_log_write_failures_total",
            "Access-log records lost because their batch INSERT failed.",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        let (tx, mut rx) = mpsc::channel::<AccessRecord>(ACCESS_LOG_QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(ACCESS_LOG_BATCH);
            while rx.recv_many(&mut batch, ACCESS_LOG_BATCH).await > 0 {
                if let Err(e) = insert(&pool, &batch).await {
                    tracing::error!(records = batch.len(), "access log batch lost: {e}");
                    failures.inc_by(batch.len() as u64);
                }
                batch.clear();
            }
        });
        Ok(AccessLog { tx, dropped })
    }

    /// Queues `record`; never waits.
    pub fn record(&self, record: AccessRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

async fn insert(pool: &Pool, batch: &[AccessRecord]) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let at: Vec<_> = batch.iter().map(|r| r.at).collect();
    let principal: Vec<_> = batch.iter().map(|r| r.principal.clone()).collect();
    let role: Vec<_> = batch.iter().map(|r| r.role.clone()).collect();
    let rp: Vec<_> = batch.iter().map(|r| r.rp.clone()).collect();
    let route: Vec<_> = batch.iter().map(|r| r.route.as_str()).collect();
    let method: Vec<_> = batch.iter().map(|r| r.method.as_str()).collect();
    let status: Vec<i16> = batch
        .iter()
        .map(|r| i16::try_from(r.status).unwrap_or(i16::MAX))
        .collect();
    let latency: Vec<_> = batch.iter().map(|r| r.latency_us).collect();
    let corr: Vec<_> = batch.iter().map(|r| r.correlation_id).collect();
    client
        .execute(
            "INSERT INTO access_log (at, principal, role, rp, route, method, status, latency_us, \
             correlation_id) SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], \
             $4::text[], $5::text[], $6::text[], $7::int2[], $8::int8[], $9::uuid[])",
            &[
                &at, &principal, &role, &rp, &route, &method, &status, &latency, &corr,
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Which records an export holds: `from <= at < to`, optionally one principal's.
#[derive(Debug, Clone)]
pub struct ExportFilter {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub principal: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `text/csv; header=present`, UTF-8.
    Csv,
    /// One JSON object per line (`application/x-ndjson`).
    Ndjson,
}

impl ExportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; header=present",
            ExportFormat::Ndjson => "application/x-ndjson",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("access log: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
    #[error("writing the export: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing the export: {0}")]
    Json(#[from] serde_json::Error),
}

/// Column order of the CSV export (and field order of NDJSON).
pub const EXPORT_COLUMNS: &[&str] = &[
    "at",
    "principal",
    "role",
    "rp",
    "route",
    "method",
    "status",
    "latency_us",
    "correlation_id",
];

/// Writes the records matching `filter`, oldest first, to `out`; returns how many. Reads in
/// pages of [`EXPORT_PAGE`] (keyset on the row id), so a year's range does not fill memory.
///
/// Every page reads one snapshot (a repeatable-read, read-only transaction): ids are taken
/// before their rows commit, so between two pages a row with an id below the keyset could
/// commit and, read page by page outside one snapshot, be skipped by this export.
pub async fn export(
    client: &mut tokio_postgres::Client,
    filter: &ExportFilter,
    format: ExportFormat,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64, ExportError> {
    let snapshot = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut after: i64 = 0;
    let mut count = 0u64;
    loop {
        let rows = snapshot
            .query(
                "SELECT id, at, principal, role, rp, route, method, status, latency_us, \
                 correlation_id FROM access_log WHERE at >= $1 AND at < $2 AND id > $3 \
                 AND ($4::text IS NULL OR principal = $4) ORDER BY id LIMIT $5",
                &[
                    &filter.from,
                    &filter.to,
                    &after,
                    &filter.principal,
                    &EXPORT_PAGE,
                ],
            )
            .await?;
        // One CSV writer per page, into a buffer then `out` (csv::Writer cannot lend its sink).
        let mut csv = (format == ExportFormat::Csv).then(|| csv::Writer::from_writer(Vec::new()));
        if let (Some(w), 0) = (csv.as_mut(), count) {
            w.write_record(EXPORT_COLUMNS)?;
        }
        for row in &rows {
            after = row.get(0);
            let status: i16 = row.get(7);
            let r = AccessRecord {
                at: row.get(1),
                principal: row.get(2),
                role: row.get(3),
                rp: row.get(4),
                route: row.get(5),
                method: row.get(6),
                status: u16::try_from(status).unwrap_or_default(),
                latency_us: row.get(8),
                correlation_id: row.get(9),
            };
            match csv.as_mut() {
                Some(w) => {
                    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
                    w.write_record([
                        r.at.to_rfc3339(),
                        opt(&r.principal),
                        opt(&r.role),
                        opt(&r.rp),
                        r.route,
                        r.method,
                        r.status.to_string(),
                        r.latency_us.to_string(),
                        r.correlation_id.to_string(),
                    ])?;
                }
                None => {
                    serde_json::to_writer(&mut *out, &r)?;
                    out.write_all(b"\n")?;
                }
            }
            count += 1;
        }
        if let Some(w) = csv {
            let buf = w.into_inner().map_err(|e| e.into_error())?;
            out.write_all(&buf)?;
        }
        if rows.len() < EXPORT_PAGE as usize {
            break;
        }
    }
    snapshot.commit().await?;
    out.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            at: Utc::now(),
            principal: None,
            role: None,
            rp: None,
            route: "/x".into(),
            method: "GET".into(),
            status: 200,
            latency_us: 1,
            correlation_id: Uuid::new_v4(),
        }
    }

    /// A full queue drops (and counts) rather than making the request wait. On this
    /// single-threaded runtime the writer cannot run between the `record` calls, so exactly
    /// the queue's capacity is kept.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let mut pg = tokio_postgres::Config::new();
        pg.host("127.0.0.1")
            .port(1)
            .user("nobody")
            .dbname("nothing");
        let pool = crate::http::pool(pg).unwrap_or_else(|e| panic!("{e}"));
        let registry = Registry::new();
        let log = AccessLog::spawn(pool, &registry).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..ACCESS_LOG_QUEUE + 25 {
            log.record(record());
        }
        assert_eq!(log.dropped.get(), 25);
    }
}
