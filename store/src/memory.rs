//! An in-memory event log with the same contract as the PostgreSQL one, for unit tests of
//! command handlers. One mutex serialises appends, which gives the same order guarantees
//! the PostgreSQL log gets from its advisory lock.

use crate::{
    AppendError, AppendOutcome, AppendRequest, EventStore, StoreError, StreamOutcome, Subscription,
    MAX_READ_PAGE,
};
use chrono::{DateTime, Utc};
use mykey_schemas::{EventEnvelope, StreamId, GENESIS_HASH};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

#[derive(Debug, Default)]
struct Log {
    events: Vec<EventEnvelope>,
    /// Per stream, the indexes of its events in `events`; versions are dense, so its
    /// length is the stream's version.
    stream_positions: HashMap<StreamId, Vec<usize>>,
    commands: HashMap<Uuid, AppendOutcome>,
    event_ids: std::collections::HashSet<Uuid>,
}

/// Cloning shares the same log.
#[derive(Clone)]
pub struct InMemoryStore {
    log: Arc<Mutex<Log>>,
    head: watch::Sender<u64>,
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl Log {
    fn version_of(&self, stream: &StreamId) -> u64 {
        self.stream_positions
            .get(stream)
            .map_or(0, |v| v.len() as u64)
    }
}

impl std::fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        InMemoryStore::new()
    }
}

impl InMemoryStore {
    pub fn new() -> InMemoryStore {
        InMemoryStore::with_clock(Utc::now)
    }

    /// A store whose `recorded_at` comes from `clock` (for deterministic tests).
    pub fn with_clock(clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> InMemoryStore {
        InMemoryStore {
            log: Arc::new(Mutex::new(Log::default())),
            head: watch::channel(0).0,
            clock: Arc::new(clock),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave a half-applied append (events are pushed
        // only after every check), so the data is still consistent.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every event, in global order (tests and tamper simulations).
    pub fn all_events(&self) -> Vec<EventEnvelope> {
        self.lock().events.clone()
    }

    fn append_locked(
        log: &mut Log,
        request: AppendRequest,
        now: DateTime<Utc>,
    ) -> Result<AppendOutcome, AppendError> {
        if let Some(done) = log.commands.get(&request.command_id()) {
            return Ok(AppendOutcome {
                deduplicated: true,
                ..done.clone()
            });
        }
        if let Some(e) = request
            .streams
            .iter()
            .flat_map(|s| &s.events)
            .find(|e| log.event_ids.contains(&e.event_id))
        {
            return Err(AppendError::EventIdReused(e.event_id));
        }
        for s in &request.streams {
            let actual = log.version_of(&s.stream);
            if !s.expected.matches(actual) {
                return Err(AppendError::Conflict {
                    stream: s.stream.clone(),
                    expected: s.expected,
                    actual,
                });
            }
        }
        let recorded_at = log
            .events
            .last()
            .map_or(now, |last| now.max(last.recorded_at));
        let first_position = log.events.len() as u64 + 1;
        let mut streams = Vec::with_capacity(request.streams.len());
        for s in request.streams {
            let mut version = log.version_of(&s.stream);
            let first_version = version + 1;
            for e in s.events {
                version += 1;
                let prev_hash = log.events.last().map_or(GENESIS_HASH, |l| l.hash);
                let position = log.events.len() as u64 + 1;
                let env = EventEnvelope::seal(
                    e,
                    s.stream.clone(),
                    version,
                    position,
                    request.metadata.clone(),
                    recorded_at,
                    prev_hash,
                );
                log.stream_positions
                    .entry(s.stream.clone())
                    .or_default()
                    .push(log.events.len());
                log.event_ids.insert(env.event_id);
                log.events.push(env);
            }
            streams.push(StreamOutcome {
                stream: s.stream,
                first_version,
                last_version: version,
            });
        }
        let outcome = AppendOutcome {
            first_position,
            last_position: log.events.len() as u64,
            streams,
            deduplicated: false,
        };
        log.commands
            .insert(request.metadata.command_id, outcome.clone());
        Ok(outcome)
    }
}

impl EventStore for InMemoryStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        request.validate()?;
        let now = (self.clock)();
        let outcome = {
            let mut log = self.lock();
            Self::append_locked(&mut log, request, now)?
        };
        // send_modify: holding a borrow() guard while sending would deadlock the watch lock.
        self.head
            .send_modify(|h| *h = (*h).max(outcome.last_position));
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let log = self.lock();
        let Some(idx) = log.stream_positions.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(idx
            .iter()
            .skip(skip)
            .take(limit.min(MAX_READ_PAGE))
            .map(|&i| log.events[i].clone())
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let log = self.lock();
        let skip = from_position.saturating_sub(1) as usize;
        Ok(log
            .events
            .iter()
            .skip(skip)
            .take(limit.min(MAX_READ_PAGE))
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.lock().events.len() as u64)
    }

    fn subscribe(&self, from_position: u64) -> Subscription {
        let (tx, rx) = mpsc::channel(crate::SUBSCRIPTION_BUFFER);
        let store = self.clone();
        let mut head = self.head.subscribe();
        tokio::spawn(async move {
            let mut next = from_position.max(1);
            loop {
                let page = match store.read_all(next, MAX_READ_PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if page.is_empty() {
                    if head.wait_for(|h| *h >= next).await.is_err() {
                        return;
                    }
                    continue;
                }
                for e in page {
                    next = e.global_position + 1;
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}
