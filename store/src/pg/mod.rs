//! The PostgreSQL event log.
//!
//! - **Schema**: versioned migrations ([`migrations`]) applied at [`PgEventStore::connect`].
//! - **Appends**: group commit ([`writer`]): one writer task per store batches concurrent
//!   appends into one transaction under a global advisory lock, which also makes positions
//!   visible gap-free (see the [`writer`] module docs for why).
//! - **Reads**: a small connection pool.
//! - **Subscriptions** ([`tail`]): one tail task per store reads each new event once into a
//!   bounded ring that serves every subscriber at the tail; a subscriber behind the ring reads
//!   pages by itself until it reaches it. The head they follow is kept current by one
//!   dedicated `LISTEN` connection per store (and this store's own writer bumps it directly).
//!
//! Connections are plain TCP (`NoTls`): the database is reached over a private network or a
//! local socket.

pub mod migrations;
// Public for read-only readers that must not migrate (`mykey-replay`).
pub mod rows;
pub mod tail;
pub mod writer;

use crate::{
    AppendError, AppendOutcome, AppendRequest, EventStore, StoreError, Subscription, MAX_READ_PAGE,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use mykey_schemas::{EventEnvelope, StreamId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use writer::{bump_head, Pending, WriterConn, WriterStats, APPEND_QUEUE, NOTIFY_CHANNEL};

/// Applied to the connection settings when the caller set no connect timeout: a database that
/// does not answer must turn into an error, not a hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a read waits for a pooled connection before reporting the store unavailable.
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

pub use tail::{SubscriptionStats, SUBSCRIPTION_PAGE, TAIL_RING_BYTES, TAIL_RING_EVENTS};

/// A pool of up to `max_size` plain-TCP connections to `config`, recycled without a check
/// query, that waits at most `wait` for a free connection and `create` for a new one: how every
/// part of the platform (the store's reads, login, the doors, the checkpoint signer) pools.
pub fn pool(
    config: tokio_postgres::Config,
    max_size: usize,
    wait: Duration,
    create: Duration,
) -> Result<Pool, deadpool_postgres::BuildError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(create))
        .build()
}

/// The log's head: the last position written, 0 when empty.
const HEAD_QUERY: &str = "SELECT coalesce(max(global_position), 0) FROM events";

/// Bounds of the listener's reconnect backoff.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(100);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Tuning for [`PgEventStore`].
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    /// Connections for reads (`read_*`, `head`, subscriptions' catch-up). The writer and the
    /// listener have one dedicated connection each, on top of these.
    pub read_pool_size: usize,
    /// Capacity of the queue in front of the writer.
    pub append_queue: usize,
    /// Events the subscriptions' shared tail ring keeps ([`TAIL_RING_EVENTS`]; also bounded by
    /// [`TAIL_RING_BYTES`]). Tests make it small to exercise subscribers behind the ring.
    pub tail_ring_events: usize,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        PgStoreOptions {
            read_pool_size: 8,
            append_queue: APPEND_QUEUE,
            tail_ring_events: TAIL_RING_EVENTS,
        }
    }
}

/// The PostgreSQL event log. Cloning shares the pool, the writer and the listener; they stop
/// when the last clone is dropped (open subscriptions then end too).
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    appends: mpsc::Sender<Pending>,
    head: Arc<watch::Sender<u64>>,
    stats: Arc<WriterStats>,
    /// The subscriptions' shared reader, started by the first `subscribe` (and again if it
    /// stopped with the runtime that ran it).
    tail: std::sync::Mutex<Option<tail::Tail>>,
    tail_ring_events: usize,
    subscription_stats: Arc<SubscriptionStats>,
    /// Dropped with the store: the listener task sees its receiver close and stops.
    _stop_listener: oneshot::Sender<()>,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("known_head", &*self.inner.head.borrow())
            .field("pool", &self.inner.pool.status())
            .finish_non_exhaustive()
    }
}

/// A database error's message and SQLSTATE (the plain `Display` of tokio-postgres hides them).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn unavailable(what: &str, e: &tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {}", describe(e)))
}

async fn open(config: &tokio_postgres::Config, role: &str) -> Result<Client, StoreError> {
    let mut config = config.clone();
    config.application_name(format!("mykey-store-{role}"));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| unavailable("connect", &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "event store connection closed");
        }
    });
    Ok(client)
}

