//! Group commit: one writer task per [`super::PgEventStore`] drains concurrent appends into a
//! batch and writes the batch in one transaction under the global append lock.
//!
//! # Why positions are gap-free for readers
//!
//! Every writer, in every process, assigns positions only while holding the transaction-scoped
//! advisory lock [`APPEND_LOCK_KEY`], and reads the tail *after* taking it. PostgreSQL's
//! `CommitTransaction` makes the transaction visible (`ProcArrayEndTransaction`, after the
//! commit record is flushed) *before* it releases the transaction's locks
//! (`ResourceOwnerRelease`). So when the next writer gets the lock, the previous batch is
//! already visible to every new snapshot; it continues from that tail, and its own rows become
//! visible only later. Batches therefore become visible strictly in position order: a reader
//! that has seen position `p` saw a snapshot in which every batch up to `p` had committed, and
//! no later commit can add a position `<= p`. (A sequence would not give this: numbers are
//! taken outside the lock and concurrent commits finish in any order.)
//!
//! # Round trips
//!
//! A batch costs two pipelined round trips plus the commit's WAL flush: (1) `BEGIN`, lock,
//! tail, known command ids, current stream versions; (2) insert events, insert command
//! outcomes, `pg_notify`, `COMMIT`. All statements are prepared once per connection.

use super::describe;
use crate::{AppendError, AppendOutcome, AppendRequest, StoreError, StreamOutcome};
use chrono::{DateTime, Utc};
use mykey_schemas::envelope::truncate_to_micros;
use mykey_schemas::{EventEnvelope, Hash, GENESIS_HASH};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

/// Capacity of the queue in front of the writer. When it is full, `append` waits: back-pressure
/// on callers instead of unbounded memory while the database is slow.
pub const APPEND_QUEUE: usize = 4_096;

/// At most this many requests per batch: bounds the lookups and the reply fan-out of one
/// transaction, so one batch never holds the global lock for long.
pub const MAX_BATCH_REQUESTS: usize = 1_000;

/// At most this many events per batch (ten maximal appends): bounds the size of the insert
/// statement and the time the global lock is held.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// At most this many payload bytes per batch, beyond the first request (which is always taken,
/// whatever its size, or it could never be written): bounds the writer's memory and the size
/// of one insert message.
pub const MAX_BATCH_PAYLOAD_BYTES: usize = 32 * 1024 * 1024;

/// Advisory lock key (transaction scope) that serialises every append to this database,
/// across processes. See the module docs for why this makes positions gap-free.
pub const APPEND_LOCK_KEY: i64 = 0x6d79_6b65_795f_6576; // "mykey_ev"

/// The channel `pg_notify` announces new heads on (payload: the head as decimal text).
pub const NOTIFY_CHANNEL: &str = "mykey_events";

/// A statement running longer than this on the writer's connection is cancelled, so a stuck
/// batch fails (and its callers get an error) instead of holding the global lock forever.
pub const WRITER_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many consecutive empty polls of the queue end a batch's collection (see `run`).
pub const LINGER_YIELDS: u32 = 4;

/// Counters of the writer's work, for monitoring and the benchmark.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub events: AtomicU64,
}

/// A request waiting for the writer, with where to send its answer.
#[derive(Debug)]
pub struct Pending {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
}

struct Statements {
    lock: Statement,
    tail: Statement,
    commands: Statement,
    versions: Statement,
    insert_events: Statement,
    insert_commands: Statement,
    notify: Statement,
}

/// The writer's own connection (not from the read pool: it is busy all the time, and it is
/// dropped and reopened after any failure so no half-finished transaction can linger).
pub struct WriterConn {
    client: Client,
    stmts: Statements,
}

impl std::fmt::Debug for WriterConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConn")
            .field("closed", &self.client.is_closed())
            .finish_non_exhaustive()
    }
}

