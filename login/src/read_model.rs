//! Where [`crate::cache::CachedIdentity`] answers a miss of its two read lookups (relying
//! party, active PPID): the `login_identity` read model (`mykey_projections`), the same
//! projection every other read model is — no stream loads on a login's read path.
//!
//! Read your writes: the cache passes the log position its sync reached (the last event of a
//! login category it saw); the lookup waits with [`Projections::wait_for`] until the serving
//! schema holds it, then queries that schema. An answer is therefore never older than the
//! write model's would have been at the same moment.
//!
//! Login must not go down because a projection is stuck: when the read model cannot answer
//! (not started or not serving, failed, still behind after [`DEFAULT_WAIT`], or its query
//! fails) the lookup goes to the write model instead ([`Fallback`]), counted in
//! `mykey_login_identity_fallback_total{reason}` and logged at WARN (at most once per
//! [`WARN_EVERY`] per reason, so a stuck projection does not flood the log). After a timeout
//! the next lookups do not wait again for [`STUCK_FOR`]: they take the read model if it has
//! already caught up, the write model otherwise.

use crate::identity::{CertificateRef, IdentityError, RelyingParty, RelyingPartyId};
use mykey_projections::models::login_identity::{self, CertificateLogin, LoginIdentity};
use mykey_projections::runner::WaitError;
use mykey_projections::{Projection, Projections};
use prometheus::{IntCounterVec, Opts, Registry};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait for the read model to reach the cache's position. A standby instance (another
/// process runs the projection) learns the leader's progress at the runner's poll interval,
/// so this covers one poll with margin; on the leader the wait is the projection's lag (ms).
pub const DEFAULT_WAIT: Duration =
    mykey_projections::runner::DEFAULT_POLL_INTERVAL.saturating_mul(2);
/// How long lookups stop waiting after one timed out.
pub const STUCK_FOR: Duration = Duration::from_secs(5);
/// At most one WARN per reason in this interval.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a lookup was answered by the write model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The projection is not running here or has no serving schema yet.
    NotServing,
    /// It stopped on an event it cannot apply.
    Failed,
    /// It did not reach the position in time.
    Timeout,
    /// The runner has stopped (shutdown).
    Stopped,
    /// The read pool or the query failed.
    Query,
}

impl Fallback {
    const ALL: [Fallback; 5] = [
        Fallback::NotServing,
        Fallback::Failed,
        Fallback::Timeout,
        Fallback::Stopped,
        Fallback::Query,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::NotServing => "not_serving",
            Fallback::Failed => "failed",
            Fallback::Timeout => "timeout",
            Fallback::Stopped => "stopped",
            Fallback::Query => "query",
        }
    }

    fn index(self) -> usize {
        Fallback::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// The read model of login answers: the runner's projections and a pool to query them.
#[derive(Clone)]
pub struct ReadModel {
    projections: Projections,
    pool: deadpool_postgres::Pool,
    wait: Duration,
    answered: IntCounterVec,
    fallbacks: IntCounterVec,
    /// Until when lookups do not wait (a wait timed out).
    stuck_until: Arc<Mutex<Option<Instant>>>,
    /// Last WARN per [`Fallback`] reason.
    warned: Arc<Mutex<[Option<Instant>; 5]>>,
}

impl std::fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModel")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

fn name() -> &'static str {
    LoginIdentity.name()
}

impl ReadModel {
    /// Reads `login_identity` as served by `projections`, with `pool`'s connections; its
    /// counters go into `registry` (the server's).
    pub fn new(
        projections: Projections,
        pool: deadpool_postgres::Pool,
        registry: &Registry,
    ) -> Result<ReadModel, prometheus::Error> {
        let answered = IntCounterVec::new(
            Opts::new(
                "mykey_login_identity_read_model_total",
                "Login cache misses answered from the login_identity read model, by lookup.",
            ),
            &["lookup"],
        )?;
        registry.register(Box::new(answered.clone()))?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "mykey_login_identity_fallback_total",
                "Login cache misses answered from the write model because the login_identity read model could not answer, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(fallbacks.clone()))?;
        Ok(ReadModel {
            projections,
            pool,
            wait: DEFAULT_WAIT,
            answered,
            fallbacks,
            stuck_until: Arc::new(Mutex::new(None)),
            warned: Arc::new(Mutex::new([None; 5])),
        })
    }

