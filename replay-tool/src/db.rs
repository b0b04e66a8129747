//! Reading the log from PostgreSQL: a read-only session, keyset pages, no migrations.

use crate::ToolError;
use mykey_schemas::{EventEnvelope, StreamId};
use mykey_store::pg::rows::{envelope, EVENT_COLUMNS};
use mykey_store::StoreError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

/// Events per page: large enough to amortise the round trip, small enough for flat memory.
pub const PAGE: i64 = 10_000;

/// Pages read ahead while the current one is checked (memory: this many pages at most).
const READ_AHEAD: usize = 2;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which events an export or verification covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    pub from: u64,
    pub to: u64,
    /// Whole streams, by id; empty with no categories = every stream.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Whole categories (`ppid`, `program`, ...).
    #[serde(default)]
    pub categories: Vec<String>,
}

impl Selection {
    /// True when the selection is a contiguous range of the whole log.
    pub fn is_full(&self) -> bool {
        self.streams.is_empty() && self.categories.is_empty()
    }

    /// Validates stream ids and category names.
    pub fn validate(&self) -> Result<(), ToolError> {
        for s in &self.streams {
            StreamId::parse(s).map_err(|e| ToolError::Usage(format!("--stream {s:?}: {e}")))?;
        }
        for c in &self.categories {
            if StreamId::new(c, "x").map(|s| s.category() == c) != Ok(true) {
                return Err(ToolError::Usage(format!(
                    "--category {c:?}: a category is [a-z][a-z0-9_]*"
                )));
            }
        }
        Ok(())
    }
}

fn db_err(e: impl std::fmt::Display) -> ToolError {
    ToolError::Db(e.to_string())
}

fn pg_err(e: tokio_postgres::Error) -> ToolError {
    match e.as_db_error() {
        Some(d) => ToolError::Db(format!("{} (SQLSTATE {})", d.message(), d.code().code())),
        None => ToolError::Db(e.to_string()),
    }
}

fn store_err(e: StoreError) -> ToolError {
    match e {
        StoreError::Corrupt { position, reason } => ToolError::CorruptRow { position, reason },
        StoreError::Unavailable(m) => ToolError::Db(m),
    }
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Selected events of a range, in order (see [`Db::page`]).
const PAGE_QUERY: &str = "WHERE global_position >= $1 AND global_position <= $2 \
       AND (cardinality($4::text[]) + cardinality($5::text[]) = 0 \
            OR stream_id = ANY($4::text[]) \
            OR split_part(stream_id, '-', 1) = ANY($5::text[])) \
     ORDER BY global_position LIMIT $3";

#[derive(Debug)]
pub struct Db {
    client: Client,
    page_stmt: tokio_postgres::Statement,
}

impl Db {
    /// Connects with a `postgres://` URL or `key=value` settings.
    pub async fn connect(url: &str) -> Result<Arc<Db>, ToolError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| ToolError::Usage(format!("--database-url: {e}")))?;
        config.application_name("mykey-replay");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(pg_err)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        // An auditor's tool never writes.
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .map_err(pg_err)?;
        let page_stmt = client
            .prepare(&format!("SELECT {EVENT_COLUMNS} FROM events {PAGE_QUERY}"))
            .await
            .map_err(pg_err)?;
        Ok(Arc::new(Db { client, page_stmt }))
    }

    pub async fn head(&self) -> Result<u64, ToolError> {
        let row = self
            .client
            .query_one("SELECT coalesce(max(global_position), 0) FROM events", &[])
            .await
            .map_err(pg_err)?;
        let head: i64 = row.try_get(0).map_err(pg_err)?;
        Ok(u64::try_from(head).unwrap_or(0))
    }

    /// The event at `position`, if present.
    pub async fn event_at(&self, position: u64) -> Result<Option<EventEnvelope>, ToolError> {
        let row = self
            .client
            .query_opt(
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE global_position = $1"),
                &[&i64_of(position)],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| envelope(&r).map_err(store_err)).transpose()
    }

    /// Up to `limit` selected events with positions in `from..=to`, in order.
    pub async fn page(
        &self,
        from: u64,
        sel: &Selection,
        limit: i64,
    ) -> Result<Vec<EventEnvelope>, ToolError> {
        let rows = self
            .client
            .query(
                &self.page_stmt,
                &[
                    &i64_of(from),
                    &i64_of(sel.to),
                    &limit,
                    &sel.streams,
                    &sel.categories,
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| envelope(r).map_err(store_err))
            .collect()
    }

    /// Every selected event in order, read ahead by a task while the caller works.
    pub fn pages(
        self: &Arc<Self>,
        sel: Selection,
    ) -> mpsc::Receiver<Result<Vec<EventEnvelope>, ToolError>> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let db = self.clone();
        tokio::spawn(async move {
            let mut next = sel.from;
            while next <= sel.to {
                let page = db.page(next, &sel, PAGE).await;
                let last = match &page {
                    Ok(p) => p.last().map(|e| e.global_position),
                    Err(_) => None,
                };
                let full = matches!(&page, Ok(p) if p.len() as i64 == PAGE);
                if tx.send(page).await.is_err() {
                    return;
                }
                match last {
                    Some(l) if full => next = l + 1,
                    _ => return,
                }
            }
        });
        rx
    }

    /// Events of one stream from `from_version`, at most `limit`.
    pub async fn stream_page(
        &self,
        stream: &str,
        from_version: u64,
        limit: i64,
    ) -> Result<Vec<EventEnvelope>, ToolError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 \
                     AND stream_version >= $2 ORDER BY stream_version LIMIT $3"
                ),
                &[&stream, &i64_of(from_version), &limit],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| envelope(r).map_err(store_err))
            .collect()
    }

    /// The newest signed checkpoint note with a size in `from..=to` (None when the server
    /// never signed one there, or predates checkpoints).
    pub async fn latest_checkpoint(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Option<(u64, String)>, ToolError> {
        let exists = self
            .client
            .query_one("SELECT to_regclass('audit_checkpoint') IS NOT NULL", &[])
            .await
            .map_err(pg_err)?;
        if !exists.try_get::<_, bool>(0).map_err(pg_err)? {
            return Ok(None);
        }
        let row = self
            .client
            .query_opt(
                "SELECT size, note FROM audit_checkpoint WHERE size >= $1 AND size <= $2 \
                 ORDER BY size DESC, id DESC LIMIT 1",
                &[&i64_of(from), &i64_of(to)],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| -> Result<(u64, String), ToolError> {
            let size: i64 = r.try_get(0).map_err(db_err)?;
            Ok((
                u64::try_from(size).unwrap_or(0),
                r.try_get(1).map_err(db_err)?,
            ))
        })
        .transpose()
    }
}