impl WriterConn {
    /// Prepares the writer's statements on a fresh connection.
    pub async fn new(client: Client) -> Result<WriterConn, tokio_postgres::Error> {
        client
            .batch_execute(&format!(
                // Generic plans: every writer statement is an index probe or an insert whose
                // best plan does not depend on the values, and re-planning each batch's
                // statements (custom plans) costs about as much as running them.
                "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
                 SET plan_cache_mode = force_generic_plan",
                WRITER_STATEMENT_TIMEOUT.as_millis(),
                WRITER_STATEMENT_TIMEOUT.as_millis() * 2
            ))
            .await?;
        let stmts = Statements {
            lock: client.prepare("SELECT pg_advisory_xact_lock($1)").await?,
            tail: client
                .prepare(
                    "SELECT clock_timestamp(), t.global_position, t.hash, t.recorded_at \
                     FROM (VALUES (1)) AS v(x) LEFT JOIN LATERAL (\
                       SELECT global_position, hash, recorded_at FROM events \
                       ORDER BY global_position DESC LIMIT 1) AS t ON true",
                )
                .await?,
            commands: client
                .prepare(
                    "SELECT command_id, first_position, last_position, streams::text \
                     FROM commands WHERE command_id = ANY($1::uuid[])",
                )
                .await?,
            // One backward index probe per stream on (stream_id, stream_version): cheap however
            // long the stream is (a GROUP BY over the stream's rows would not be).
            versions: client
                .prepare(
                    "SELECT s.id, (SELECT max(e.stream_version) FROM events e \
                                   WHERE e.stream_id = s.id) \
                     FROM unnest($1::text[]) AS s(id)",
                )
                .await?,
            insert_events: client
                .prepare(
                    "INSERT INTO events (global_position, stream_id, stream_version, event_id, \
                       event_type, schema_version, payload, actor_id, actor_role, command_id, \
                       correlation_id, causation_id, patch_id, client_addr, recorded_at, \
                       prev_hash, hash) \
                     SELECT p, s, v, id, ty, sv, pl, a, ar, c, co, ca, pa, cl, $15, ph, h \
                     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], \
                       $5::text[], $6::int[], $7::text[], $8::text[], $9::text[], $10::uuid[], \
                       $11::uuid[], $12::uuid[], $13::uuid[], $14::text[], $16::bytea[], \
                       $17::bytea[]) \
                       AS t(p, s, v, id, ty, sv, pl, a, ar, c, co, ca, pa, cl, ph, h)",
                )
                .await?,
            insert_commands: client
                .prepare(
                    "INSERT INTO commands (command_id, first_position, last_position, streams, \
                       recorded_at) \
                     SELECT c, f, l, s::jsonb, $5 \
                     FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[]) \
                       AS t(c, f, l, s)",
                )
                .await?,
            notify: client.prepare("SELECT pg_notify($1, $2)").await?,
        };
        Ok(WriterConn { client, stmts })
    }
}

/// Opens a writer connection.
pub type Connector = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<WriterConn, StoreError>> + Send>,
        > + Send
        + Sync,
>;

/// The writer task: runs until every sender (every clone of the store) is gone.
pub async fn run(
    mut rx: mpsc::Receiver<Pending>,
    connector: Connector,
    first: Option<WriterConn>,
    head: Arc<watch::Sender<u64>>,
    stats: Arc<WriterStats>,
) {
    let mut conn = first;
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut events = first.request.event_count();
        let mut bytes = payload_bytes(&first.request);
        let mut batch = vec![first];
        // Linger briefly: the tasks the previous batch's replies woke are typically about to
        // enqueue their next request. Yielding a few times lets them, so batches stay large
        // instead of fragmenting into one tiny batch per wake-up. Ends at the first run of
        // LINGER_YIELDS polls that bring nothing, so an idle writer adds no delay to speak of.
        let mut idle = 0;
        while batch.len() < MAX_BATCH_REQUESTS {
            let p = match rx.try_recv() {
                Ok(p) => p,
                Err(mpsc::error::TryRecvError::Empty) if idle < LINGER_YIELDS => {
                    idle += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(_) => break,
            };
            idle = 0;
            let (e, b) = (p.request.event_count(), payload_bytes(&p.request));
            if events + e > MAX_BATCH_EVENTS || bytes + b > MAX_BATCH_PAYLOAD_BYTES {
                carry = Some(p);
                break;
            }
            events += e;
            bytes += b;
            batch.push(p);
        }

        let c = match conn.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => match connector().await {
                Ok(c) => c,
                Err(e) => {
                    reply_all_err(batch, &e.to_string());
                    continue;
                }
            },
        };
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.events.fetch_add(events as u64, Ordering::Relaxed);
        let (requests, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.request, p.reply)).unzip();
        match write_batch(&c, requests.clone()).await {
            Ok((results, last)) => {
                conn = Some(c);
                bump_head(&head, last);
                for (r, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(r);
                }
            }
            Err(BatchError {
                error, integrity, ..
            }) => {
                // Roll back whatever is open; a connection that cannot is dropped.
                if c.client.batch_execute("ROLLBACK").await.is_ok() {
                    conn = Some(c);
                }
                if integrity {
                    // A constraint refused the batch (e.g. a caller reused an event id): write
                    // each request alone, so only the offending one fails, with its own error.
                    tracing::warn!(error = %error, "batch refused by a constraint; retrying one by one");
                    for (request, reply) in requests.into_iter().zip(replies) {
                        let r = write_alone(&mut conn, &connector, &head, request).await;
                        let _ = reply.send(r);
                    }
                } else {
                    tracing::warn!(error = %error, requests = requests.len(), "append batch failed");
                    for reply in replies {
                        let _ = reply.send(Err(unavailable(&error)));
                    }
                }
            }
        }
    }
}

