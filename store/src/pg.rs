//! The PostgreSQL event log. (Placeholder: replaced by the real implementation.)

use crate::{AppendError, AppendOutcome, AppendRequest, EventStore, StoreError, Subscription};
use mykey_schemas::{EventEnvelope, StreamId};

#[derive(Debug, Clone, Default)]
pub struct PgStoreOptions {}

#[derive(Debug, Clone)]
pub struct PgEventStore {}

impl PgEventStore {
    pub async fn connect(
        _config: tokio_postgres::Config,
        _options: PgStoreOptions,
    ) -> Result<PgEventStore, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
}

impl EventStore for PgEventStore {
    async fn append(&self, _r: AppendRequest) -> Result<AppendOutcome, AppendError> {
        Err(StoreError::Unavailable("not implemented".into()).into())
    }
    async fn read_stream(
        &self,
        _s: &StreamId,
        _f: u64,
        _l: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
    async fn read_all(&self, _f: u64, _l: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
    async fn head(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
    fn subscribe(&self, _from: u64) -> Subscription {
        tokio::sync::mpsc::channel(1).1
    }
}