impl PgEventStore {
    /// Connects, applies pending migrations, and starts the writer and the listener.
    pub async fn connect(
        mut config: tokio_postgres::Config,
        options: PgStoreOptions,
    ) -> Result<PgEventStore, StoreError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let mut client = open(&config, "writer").await?;
        // Payloads are stored as text and hashed as bytes: any encoding conversion on the way
        // in or out would break the chain.
        let encoding = client
            .query_one("SHOW server_encoding", &[])
            .await
            .and_then(|r| r.try_get::<_, String>(0))
            .map_err(|e| unavailable("server_encoding", &e))?;
        if encoding != "UTF8" {
            return Err(StoreError::Unavailable(format!(
                "the database encoding is {encoding}; the event log needs UTF8"
            )));
        }
        migrations::migrate(&mut client).await?;
        let writer = WriterConn::new(client)
            .await
            .map_err(|e| unavailable("prepare the writer", &e))?;

        let create = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        let pool = pool(
            config.clone(),
            options.read_pool_size.max(1),
            POOL_WAIT_TIMEOUT,
            create,
        )
        .map_err(|e| StoreError::Unavailable(format!("read pool: {e}")))?;

        let head = Arc::new(watch::channel(0u64).0);
        // Listen before anyone can subscribe, so no notification is missed; then learn the head.
        let listener = listen(&config, head.clone()).await?;
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(run_listener(
            config.clone(),
            head.clone(),
            listener,
            stop_rx,
        ));

        let (tx, rx) = mpsc::channel(options.append_queue.max(1));
        let connector_config = config.clone();
        let connector: writer::Connector = Arc::new(move || {
            let config = connector_config.clone();
            Box::pin(async move {
                let client = open(&config, "writer").await?;
                WriterConn::new(client)
                    .await
                    .map_err(|e| unavailable("prepare the writer", &e))
            })
        });
        let stats = Arc::new(WriterStats::default());
        tokio::spawn(writer::run(
            rx,
            connector,
            Some(writer),
            head.clone(),
            stats.clone(),
        ));

        Ok(PgEventStore {
            inner: Arc::new(Inner {
                pool,
                appends: tx,
                head,
                stats,
                tail: std::sync::Mutex::new(None),
                tail_ring_events: options.tail_ring_events,
                subscription_stats: Arc::default(),
                _stop_listener: stop_tx,
            }),
        })
    }

    /// Batches, requests and events the writer has taken on so far (written, refused or
    /// failed): requests per batch shows how well group commit is batching.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Events read from PostgreSQL for subscriptions: by the shared tail, and by subscribers
    /// behind it.
    pub fn subscription_stats(&self) -> &SubscriptionStats {
        &self.inner.subscription_stats
    }

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        get_reader(&self.inner.pool).await
    }
}

async fn get_reader(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("no database connection for reading: {e}")))
}

fn page_limit(limit: usize) -> i64 {
    // MAX_READ_PAGE is far below i64::MAX.
    i64::try_from(limit.min(MAX_READ_PAGE)).unwrap_or(0)
}

async fn read_all_from(
    pool: &Pool,
    from_position: u64,
    limit: usize,
) -> Result<Vec<EventEnvelope>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let client = get_reader(pool).await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {} FROM events WHERE global_position >= $1 \
             ORDER BY global_position LIMIT $2",
            rows::EVENT_COLUMNS
        ))
        .await
        .map_err(|e| unavailable("prepare read_all", &e))?;
    let rows = client
        .query(
            &stmt,
            &[&writer::to_i64(from_position.max(1)), &page_limit(limit)],
        )
        .await
        .map_err(|e| unavailable("read_all", &e))?;
    rows.iter().map(rows::envelope).collect()
}