async fn write_alone(
    conn: &mut Option<WriterConn>,
    connector: &Connector,
    head: &watch::Sender<u64>,
    request: AppendRequest,
) -> Result<AppendOutcome, AppendError> {
    let c = match conn.take() {
        Some(c) if !c.client.is_closed() => c,
        _ => connector().await?,
    };
    let event_ids: Vec<uuid::Uuid> = request
        .streams
        .iter()
        .flat_map(|s| s.events.iter().map(|e| e.event_id))
        .collect();
    match write_batch(&c, vec![request]).await {
        Ok((mut results, last)) => {
            *conn = Some(c);
            bump_head(head, last);
            results
                .pop()
                .unwrap_or_else(|| Err(unavailable("the writer produced no answer")))
        }
        Err(BatchError {
            error,
            constraint,
            detail,
            ..
        }) => {
            if c.client.batch_execute("ROLLBACK").await.is_ok() {
                *conn = Some(c);
            }
            if constraint.as_deref() == Some(EVENT_ID_CONSTRAINT) {
                // Alone in its transaction, so one of its own ids is in the log already.
                let id = detail
                    .as_deref()
                    .and_then(reused_id)
                    .or(event_ids.first().copied());
                return Err(AppendError::EventIdReused(id.unwrap_or_default()));
            }
            Err(unavailable(&error))
        }
    }
}

/// The unique index on `events.event_id` (PostgreSQL's name for the column's UNIQUE).
const EVENT_ID_CONSTRAINT: &str = "events_event_id_key";

/// The id in PostgreSQL's "Key (event_id)=(…) already exists." detail.
fn reused_id(error: &str) -> Option<uuid::Uuid> {
    let rest = error.split("(event_id)=(").nth(1)?;
    uuid::Uuid::parse_str(rest.split(')').next()?).ok()
}

fn unavailable(error: &str) -> AppendError {
    AppendError::Store(StoreError::Unavailable(format!(
        "append failed, the outcome may be unknown (retrying with the same command id is safe): {error}"
    )))
}

fn reply_all_err(batch: Vec<Pending>, error: &str) {
    for p in batch {
        let _ = p.reply.send(Err(unavailable(error)));
    }
}

/// Raises the shared head (never lowers it: notifications from other writers race with ours).
pub fn bump_head(head: &watch::Sender<u64>, last: u64) {
    head.send_if_modified(|h| {
        if last > *h {
            *h = last;
            true
        } else {
            false
        }
    });
}

fn payload_bytes(r: &AppendRequest) -> usize {
    r.streams
        .iter()
        .flat_map(|s| &s.events)
        .map(|e| e.payload.len())
        .sum()
}

struct BatchError {
    error: String,
    /// A constraint (SQLSTATE class 23) refused a row.
    integrity: bool,
    /// Which constraint, when PostgreSQL says, and its detail ("Key (…)=(…) already exists.").
    constraint: Option<String>,
    detail: Option<String>,
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        let integrity = e.code().is_some_and(|c| c.code().starts_with("23"));
        BatchError {
            error: describe(&e),
            integrity,
            constraint: e
                .as_db_error()
                .and_then(|d| d.constraint())
                .map(str::to_owned),
            detail: e.as_db_error().and_then(|d| d.detail()).map(str::to_owned),
        }
    }
}

impl From<String> for BatchError {
    fn from(error: String) -> Self {
        BatchError {
            error,
            integrity: false,
            constraint: None,
            detail: None,
        }
    }
}

/// The last event of the log as the writer sees it under the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub position: u64,
    pub hash: Hash,
    pub recorded_at: Option<DateTime<Utc>>,
}

impl Tail {
    pub const EMPTY: Tail = Tail {
        position: 0,
        hash: GENESIS_HASH,
        recorded_at: None,
    };
}

