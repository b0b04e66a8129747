//! Command handlers: load a stream, decide on fresh state, append with the expected version,
//! and retry a bounded number of times on a version conflict.
//!
//! Everything goes through [`Commands`], which holds the event store, a clock and an id source
//! (the domain has neither). Every command carries a [`CommandMeta`] (actor, role, command,
//! correlation and causation ids) which becomes the [`EventMetadata`] of every event it appends.
//!
//! Promises:
//! - a new stream is appended with `ExpectedVersion::NoStream`, an existing one with
//!   `Exact(version read)`; on `AppendError::Conflict` the handler re-reads and re-decides,
//!   at most [`MAX_ATTEMPTS`] times in all;
//! - repeating a command id is idempotent: the store deduplicates the append, and a handler
//!   that finds its own command id already in the stream returns without deciding again;
//! - decisions spanning aggregates (login, renewal, PPID revocation, data patches) are one
//!   multi-stream append: all or nothing;
//! - a command reports the global position it wrote ([`Executed::position`], the position
//!   `revoke_ppid` returns): the last event of its append, taken from the store's
//!   [`AppendOutcome`]; a repeated command id reports the first run's position, so an HTTP
//!   retry answers the same `position` as the first answer;
//! - errors separate business refusals ([`CommandError::Domain`], stable code) from
//!   infrastructure failures.
//!
//! # API used by the login endpoint (see also `API_FOR_LOGIN.md`)
//! ```text
//! Commands::new(store)                                   system clock, random ids
//! cmds.register_login(&meta, &cert, &rp_id)            -> Result<LoginResult, CommandError>
//! cmds.resolve_certificate(&cert)                      -> Result<Option<SubjectId>, CommandError>
//! cmds.load_certificate(&cert)                         -> Result<CertificateState, CommandError>
//! cmds.active_ppid(subject, &rp_id)                    -> Result<Option<Ppid>, CommandError>
//! cmds.load_subject(subject) / cmds.load_ppid(&ppid)
//! cmds.link_renewal(&meta, &old_cert, &new_cert)       -> Result<RenewalLinked { subject, position }, _>
//! cmds.mark_certificate_revoked(&meta, &cert, reason)  -> Result<u64 (position), CommandError>
//! cmds.revoke_ppid(&meta, &ppid)                       -> Result<u64 (position), CommandError>
//! cmds.register_relying_party(&meta, RegisterRelyingParty { .. }) -> Result<Executed<RelyingPartyState>, _>
//! cmds.rotate_relying_party_key(&meta, &rp_id, jwk)    -> Result<Executed<RelyingPartyState>, _>
//! cmds.suspend_relying_party(&meta, &rp_id, reason) / resume_relying_party / retire_relying_party
//! cmds.load_relying_party(&rp_id)                      -> Result<Option<RelyingPartyState>, _>
//! ```
//!
//! # Other handlers (each returns `Executed { state, version, position, appended, deduplicated }`)
//! ```text
//! programs:      create_program(&meta, CreateProgram{..}), extend_program, pause_program,
//!                resume_program, close_program, load_program
//! applications:  submit_application(&meta, subject, &program, &psp), link_payment_service,
//!                record_review(.., ReviewOutcome), grant_points, unlink_payment_service,
//!                record_reversal_paid, report_grant_failed,
//!                load_application
//! data patches:  request_patch(&meta, RequestPatch{..}), dry_run_patch, approve_patch,
//!                reject_patch, apply_patch, expire_patch, load_patch
//! notices:       schedule_maintenance, update_maintenance, cancel_maintenance, load_notice
//! test cards:    register_test_card, lend_test_card, return_test_card,
//!                check_test_card_inventory, report_test_card_lost, load_test_card
//! generic:       execute::<A: Aggregate>(&meta, id, command)
//! ```
//! `cert` is a [`CertificateRef`] (`CertificateRef::new(issuer, serial_hex)`).

pub mod application;
pub mod identity;
pub mod maintenance;
pub mod patch;
pub mod program;
pub mod relying_party;
pub mod test_card;
pub mod testing;

use chrono::{DateTime, Utc};
use mykey_domain::{Actor, Aggregate, Context, IdSource};
use mykey_schemas::{
    EnvelopeError, EventCodec, EventEnvelope, EventMetadata, NewEvent, SchemaError, StreamId,
};
use mykey_store::{
    read_full_stream, AppendError, AppendOutcome, AppendRequest, EventStore, ExpectedVersion,
    StoreError, StreamAppend,
};
use std::fmt;
use std::sync::Arc;
use uuid::Uuid;