impl EventStore for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        // Every check that needs no database happens here, before anything is queued.
        request.validate()?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .appends
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the event log writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable(
                "the event log writer stopped before answering; the outcome is unknown \
                 (retrying with the same command id is safe)"
                    .into(),
            )
        })?
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {} FROM events WHERE stream_id = $1 AND stream_version >= $2 \
                 ORDER BY stream_version LIMIT $3",
                rows::EVENT_COLUMNS
            ))
            .await
            .map_err(|e| unavailable("prepare read_stream", &e))?;
        let rows = client
            .query(
                &stmt,
                &[
                    &stream.as_str(),
                    &writer::to_i64(from_version),
                    &page_limit(limit),
                ],
            )
            .await
            .map_err(|e| unavailable("read_stream", &e))?;
        rows.iter().map(rows::envelope).collect()
    }

    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<Vec<EventEnvelope>>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {} FROM events WHERE stream_id = ANY($1) \
                 ORDER BY stream_id, stream_version LIMIT $2",
                rows::EVENT_COLUMNS
            ))
            .await
            .map_err(|e| unavailable("prepare read_streams", &e))?;
        let rows = client
            .query(&stmt, &[&ids, &page_limit(MAX_READ_PAGE)])
            .await
            .map_err(|e| unavailable("read_streams", &e))?;
        drop(client);
        if rows.len() >= MAX_READ_PAGE {
            // Possibly cut short: read each stream whole, page by page.
            return crate::read_each_stream(self, streams).await;
        }
        let mut by_stream: std::collections::HashMap<String, Vec<EventEnvelope>> =
            std::collections::HashMap::new();
        for row in &rows {
            let e = rows::envelope(row)?;
            by_stream
                .entry(e.stream_id.as_str().to_owned())
                .or_default()
                .push(e);
        }
        Ok(streams
            .iter()
            .map(|s| by_stream.get(s.as_str()).cloned().unwrap_or_default())
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        read_all_from(&self.inner.pool, from_position, limit).await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(HEAD_QUERY)
            .await
            .map_err(|e| unavailable("prepare head", &e))?;
        let head: i64 = client
            .query_one(&stmt, &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| unavailable("head", &e))?;
        u64::try_from(head).map_err(|_| StoreError::Corrupt {
            position: 0,
            reason: format!("negative head {head}"),
        })
    }

    fn subscribe(&self, from_position: u64) -> Subscription {
        let (tx, rx) = mpsc::channel(crate::SUBSCRIPTION_BUFFER);
        let tail = {
            let mut slot = self
                .inner
                .tail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match slot.as_ref() {
                Some(t) if !t.stopped() => t.clone(),
                _ => {
                    let t = tail::Tail::start(
                        self.inner.pool.clone(),
                        self.inner.head.subscribe(),
                        self.inner.tail_ring_events,
                        self.inner.subscription_stats.clone(),
                    );
                    *slot = Some(t.clone());
                    t
                }
            }
        };
        // The feeder holds the pool, a head receiver and the tail, not the store: a forgotten
        // subscription does not keep the writer alive.
        let pool = self.inner.pool.clone();
        let head = self.inner.head.subscribe();
        tokio::spawn(tail::feed(pool, head, tail, from_position.max(1), tx));
        rx
    }
}

/// Opens the listener connection, `LISTEN`s, then raises the head to the log's current head.
/// Notifications are handled by the task driving the connection; it ends when it closes.
async fn listen(
    config: &tokio_postgres::Config,
    head: Arc<watch::Sender<u64>>,
) -> Result<(Client, JoinHandle<()>), StoreError> {
    let mut config = config.clone();
    config.application_name("mykey-store-listener");
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| unavailable("connect the listener", &e))?;
    let notified = head.clone();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Ok(h) = n.payload().parse::<u64>() {
                        bump_head(&notified, h);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "event store listener connection failed");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await
        .map_err(|e| unavailable("LISTEN", &e))?;
    let current: i64 = client
        .query_one(HEAD_QUERY, &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| unavailable("head", &e))?;
    bump_head(&head, u64::try_from(current).unwrap_or(0));
    Ok((client, driver))
}

/// Keeps a `LISTEN` connection open until the store is dropped, reconnecting with backoff.
/// After a reconnect the head is re-read, which wakes any subscriber that missed a
/// notification while the connection was down.
async fn run_listener(
    config: tokio_postgres::Config,
    head: Arc<watch::Sender<u64>>,
    first: (Client, JoinHandle<()>),
    mut stop: oneshot::Receiver<()>,
) {
    let mut current = Some(first);
    let mut backoff = LISTEN_RETRY_MIN;
    loop {
        if let Some((client, mut driver)) = current.take() {
            tokio::select! {
                _ = &mut stop => return,
                _ = &mut driver => {}
            }
            drop(client);
            tracing::warn!("event store listener disconnected; reconnecting");
        }
        tokio::select! {
            _ = &mut stop => return,
            r = listen(&config, head.clone()) => match r {
                Ok(c) => {
                    current = Some(c);
                    backoff = LISTEN_RETRY_MIN;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event store listener cannot reconnect");
                    // Retry backoff, not synchronisation.
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(LISTEN_RETRY_MAX);
                }
            }
        }
    }
}