/// What one batch will write and answer, computed without I/O from what was read under the
/// lock.
#[derive(Debug)]
pub struct Plan {
    pub rows: Vec<EventEnvelope>,
    /// New command outcomes to record (deduplicated = false).
    pub commands: Vec<AppendOutcome>,
    pub command_ids: Vec<Uuid>,
    /// One answer per request, in order.
    pub results: Vec<Result<AppendOutcome, AppendError>>,
    pub recorded_at: DateTime<Utc>,
}

/// Applies the batch's requests in order against the state read under the lock: answers known
/// command ids (also repeats inside this batch), checks expected versions as earlier requests
/// advance them, assigns positions and chains hashes. A conflicting request writes nothing and
/// does not affect the others.
pub fn plan(
    requests: Vec<AppendRequest>,
    tail: Tail,
    now: DateTime<Utc>,
    mut known: HashMap<Uuid, AppendOutcome>,
    mut versions: HashMap<String, u64>,
) -> Plan {
    // Never before the previous event: the log's time must not run backwards even if clocks
    // of different hosts (or NTP steps) disagree.
    let now = truncate_to_micros(now);
    let recorded_at = tail.recorded_at.map_or(now, |t| now.max(t));
    let mut position = tail.position;
    let mut prev_hash = tail.hash;
    let mut plan = Plan {
        rows: Vec::new(),
        commands: Vec::new(),
        command_ids: Vec::new(),
        results: Vec::with_capacity(requests.len()),
        recorded_at,
    };
    for request in requests {
        let command_id = request.command_id();
        if let Some(done) = known.get(&command_id) {
            plan.results.push(Ok(AppendOutcome {
                deduplicated: true,
                ..done.clone()
            }));
            continue;
        }
        let conflict = request.streams.iter().find_map(|s| {
            let actual = versions.get(s.stream.as_str()).copied().unwrap_or(0);
            (!s.expected.matches(actual)).then(|| AppendError::Conflict {
                stream: s.stream.clone(),
                expected: s.expected,
                actual,
            })
        });
        if let Some(c) = conflict {
            plan.results.push(Err(c));
            continue;
        }
        let first_position = position + 1;
        let mut streams = Vec::with_capacity(request.streams.len());
        for s in request.streams {
            let mut version = versions.get(s.stream.as_str()).copied().unwrap_or(0);
            let first_version = version + 1;
            for e in s.events {
                version += 1;
                position += 1;
                let env = EventEnvelope::seal(
                    e,
                    s.stream.clone(),
                    version,
                    position,
                    request.metadata.clone(),
                    recorded_at,
                    prev_hash,
                );
                prev_hash = env.hash;
                plan.rows.push(env);
            }
            versions.insert(s.stream.as_str().to_owned(), version);
            streams.push(StreamOutcome {
                stream: s.stream,
                first_version,
                last_version: version,
            });
        }
        let outcome = AppendOutcome {
            first_position,
            last_position: position,
            streams,
            deduplicated: false,
        };
        known.insert(command_id, outcome.clone());
        plan.commands.push(outcome.clone());
        plan.command_ids.push(command_id);
        plan.results.push(Ok(outcome));
    }
    plan
}