pub use identity::{LoginResult, RenewalLinked};
pub use mykey_domain::certificate::{CertificateRef, CertificateState};
pub use mykey_domain::relying_party::{RelyingPartyState, RpKind, RpStatus};
pub use mykey_domain::{DomainError, ErrorCode, Ppid, RelyingPartyId, Role, SubjectId};
pub use patch::RequestPatch;
pub use program::CreateProgram;
pub use relying_party::RegisterRelyingParty;

/// Attempts per command (the first try plus retries after a version conflict). Each conflict
/// means another writer won the race on the same stream; five in a row means heavy contention
/// on one aggregate, which a caller should see rather than wait through.
pub const MAX_ATTEMPTS: u32 = 5;

/// Who issues a command, and the ids that tie it to its request and cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMeta {
    pub actor_id: String,
    pub role: Role,
    /// Idempotency key: repeating it never appends twice.
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub client_addr: Option<String>,
}

impl CommandMeta {
    /// A command that starts its own workflow: correlation and causation are the command id.
    pub fn new(actor_id: impl Into<String>, role: Role, command_id: Uuid) -> CommandMeta {
        CommandMeta {
            actor_id: actor_id.into(),
            role,
            command_id,
            correlation_id: command_id,
            causation_id: command_id,
            client_addr: None,
        }
    }

    /// The same request's correlation id and the message that caused this command.
    pub fn caused_by(mut self, correlation_id: Uuid, causation_id: Uuid) -> CommandMeta {
        self.correlation_id = correlation_id;
        self.causation_id = causation_id;
        self
    }

    pub fn from_addr(mut self, addr: impl Into<String>) -> CommandMeta {
        self.client_addr = Some(addr.into());
        self
    }

    /// The metadata stored on every event this command appends.
    pub fn event_metadata(&self, patch_id: Option<Uuid>) -> EventMetadata {
        EventMetadata {
            actor_id: self.actor_id.clone(),
            actor_role: self.role.label().to_owned(),
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            patch_id,
            client_addr: self.client_addr.clone(),
        }
    }

    fn actor(&self) -> Actor {
        Actor {
            id: self.actor_id.clone(),
            role: self.role.clone(),
        }
    }
}

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A business rule refused it; nothing was written. Maps to 4xx with `code()`.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Every attempt lost a version race. Safe to retry with the same command id.
    #[error("gave up after {attempts} version conflicts on {stream}")]
    Contention { stream: StreamId, attempts: u32 },
    /// The store refused the append for a reason other than a version conflict (a bug here,
    /// e.g. an oversized payload).
    #[error("append refused: {0}")]
    Append(AppendError),
    /// The store failed; the outcome of an append may be unknown. Safe to retry with the same
    /// command id.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be read back (or an event could not be encoded).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

impl CommandError {
    /// Stable machine code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Domain(e) => e.code(),
            CommandError::Contention { .. } => "CONTENTION",
            CommandError::Append(e) => e.code(),
            CommandError::Store(e) => e.code(),
            CommandError::Schema(e) => e.code(),
            CommandError::Envelope(e) => e.code(),
        }
    }

    /// The domain error, when it is one.
    pub fn domain(&self) -> Option<&DomainError> {
        match self {
            CommandError::Domain(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AppendError> for CommandError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Store(s) => CommandError::Store(s),
            AppendError::Envelope(s) => CommandError::Envelope(s),
            other => CommandError::Append(other),
        }
    }
}

/// The store deduplicated an append whose command id names a different command.
pub(crate) fn command_id_reused(meta: &CommandMeta) -> CommandError {
    CommandError::Domain(DomainError::new(
        ErrorCode::COMMAND_ID_REUSED,
        format!(
            "command id {} was already used for a different command",
            meta.command_id
        ),
    ))
}

/// What a single-aggregate command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<S> {
    /// The state after the decided events: what the handler decided on, evolved.
    pub state: S,
    /// The stream's version after the command (0: the stream does not exist).
    pub version: u64,
    /// The global position of the last event the command wrote: from this call's append, or
    /// the first run's when `deduplicated`. A command that decided nothing new reports the
    /// position of the last event of the stream it decided on (0: no stream), which a read
    /// with that `min_position` reflects as well.
    pub position: u64,
    /// Events appended by this call (0 when the decision was a no-op or a repeat).
    pub appended: usize,
    /// True when this command id had already been applied.
    pub deduplicated: bool,
}

