//! An in-memory index in front of the `login_identity` read model (and, behind it, the write
//! model) for the two hot lookups of a login: relying party by id, and (certificate, RP) →
//! active PPID.
//!
//! Correctness: before every lookup the cache is brought up to the event log's current head
//! (one query for the events after the last one seen; any that could make an entry wrong
//! clears the affected map). So a request that starts after an event was
//! committed — a PPID revoked or invalidated, a certificate revoked, a relying party suspended
//! or its key rotated, by any instance or the CLI — never sees the state from before it.
//! An entry is inserted only if no invalidation happened while it was being loaded (epoch
//! check), so a slow load cannot resurrect a stale value. Negative answers are not cached.
//!
//! Misses: the read lookups (`relying_party`, `active_ppid`) are answered from the
//! `login_identity` read model ([`crate::read_model`]) once its serving schema holds the last
//! login event the sync saw — the same read-your-writes guarantee as the write model. When the
//! read model cannot answer (not serving, failed, behind after a bounded wait, query error)
//! the lookup falls back to the write model, with a WARN and
//! `mykey_login_identity_fallback_total{reason}`: a stuck projection slows misses, it does not
//! stop logins. Without a read model (the CLI, unit tests) misses go to the write model.
//! Decisions (`register_login`, relying-party commands, renewals, CRL marks) always go to the
//! write model: they need the aggregate, not a read model.
//!
//! Which events clear what is the login read model's decision, over typed events decoded by
//! `schemas` ([`LoginIdentity::invalidation`] in `projections`): no event type is named here.
//! An event of those categories that does not decode clears both maps (never a stale answer).

use super::identity::{
    CertificateRef, Identity, IdentityError, MarkedRevoked, RelyingParty, RelyingPartyId,
    RequestActor, RpStatus,
};
use crate::read_model::ReadModel;
use async_trait::async_trait;
use dashmap::DashMap;
use mykey_projections::models::login_identity::{self, Invalidation, LoginIdentity};
use mykey_store::EventStore;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// Entries per map. A cached login is ~300 bytes: 200k entries stay under ~60 MiB. When full
/// the map is cleared (the cache refills from the log); simpler than LRU and bounded.
pub const MAX_CACHED: usize = 200_000;

/// Events read per page while catching up.
const CATCH_UP_PAGE: usize = 1_000;

const NOT_SYNCED: u64 = u64::MAX;

tokio::task_local! {
    /// When the HTTP request being served arrived (see [`within_request`]).
    static REQUEST_ARRIVED: Instant;
}

/// Serves `request` as one request arriving now: every lookup it makes is answered from a
/// cache synced by a read that started after it arrived. That keeps the guarantee (nothing
/// committed before the request is missed) while an access-token check and the login that
/// follows share one read of the log instead of queueing for one each.
pub async fn within_request<F: std::future::Future>(request: F) -> F::Output {
    REQUEST_ARRIVED.scope(Instant::now(), request).await
}

pub struct CachedIdentity<I, S> {
    inner: I,
    store: S,
    /// Log position up to which invalidations have been applied.
    processed: AtomicU64,
    /// The last position at or before `processed` of an event in a login category (the
    /// position the read model must reach to answer as of `processed`: events of other
    /// categories change none of its tables).
    relevant: AtomicU64,
    /// Where misses of read lookups are answered; the write model (`inner`) when None.
    read_model: Option<ReadModel>,
    /// Serialises syncs.
    catch_up: tokio::sync::Mutex<()>,
    /// When the last completed sync's read *started*. Checked before queueing for `catch_up`.
    synced_as_of: std::sync::Mutex<Option<Instant>>,
    /// Bumped by every clear; loads insert only if it did not move.
    epoch: AtomicU64,
    rps: DashMap<RelyingPartyId, RelyingParty>,
    ppids: DashMap<(CertificateRef, RelyingPartyId), String>,
}