pub(crate) fn to_i64(v: u64) -> i64 {
    // Positions and versions are counts of rows; they cannot reach 2^63.
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(what: &str, v: i64) -> Result<u64, BatchError> {
    u64::try_from(v).map_err(|_| BatchError::from(format!("negative {what} in the log: {v}")))
}

/// Writes one batch in one transaction. Returns each request's answer and the new head.
async fn write_batch(
    c: &WriterConn,
    requests: Vec<AppendRequest>,
) -> Result<(Vec<Result<AppendOutcome, AppendError>>, u64), BatchError> {
    let s = &c.stmts;
    let client = &c.client;
    let mut command_ids: Vec<Uuid> = requests.iter().map(|r| r.command_id()).collect();
    command_ids.sort_unstable();
    command_ids.dedup();
    let stream_ids: Vec<&str> = {
        let mut seen = HashSet::new();
        requests
            .iter()
            .flat_map(|r| &r.streams)
            .map(|s| s.stream.as_str())
            .filter(|id| seen.insert(*id))
            .collect()
    };

    // Round trip 1, pipelined: every statement is sent before any answer is awaited; the
    // server runs them in order, so the reads happen after the lock is held.
    let lock_params: [&(dyn ToSql + Sync); 1] = [&APPEND_LOCK_KEY];
    let command_params: [&(dyn ToSql + Sync); 1] = [&command_ids];
    let version_params: [&(dyn ToSql + Sync); 1] = [&stream_ids];
    let (begin, lock, tail, known, versions) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.execute(&s.lock, &lock_params),
        client.query_one(&s.tail, &[]),
        client.query(&s.commands, &command_params),
        client.query(&s.versions, &version_params),
    );
    begin?;
    lock?;
    let tail = tail?;
    let (known, versions) = (known?, versions?);

    let now: DateTime<Utc> = tail.try_get(0)?;
    let tail = match tail.try_get::<_, Option<i64>>(1)? {
        None => Tail::EMPTY,
        Some(p) => {
            let hash: &[u8] = tail.try_get(2)?;
            Tail {
                position: from_i64("global_position", p)?,
                hash: Hash::from_slice(hash)
                    .ok_or_else(|| format!("the hash at the tail ({p}) is not 32 bytes"))?,
                recorded_at: Some(tail.try_get(3)?),
            }
        }
    };
    let mut known_map = HashMap::with_capacity(known.len());
    for row in known {
        let id: Uuid = row.try_get(0)?;
        let streams: String = row.try_get(3)?;
        let streams: Vec<StreamOutcome> = serde_json::from_str(&streams)
            .map_err(|e| format!("stored outcome of command {id} is unreadable: {e}"))?;
        known_map.insert(
            id,
            AppendOutcome {
                first_position: from_i64("first_position", row.try_get(1)?)?,
                last_position: from_i64("last_position", row.try_get(2)?)?,
                streams,
                deduplicated: false,
            },
        );
    }
    let mut version_map = HashMap::with_capacity(versions.len());
    for row in versions {
        let id: String = row.try_get(0)?;
        let v: Option<i64> = row.try_get(1)?;
        version_map.insert(id, from_i64("stream_version", v.unwrap_or(0))?);
    }

    let plan = plan(requests, tail, now, known_map, version_map);
    let head = plan
        .rows
        .last()
        .map_or(tail.position, |e| e.global_position);

    if plan.rows.is_empty() {
        // Nothing new (all conflicts or repeats): end the transaction, releasing the lock.
        client.batch_execute("COMMIT").await?;
        return Ok((plan.results, head));
    }

    // Round trip 2, pipelined: insert events, insert outcomes, notify, commit.
    let rows = &plan.rows;
    let positions: Vec<i64> = rows.iter().map(|e| to_i64(e.global_position)).collect();
    let streams: Vec<&str> = rows.iter().map(|e| e.stream_id.as_str()).collect();
    let versions: Vec<i64> = rows.iter().map(|e| to_i64(e.stream_version)).collect();
    let event_ids: Vec<Uuid> = rows.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = rows.iter().map(|e| e.event_type.as_str()).collect();
    let schemas: Vec<i32> = rows
        .iter()
        .map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX))
        .collect();
    let payloads: Vec<&str> = rows.iter().map(|e| e.payload.as_str()).collect();
    let actors: Vec<&str> = rows.iter().map(|e| e.metadata.actor_id.as_str()).collect();
    let roles: Vec<&str> = rows
        .iter()
        .map(|e| e.metadata.actor_role.as_str())
        .collect();
    let cmds: Vec<Uuid> = rows.iter().map(|e| e.metadata.command_id).collect();
    let corrs: Vec<Uuid> = rows.iter().map(|e| e.metadata.correlation_id).collect();
    let causes: Vec<Uuid> = rows.iter().map(|e| e.metadata.causation_id).collect();
    let patches: Vec<Option<Uuid>> = rows.iter().map(|e| e.metadata.patch_id).collect();
    let addrs: Vec<Option<&str>> = rows
        .iter()
        .map(|e| e.metadata.client_addr.as_deref())
        .collect();
    let prevs: Vec<&[u8]> = rows.iter().map(|e| &e.prev_hash.0[..]).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|e| &e.hash.0[..]).collect();

    let firsts: Vec<i64> = plan
        .commands
        .iter()
        .map(|o| to_i64(o.first_position))
        .collect();
    let lasts: Vec<i64> = plan
        .commands
        .iter()
        .map(|o| to_i64(o.last_position))
        .collect();
    let outcome_streams: Vec<String> = plan
        .commands
        .iter()
        .map(|o| serde_json::to_string(&o.streams))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot encode an outcome: {e}"))?;
    let head_text = head.to_string();

    let event_params: [&(dyn ToSql + Sync); 17] = [
        &positions,
        &streams,
        &versions,
        &event_ids,
        &types,
        &schemas,
        &payloads,
        &actors,
        &roles,
        &cmds,
        &corrs,
        &causes,
        &patches,
        &addrs,
        &plan.recorded_at,
        &prevs,
        &hashes,
    ];
    let command_params: [&(dyn ToSql + Sync); 5] = [
        &plan.command_ids,
        &firsts,
        &lasts,
        &outcome_streams,
        &plan.recorded_at,
    ];
    let notify_params: [&(dyn ToSql + Sync); 2] = [&NOTIFY_CHANNEL, &head_text];
    let (events, commands, notify, commit) = tokio::join!(
        client.execute(&s.insert_events, &event_params),
        client.execute(&s.insert_commands, &command_params),
        client.execute(&s.notify, &notify_params),
        client.batch_execute("COMMIT"),
    );
    // The first failure is the cause; later ones are "transaction is aborted". A failed
    // statement makes COMMIT roll back, so an error here means nothing was written — except a
    // COMMIT that failed in transit, whose outcome is unknown: callers get Unavailable either
    // way, and retrying with the same command id is safe.
    events?;
    commands?;
    notify?;
    commit?;
    Ok((plan.results, head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExpectedVersion, StreamAppend};
    use mykey_schemas::{EventMetadata, NewEvent, StreamId};

    fn meta(cmd: u128) -> EventMetadata {
        EventMetadata {
            actor_id: "op".into(),
            actor_role: "operator".into(),
            command_id: Uuid::from_u128(cmd),
            correlation_id: Uuid::from_u128(1),
            causation_id: Uuid::from_u128(1),
            patch_id: None,
            client_addr: None,
        }
    }

    fn req(cmd: u128, stream: &str, expected: ExpectedVersion, n: usize) -> AppendRequest {
        AppendRequest {
            metadata: meta(cmd),
            streams: vec![StreamAppend {
                stream: StreamId::parse(stream).unwrap_or_else(|e| panic!("{e}")),
                expected,
                events: (0..n)
                    .map(|i| NewEvent {
                        event_id: Uuid::new_v4(),
                        event_type: "Happened".into(),
                        schema_version: 1,
                        payload: format!("{{\"i\":{i}}}"),
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_batch_tracks_versions_and_repeats_in_order() {
        let batch = vec![
            req(1, "a-1", ExpectedVersion::NoStream, 2),
            // Sees a-1 at version 2, written by the request before it in the same batch.
            req(2, "a-1", ExpectedVersion::Exact(2), 1),
            // Conflicts: a-1 is now at 3. Writes nothing; the rest proceeds.
            req(3, "a-1", ExpectedVersion::Exact(2), 1),
            // A repeat of command 1 inside the batch: its first outcome, deduplicated.
            req(1, "a-1", ExpectedVersion::NoStream, 2),
            req(4, "b-1", ExpectedVersion::Exact(5), 1),
        ];
        let now = DateTime::from_timestamp_micros(1_000).unwrap_or_default();
        let later = DateTime::from_timestamp_micros(2_000).unwrap_or_default();
        let tail = Tail {
            position: 10,
            hash: Hash([7; 32]),
            recorded_at: Some(later),
        };
        let versions = HashMap::from([("b-1".to_owned(), 5)]);
        let p = plan(batch, tail, now, HashMap::new(), versions);
        assert_eq!(p.recorded_at, later, "time never runs backwards");
        assert_eq!(p.rows.len(), 4);
        assert_eq!(p.rows[0].prev_hash, Hash([7; 32]));
        assert_eq!(p.rows[1].prev_hash, p.rows[0].hash);
        let positions: Vec<u64> = p.rows.iter().map(|e| e.global_position).collect();
        assert_eq!(positions, vec![11, 12, 13, 14]);
        let first = p.results[0].as_ref().map(|o| o.clone()).ok();
        assert!(matches!(&p.results[1], Ok(o) if o.streams[0].first_version == 3));
        assert!(matches!(
            &p.results[2],
            Err(AppendError::Conflict {
                actual: 3,
                expected: ExpectedVersion::Exact(2),
                ..
            })
        ));
        match (&p.results[3], first) {
            (Ok(o), Some(f)) => {
                assert!(o.deduplicated);
                assert_eq!(o.first_position, f.first_position);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&p.results[4], Ok(o) if o.streams[0].first_version == 6));
        assert_eq!(p.command_ids.len(), 3);
    }
}