    /// Another bound for the wait (tests, tuning).
    pub fn with_wait(mut self, wait: Duration) -> ReadModel {
        self.wait = wait;
        self
    }

    /// Counts and logs a lookup that goes to the write model.
    pub(crate) fn fell_back(&self, lookup: &str, why: Fallback, detail: &str) {
        self.fallbacks.with_label_values(&[why.as_str()]).inc();
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        let last = &mut warned[why.index()];
        if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(
                lookup,
                reason = why.as_str(),
                "login_identity read model cannot answer, using the write model: {detail}"
            );
        }
    }

    /// The serving schema once it holds every event up to `position`.
    async fn schema_at(&self, position: u64) -> Result<Arc<str>, (Fallback, String)> {
        let now = Instant::now();
        let stuck = self
            .stuck_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| now < until);
        let wait = if stuck { Duration::ZERO } else { self.wait };
        match self.projections.wait_for(name(), position, wait).await {
            Ok(_) => {}
            Err(e @ WaitError::Unknown(_)) => return Err((Fallback::NotServing, e.to_string())),
            Err(e @ WaitError::Failed { .. }) => return Err((Fallback::Failed, e.to_string())),
            Err(e @ WaitError::Stopped) => return Err((Fallback::Stopped, e.to_string())),
            Err(e @ WaitError::Timeout { .. }) => {
                if !stuck {
                    *self.stuck_until.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now() + STUCK_FOR);
                }
                return Err((Fallback::Timeout, format!("waiting for {position}: {e}")));
            }
        }
        // Resolved after the wait: a switch moves readers to the new schema.
        self.projections
            .active_schema(name())
            .ok_or_else(|| (Fallback::NotServing, "no serving schema".to_owned()))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, (Fallback, String)> {
        self.pool
            .get()
            .await
            .map_err(|e| (Fallback::Query, e.to_string()))
    }

    /// The relying party `id` as of at least `position`.
    pub(crate) async fn relying_party(
        &self,
        id: &RelyingPartyId,
        position: u64,
    ) -> Result<Option<RelyingParty>, (Fallback, String)> {
        let schema = self.schema_at(position).await?;
        let client = self.client().await?;
        let rp = login_identity::relying_party(&**client, &schema, id.as_str())
            .await
            .map_err(|e| (Fallback::Query, e.to_string()))?;
        self.answered.with_label_values(&["relying_party"]).inc();
        Ok(rp.map(|rp| RelyingParty {
            id: id.clone(),
            status: rp.status,
            jwk: rp.public_jwk,
        }))
    }

    /// The active PPID of `cert`'s subject at `rp` as of at least `position`; a revoked
    /// certificate is the write model's refusal, word for word.
    pub(crate) async fn active_ppid(
        &self,
        cert: &CertificateRef,
        rp: &RelyingPartyId,
        position: u64,
    ) -> Result<Result<Option<String>, IdentityError>, (Fallback, String)> {
        let schema = self.schema_at(position).await?;
        let client = self.client().await?;
        let login = login_identity::certificate_login(&**client, &schema, cert, rp.as_str())
            .await
            .map_err(|e| (Fallback::Query, e.to_string()))?;
        self.answered.with_label_values(&["active_ppid"]).inc();
        Ok(match login {
            CertificateLogin::Unknown => Ok(None),
            CertificateLogin::Revoked => Err(crate::identity::certificate_revoked()),
            CertificateLogin::Linked { ppid, .. } => Ok(ppid),
        })
    }
}