impl<I, S> std::fmt::Debug for CachedIdentity<I, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedIdentity")
            .field("rps", &self.rps.len())
            .field("ppids", &self.ppids.len())
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Unavailable(e.to_string())
}

impl<I: Identity, S: EventStore> CachedIdentity<I, S> {
    pub fn new(inner: I, store: S) -> Self {
        CachedIdentity {
            inner,
            store,
            processed: AtomicU64::new(NOT_SYNCED),
            relevant: AtomicU64::new(0),
            read_model: None,
            catch_up: tokio::sync::Mutex::new(()),
            synced_as_of: std::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            rps: DashMap::new(),
            ppids: DashMap::new(),
        }
    }

    /// Answers read misses from `read_model` (see the module docs).
    pub fn with_read_model(mut self, read_model: ReadModel) -> Self {
        self.read_model = Some(read_model);
        self
    }

    fn clear_rps(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.rps.clear();
    }

    fn clear_ppids(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.ppids.clear();
    }

    /// Applies every event committed before this call. Returns the epoch to tag loads with.
    ///
    /// Coalesced: a read that *started* after this call began already reflects every event
    /// committed before it, so concurrent callers share one query instead of each issuing
    /// their own (under load, one query per round trip serves every waiting request).
    async fn sync(&self) -> Result<u64, IdentityError> {
        let called = REQUEST_ARRIVED
            .try_with(|arrived| *arrived)
            .unwrap_or_else(|_| Instant::now());
        if self.synced_since(called) {
            return Ok(self.epoch.load(Ordering::Acquire));
        }
        let _serial = self.catch_up.lock().await;
        if self.synced_since(called) {
            return Ok(self.epoch.load(Ordering::Acquire));
        }
        let started = Instant::now();
        let mut done = self.processed.load(Ordering::Acquire);
        let mut relevant = self.relevant.load(Ordering::Acquire);
        if done == NOT_SYNCED {
            // Nothing is cached before the first sync: start at the head.
            done = self.store.head().await.map_err(unavailable)?;
            relevant = done;
        }
        // No head query: positions become visible in order, so a page shorter than asked
        // holds everything committed before its query started.
        loop {
            let page = self
                .store
                .read_all(done + 1, CATCH_UP_PAGE)
                .await
                .map_err(unavailable)?;
            for e in &page {
                if !login_identity::CATEGORIES.contains(&e.stream_id.category()) {
                    continue;
                }
                relevant = e.global_position;
                match mykey_schemas::decode_any(e).map(|ev| LoginIdentity::invalidation(&ev)) {
                    Ok(Invalidation::Keep) => {}
                    Ok(Invalidation::RelyingParties) => self.clear_rps(),
                    Ok(Invalidation::Logins) => self.clear_ppids(),
                    Err(err) => {
                        tracing::warn!(position = e.global_position, "login cache: {err}");
                        self.clear_rps();
                        self.clear_ppids();
                    }
                }
            }
            if let Some(e) = page.last() {
                done = e.global_position;
            }
            if page.len() < CATCH_UP_PAGE {
                break;
            }
        }
        self.relevant.store(relevant, Ordering::Release);
        self.processed.store(done, Ordering::Release);
        *self.synced_as_of.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        Ok(self.epoch.load(Ordering::Acquire))
    }

    /// The position a read model must hold to answer as of the last sync.
    fn relevant(&self) -> u64 {
        self.relevant.load(Ordering::Acquire)
    }

    fn synced_since(&self, t: Instant) -> bool {
        self.synced_as_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|started| started >= t)
    }

    fn insert_ppid(&self, epoch: u64, key: (CertificateRef, RelyingPartyId), ppid: String) {
        if self.ppids.len() >= MAX_CACHED {
            self.clear_ppids();
            return;
        }
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.ppids.insert(key, ppid);
        }
    }
}