/// An aggregate's stream as read now.
#[derive(Debug, Clone)]
pub struct Loaded<A: Aggregate> {
    pub stream: StreamId,
    pub state: A::State,
    /// Last version read (0: no stream).
    pub version: u64,
    /// Global position of the stream's last event (0: no stream).
    pub position: u64,
    /// The given command id already appended to this stream.
    pub seen_command: bool,
    /// Global position of the last event the given command id appended to this stream.
    pub command_position: Option<u64>,
}

impl<A: Aggregate> Loaded<A> {
    pub fn expected(&self) -> ExpectedVersion {
        expected(self.version)
    }
}

pub(crate) fn expected(version: u64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

/// The stream id of aggregate `A` with id `id`.
pub fn stream_of<A: Aggregate>(id: impl fmt::Display) -> Result<StreamId, CommandError> {
    Ok(StreamId::new(A::CATEGORY, id)?)
}

#[derive(Clone)]
struct Ids(Arc<dyn Fn() -> Uuid + Send + Sync>);

impl IdSource for Ids {
    fn next_uuid(&self) -> Uuid {
        (self.0)()
    }
}

/// One attempt's append failed with a version conflict (retry) or otherwise (give up).
enum AttemptError {
    Conflict(StreamId),
    Fatal(CommandError),
}

/// The command handlers over one event store.
pub struct Commands<S> {
    store: S,
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    /// Ids of new things (subjects, PPIDs, ...): random, because a PPID must not reveal when
    /// it was issued.
    ids: Ids,
    /// Ids of new events: UUID v7 (time-ordered, as the envelope specifies), which also keeps
    /// the log's `event_id` index appending at its right edge instead of splitting at random.
    event_ids: Ids,
    patch_ttl: chrono::Duration,
}

impl<S> fmt::Debug for Commands<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

impl<S: EventStore> Commands<S> {
    /// Handlers with the system clock, random (v4) entity ids and time-ordered (v7) event ids.
    pub fn new(store: S) -> Commands<S> {
        let mut c = Commands::with_env(store, Utc::now, Uuid::new_v4);
        c.event_ids = Ids(Arc::new(Uuid::now_v7));
        c
    }

    /// Handlers with an injected clock and id source (tests, replays).
    pub fn with_env(
        store: S,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
        ids: impl Fn() -> Uuid + Send + Sync + 'static,
    ) -> Commands<S> {
        // One injected source for both, so tests stay deterministic.
        let ids = Ids(Arc::new(ids));
        Commands {
            store,
            clock: Arc::new(clock),
            event_ids: ids.clone(),
            ids,
            patch_ttl: patch::DEFAULT_PATCH_TTL,
        }
    }

    /// How long a requested data patch stays valid before it expires.
    pub fn with_patch_ttl(mut self, ttl: chrono::Duration) -> Commands<S> {
        self.patch_ttl = ttl;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub(crate) fn context(&self, meta: &CommandMeta, patch_id: Option<Uuid>) -> Context<'_> {
        Context {
            now: self.now(),
            actor: meta.actor(),
            ids: &self.ids,
            patch_id,
        }
    }

    /// Reads and folds one aggregate's stream, upcasting older event versions.
    pub async fn load<A>(
        &self,
        stream: &StreamId,
        command_id: Option<Uuid>,
    ) -> Result<Loaded<A>, CommandError>
    where
        A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
    {
        let envelopes = read_full_stream(&self.store, stream).await?;
        Self::fold(stream, &envelopes, command_id)
    }

    /// [`Commands::load`] of two aggregates' streams in one read of the log.
    pub(crate) async fn load_two<A, B>(
        &self,
        a: &StreamId,
        b: &StreamId,
    ) -> Result<(Loaded<A>, Loaded<B>), CommandError>
    where
        A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
        B: Aggregate + EventCodec<DomainEvent = <B as Aggregate>::Event>,
    {
        let read = self.store.read_streams(&[a.clone(), b.clone()]).await?;
        let (Some(a_events), Some(b_events)) = (read.first(), read.get(1)) else {
            return Err(StoreError::Unavailable(
                "read_streams answered fewer streams than asked".into(),
            )
            .into());
        };
        Ok((
            Self::fold(a, a_events, None)?,
            Self::fold(b, b_events, None)?,
        ))
    }

    /// An aggregate's state from its stream's events; `seen_command` tells whether
    /// `command_id` already wrote to it.
    fn fold<A>(
        stream: &StreamId,
        envelopes: &[EventEnvelope],
        command_id: Option<Uuid>,
    ) -> Result<Loaded<A>, CommandError>
    where
        A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
    {
        let mut state = A::State::default();
        let mut command_position = None;
        for env in envelopes {
            let event = A::decode(&env.event_type, env.schema_version, &env.payload)?;
            state = A::evolve(state, &event);
            if Some(env.metadata.command_id) == command_id {
                command_position = Some(env.global_position);
            }
        }
        Ok(Loaded {
            stream: stream.clone(),
            state,
            version: envelopes.last().map_or(0, |e| e.stream_version),
            position: envelopes.last().map_or(0, |e| e.global_position),
            seen_command: command_position.is_some(),
            command_position,
        })
    }

    /// Encodes domain events into new stored events with fresh ids.
    pub(crate) fn encode<A>(
        &self,
        events: &[<A as Aggregate>::Event],
    ) -> Result<Vec<NewEvent>, CommandError>
    where
        A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
    {
        events
            .iter()
            .map(|e| {
                let enc = A::encode(e)?;
                Ok(NewEvent {
                    event_id: self.event_ids.next_uuid(),
                    event_type: enc.event_type.to_owned(),
                    schema_version: enc.schema_version,
                    payload: enc.payload,
                })
            })
            .collect()
    }

    /// The stream append for `events` on top of `loaded` (None when there is nothing to add).
    pub(crate) fn stream_append<A>(
        &self,
        loaded: &Loaded<A>,
        events: &[<A as Aggregate>::Event],
    ) -> Result<Option<StreamAppend>, CommandError>
    where
        A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
    {
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(StreamAppend {
            stream: loaded.stream.clone(),
            expected: loaded.expected(),
            events: self.encode::<A>(events)?,
        }))
    }

    /// Appends one command's streams; a version conflict is reported for a retry.
    async fn try_append(
        &self,
        meta: &CommandMeta,
        patch_id: Option<Uuid>,
        streams: Vec<StreamAppend>,
    ) -> Result<AppendOutcome, AttemptError> {
        let request = AppendRequest {
            metadata: meta.event_metadata(patch_id),
            streams,
        };
        match self.store.append(request).await {
            Ok(o) => Ok(o),
            Err(AppendError::Conflict { stream, .. }) => Err(AttemptError::Conflict(stream)),
            Err(e) => Err(AttemptError::Fatal(e.into())),
        }
    }

    /// Refuses any command issued by a relying party that is suspended, retired or unknown.
    pub(crate) async fn guard_acting_rp(&self, meta: &CommandMeta) -> Result<(), CommandError> {
        if let Role::RelyingParty(id) = &meta.role {
            let rp = self.load_relying_party(id).await?;
            mykey_domain::relying_party::ensure_active(&rp, id)?;
        }
        Ok(())
    }

    /// Runs one command against one aggregate: load, decide, append, retry on conflict.
    pub async fn execute<A>(
        &self,
        meta: &CommandMeta,
        id: impl fmt::Display,
        command: A::Command,
    ) -> Result<Executed<A::State>, CommandError>
    where
        A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
        A::Command: Clone,
    {
        let stream = stream_of::<A>(id)?;
        self.guard_acting_rp(meta).await?;
        self.execute_on::<A, _, _>(meta, &stream, None, || {
            let c = command.clone();
            async move { Ok(c) }
        })
        .await
    }

    /// Like [`Commands::execute`], with the command built afresh on every attempt (for
    /// commands that carry other aggregates' state, which must be re-read on a retry).
    pub(crate) async fn execute_on<A, F, Fut>(
        &self,
        meta: &CommandMeta,
        stream: &StreamId,
        patch_id: Option<Uuid>,
        mut build: F,
    ) -> Result<Executed<A::State>, CommandError>
    where
        A: Aggregate + EventCodec<DomainEvent = <A as Aggregate>::Event>,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<A::Command, CommandError>>,
    {
        let mut deduplicated_elsewhere = false;
        for _ in 0..MAX_ATTEMPTS {
            let loaded = self.load::<A>(stream, Some(meta.command_id)).await?;
            if let Some(position) = loaded.command_position {
                // A single-stream command's events are all in this stream.
                return Ok(Executed {
                    state: loaded.state,
                    version: loaded.version,
                    position,
                    appended: 0,
                    deduplicated: true,
                });
            }
            if deduplicated_elsewhere {
                return Err(command_id_reused(meta));
            }
            let command = build().await?;
            let events = {
                let ctx = self.context(meta, patch_id);
                A::decide(&loaded.state, command, &ctx)?
            };
            let state = events
                .iter()
                .fold(loaded.state.clone(), |s, e| A::evolve(s, e));
            let Some(append) = self.stream_append(&loaded, &events)? else {
                return Ok(Executed {
                    state,
                    version: loaded.version,
                    position: loaded.position,
                    appended: 0,
                    deduplicated: false,
                });
            };
            match self.try_append(meta, patch_id, vec![append]).await {
                // The store already had this command id, yet this stream did not show it:
                // either a twin request committed it just now (the re-read will show it), or
                // the id was used for a different command (refused on the next pass).
                Ok(outcome) if outcome.deduplicated => deduplicated_elsewhere = true,
                Ok(outcome) => {
                    return Ok(Executed {
                        state,
                        version: outcome
                            .streams
                            .first()
                            .map_or(loaded.version, |s| s.last_version),
                        position: outcome.last_position,
                        appended: events.len(),
                        deduplicated: false,
                    })
                }
                Err(AttemptError::Conflict(s)) => {
                    tracing::debug!(stream = %s, "version conflict, re-deciding");
                }
                Err(AttemptError::Fatal(e)) => return Err(e),
            }
        }
        Err(CommandError::Contention {
            stream: stream.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The global position of the last event `command_id` appended to any of `streams`
    /// (`None`: it appended to none of them). For a repeated multi-stream command, whose
    /// first run's position is no longer at hand.
    pub(crate) async fn command_position(
        &self,
        streams: &[StreamId],
        command_id: Uuid,
    ) -> Result<Option<u64>, CommandError> {
        let read = self.store.read_streams(streams).await?;
        Ok(read
            .iter()
            .flatten()
            .filter(|e| e.metadata.command_id == command_id)
            .map(|e| e.global_position)
            .max())
    }

    /// Appends a multi-stream decision, retrying `attempt` (which re-loads and re-decides)
    /// on a version conflict. `attempt` returns the streams to append (empty: nothing to do)
    /// and the value to hand back.
    pub(crate) async fn with_retry<T, F, Fut>(
        &self,
        meta: &CommandMeta,
        patch_id: Option<Uuid>,
        attempt: F,
    ) -> Result<T, CommandError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<StreamAppend>, T), CommandError>>,
    {
        Ok(self.with_retry_at(meta, patch_id, attempt).await?.0)
    }

    /// [`Commands::with_retry`], also answering the global position the append wrote (the
    /// first append's when the store deduplicated it); `None` when `attempt` found nothing to
    /// append.
    pub(crate) async fn with_retry_at<T, F, Fut>(
        &self,
        meta: &CommandMeta,
        patch_id: Option<Uuid>,
        mut attempt: F,
    ) -> Result<(T, Option<u64>), CommandError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<StreamAppend>, T), CommandError>>,
    {
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let (streams, value) = attempt().await?;
            if streams.is_empty() {
                return Ok((value, None));
            }
            match self.try_append(meta, patch_id, streams).await {
                Ok(outcome) if outcome.deduplicated => {
                    // Decide once more on what is now stored: a twin of this command committed
                    // it (nothing left to do), or the id belongs to a different command.
                    let (streams, value) = attempt().await?;
                    if streams.is_empty() {
                        return Ok((value, Some(outcome.last_position)));
                    }
                    return Err(command_id_reused(meta));
                }
                Ok(outcome) => return Ok((value, Some(outcome.last_position))),
                Err(AttemptError::Conflict(s)) => {
                    tracing::debug!(stream = %s, "version conflict, re-deciding");
                    last = Some(s);
                }
                Err(AttemptError::Fatal(e)) => return Err(e),
            }
        }
        match last {
            Some(stream) => Err(CommandError::Contention {
                stream,
                attempts: MAX_ATTEMPTS,
            }),
            None => Err(CommandError::Store(StoreError::Unavailable(
                "no attempt was made".into(),
            ))),
        }
    }
}