#[async_trait]
impl<I: Identity, S: EventStore + 'static> Identity for CachedIdentity<I, S> {
    async fn relying_party(
        &self,
        rp_id: &RelyingPartyId,
    ) -> Result<Option<RelyingParty>, IdentityError> {
        let epoch = self.sync().await?;
        if let Some(rp) = self.rps.get(rp_id) {
            return Ok(Some(rp.clone()));
        }
        let rp = match &self.read_model {
            Some(rm) => match rm.relying_party(rp_id, self.relevant()).await {
                Ok(rp) => rp,
                Err((why, detail)) => {
                    rm.fell_back("relying_party", why, &detail);
                    self.inner.relying_party(rp_id).await?
                }
            },
            None => self.inner.relying_party(rp_id).await?,
        };
        if let Some(rp) = &rp {
            if self.rps.len() >= MAX_CACHED {
                self.clear_rps();
            } else if self.epoch.load(Ordering::Acquire) == epoch {
                self.rps.insert(rp_id.clone(), rp.clone());
            }
        }
        Ok(rp)
    }

    async fn register_login(
        &self,
        cert: &CertificateRef,
        rp_id: &RelyingPartyId,
        actor: &RequestActor,
    ) -> Result<String, IdentityError> {
        let epoch = self.sync().await?;
        let key = (cert.clone(), rp_id.clone());
        if let Some(p) = self.ppids.get(&key) {
            return Ok(p.clone());
        }
        let ppid = self.inner.register_login(cert, rp_id, actor).await?;
        self.insert_ppid(epoch, key, ppid.clone());
        Ok(ppid)
    }

    async fn active_ppid(
        &self,
        cert: &CertificateRef,
        rp_id: &RelyingPartyId,
    ) -> Result<Option<String>, IdentityError> {
        let epoch = self.sync().await?;
        let key = (cert.clone(), rp_id.clone());
        if let Some(p) = self.ppids.get(&key) {
            return Ok(Some(p.clone()));
        }
        let ppid = match &self.read_model {
            Some(rm) => match rm.active_ppid(cert, rp_id, self.relevant()).await {
                Ok(answer) => answer?,
                Err((why, detail)) => {
                    rm.fell_back("active_ppid", why, &detail);
                    self.inner.active_ppid(cert, rp_id).await?
                }
            },
            None => self.inner.active_ppid(cert, rp_id).await?,
        };
        if let Some(p) = &ppid {
            self.insert_ppid(epoch, key, p.clone());
        }
        Ok(ppid)
    }

    async fn link_renewal(
        &self,
        issuer: &str,
        old: &str,
        new: &str,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError> {
        self.inner.link_renewal(issuer, old, new, actor).await
    }

    async fn mark_certificates_revoked(
        &self,
        certs: &[CertificateRef],
        actor: &RequestActor,
    ) -> Result<MarkedRevoked, IdentityError> {
        self.inner.mark_certificates_revoked(certs, actor).await
    }

    async fn register_relying_party(
        &self,
        rp_id: &RelyingPartyId,
        kind: &str,
        code: &str,
        name: &str,
        jwk: serde_json::Value,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError> {
        self.inner
            .register_relying_party(rp_id, kind, code, name, jwk, actor)
            .await
    }

    async fn rotate_relying_party_key(
        &self,
        rp_id: &RelyingPartyId,
        jwk: serde_json::Value,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError> {
        self.inner.rotate_relying_party_key(rp_id, jwk, actor).await
    }

    async fn set_relying_party_status(
        &self,
        rp_id: &RelyingPartyId,
        status: RpStatus,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError> {
        self.inner
            .set_relying_party_status(rp_id, status, actor)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::MemoryIdentity;
    use mykey_domain::ppid::{PpidAggregate, PpidEvent};
    use mykey_domain::relying_party::{RelyingParty as RelyingPartyAggregate, RelyingPartyEvent};
    use mykey_domain::subject::{Subject, SubjectEvent};
    use mykey_schemas::{EventEnvelope, EventMetadata, Hash, StreamId};
    use mykey_store::{AppendError, AppendOutcome, AppendRequest, StoreError, Subscription};
    use std::sync::{Arc, Mutex};

    /// Just enough of a log for the cache: head and read_all. (Appends come from "elsewhere".)
    #[derive(Clone, Default)]
    struct Log(
        Arc<Mutex<Vec<EventEnvelope>>>,
        Arc<std::sync::atomic::AtomicUsize>,
    );

    impl Log {
        /// Appends `event` in its stored form (as a writer elsewhere would).
        fn push<C: mykey_schemas::EventCodec>(&self, stream: &str, event: &C::DomainEvent) {
            let encoded = C::encode(event).unwrap_or_else(|e| panic!("{e}"));
            self.push_raw(stream, encoded.event_type, &encoded.payload);
        }

        fn push_raw(&self, stream: &str, event_type: &str, payload: &str) {
            let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let pos = v.len() as u64 + 1;
            v.push(EventEnvelope {
                event_id: uuid::Uuid::new_v4(),
                stream_id: StreamId::parse(stream).unwrap_or_else(|e| panic!("{e}")),
                stream_version: 1,
                global_position: pos,
                event_type: event_type.into(),
                schema_version: 1,
                payload: payload.into(),
                metadata: EventMetadata {
                    actor_id: "t".into(),
                    actor_role: "test".into(),
                    command_id: uuid::Uuid::new_v4(),
                    correlation_id: uuid::Uuid::new_v4(),
                    causation_id: uuid::Uuid::new_v4(),
                    patch_id: None,
                    client_addr: None,
                },
                recorded_at: chrono::Utc::now(),
                prev_hash: Hash([0; 32]),
                hash: Hash([0; 32]),
            });
        }
    }

    impl EventStore for Log {
        async fn append(&self, _: AppendRequest) -> Result<AppendOutcome, AppendError> {
            Err(AppendError::Empty)
        }
        async fn read_stream(
            &self,
            _: &StreamId,
            _: u64,
            _: usize,
        ) -> Result<Vec<EventEnvelope>, StoreError> {
            Ok(Vec::new())
        }
        async fn read_all(
            &self,
            from: u64,
            limit: usize,
        ) -> Result<Vec<EventEnvelope>, StoreError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
            Ok(v.iter()
                .filter(|e| e.global_position >= from)
                .take(limit)
                .cloned()
                .collect())
        }
        async fn head(&self) -> Result<u64, StoreError> {
            Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
        }
        fn subscribe(&self, _: u64) -> Subscription {
            tokio::sync::mpsc::channel(1).1
        }
    }

    fn actor() -> RequestActor {
        RequestActor::operator("t", uuid::Uuid::new_v4(), None)
    }

    fn rp(id: &str) -> RelyingPartyId {
        RelyingPartyId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn cert() -> CertificateRef {
        CertificateRef::new("i", "01").unwrap_or_else(|e| panic!("{e}"))
    }

    fn invalidated() -> PpidEvent {
        PpidEvent::Invalidated {
            patch_id: uuid::Uuid::nil(),
            reason: "r".into(),
        }
    }

    #[tokio::test]
    async fn lookups_of_one_request_share_a_read_and_the_next_request_reads_again() {
        let log = Log::default();
        let reads = || log.1.load(Ordering::Relaxed);
        let cache = CachedIdentity::new(MemoryIdentity::default(), log.clone());
        let cert = cert();
        let p1 = within_request(async {
            let p = cache.register_login(&cert, &rp("rp"), &actor()).await;
            let again = cache.active_ppid(&cert, &rp("rp")).await;
            (p.unwrap_or_default(), again.ok().flatten())
        })
        .await;
        assert_eq!(reads(), 1, "one read for both lookups of the request");
        assert_eq!(Some(p1.0.clone()), p1.1);

        // Committed before the next request arrives: that request must see it.
        cache.inner.invalidate_ppid(&p1.0);
        log.push::<PpidAggregate>("ppid-x", &invalidated());
        let after = within_request(cache.active_ppid(&cert, &rp("rp"))).await;
        assert_eq!(reads(), 2, "a new request reads the log again");
        assert_eq!(after.ok().flatten(), None);
    }

    #[tokio::test]
    async fn a_revocation_event_in_the_log_clears_cached_ppids_before_the_next_lookup() {
        let log = Log::default();
        let cache = CachedIdentity::new(MemoryIdentity::default(), log.clone());
        let cert = cert();
        let p1 = cache
            .register_login(&cert, &rp("rp"), &actor())
            .await
            .unwrap_or_default();
        // The write model changes behind the cache's back (another instance)...
        cache.inner.invalidate_ppid(&p1);
        // ... the cache still answers until the log says something happened:
        assert_eq!(
            cache.active_ppid(&cert, &rp("rp")).await.ok().flatten(),
            Some(p1.clone())
        );
        log.push::<PpidAggregate>("ppid-x", &invalidated());
        assert_eq!(
            cache.active_ppid(&cert, &rp("rp")).await.ok().flatten(),
            None
        );
        let p2 = cache
            .register_login(&cert, &rp("rp"), &actor())
            .await
            .unwrap_or_default();
        assert_ne!(p1, p2);
        // Additive events keep the cache.
        let subject = mykey_domain::SubjectId(uuid::Uuid::new_v4());
        log.push::<Subject>(
            &format!("subject-{}", subject.0),
            &SubjectEvent::Created {
                subject,
                certificate: cert.clone(),
            },
        );
        cache.inner.invalidate_ppid(&p2);
        assert_eq!(
            cache.active_ppid(&cert, &rp("rp")).await.ok().flatten(),
            Some(p2)
        );
        // No RP was ever registered: nothing to answer.
        assert_eq!(
            cache
                .relying_party(&rp("rp"))
                .await
                .ok()
                .flatten()
                .map(|r| r.id),
            None
        );
        // A cached RP is answered from the cache until a relying-party event arrives.
        let status = |rp: Option<RelyingParty>| rp.map(|r| r.status);
        let jwk = serde_json::json!({});
        cache
            .inner
            .register_relying_party(&rp("rp-2"), "municipality", "131016", "n", jwk, &actor())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let cached = cache.relying_party(&rp("rp-2")).await.ok().flatten();
        assert_eq!(status(cached), Some(RpStatus::Active));
        cache
            .inner
            .set_relying_party_status(&rp("rp-2"), RpStatus::Suspended, &actor())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stale = cache.relying_party(&rp("rp-2")).await.ok().flatten();
        assert_eq!(status(stale), Some(RpStatus::Active));
        log.push::<RelyingPartyAggregate>(
            "relying_party-rp-2",
            &RelyingPartyEvent::Suspended { reason: "r".into() },
        );
        let fresh = cache.relying_party(&rp("rp-2")).await.ok().flatten();
        assert_eq!(status(fresh), Some(RpStatus::Suspended));
    }

    #[tokio::test]
    async fn an_event_of_these_categories_that_does_not_decode_clears_the_cache() {
        let log = Log::default();
        let cache = CachedIdentity::new(MemoryIdentity::default(), log.clone());
        let p = cache
            .register_login(&cert(), &rp("rp"), &actor())
            .await
            .unwrap_or_default();
        cache.inner.invalidate_ppid(&p);
        assert_eq!(
            cache.active_ppid(&cert(), &rp("rp")).await.ok().flatten(),
            Some(p),
            "still cached"
        );
        // Not an event type of this build (a newer writer's, or damage): never a stale answer.
        log.push_raw("subject-y", "NotAnEventOfThisBuild", "{}");
        assert_eq!(
            cache.active_ppid(&cert(), &rp("rp")).await.ok().flatten(),
            None
        );
    }
}
