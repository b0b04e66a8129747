//! What login needs from the write model, as a small trait: relying parties, subjects,
//! certificates and PPIDs live in the event log (commands crate); login only asks these
//! questions and issues these commands.
//!
//! `MemoryIdentity` (`memory_identity.rs`, tests only) keeps the same rules in memory.

use async_trait::async_trait;
use uuid::Uuid;

pub use mykey_domain::certificate::CertificateRef;
pub use mykey_domain::relying_party::RpStatus;
pub use mykey_domain::RelyingPartyId;

#[cfg(test)]
pub use crate::memory_identity::MemoryIdentity;

/// A relying-party id from a caller, parsed once at the boundary: an invalid one is the write
/// model's refusal (`INVALID_INPUT`, 400), as if it had been asked.
pub fn parse_rp_id(raw: &str) -> Result<RelyingPartyId, IdentityError> {
    RelyingPartyId::parse(raw).map_err(|d| IdentityError::rejected(d.code(), d.message))
}

#[derive(Debug, Clone)]
pub struct RelyingParty {
    pub id: RelyingPartyId,
    pub status: RpStatus,
    /// The RP's public JWK, used to verify its client assertions.
    pub jwk: serde_json::Value,
}

/// CRL entries checked against the log per read: one query each.
pub const CRL_CHECK_CHUNK: usize = 1_000;

/// What a CRL chunk's check wrote: how many revocation events, and the global position that
/// reflects them (the last one written; when none was, the last position of the known
/// certificates' streams read, 0 when it knows none of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MarkedRevoked {
    pub written: usize,
    pub position: u64,
}

/// Who is acting (the domain's [`mykey_domain::Actor`]: id and role) in which request, for
/// event metadata.
#[derive(Debug, Clone)]
pub struct RequestActor {
    pub actor: mykey_domain::Actor,
    pub correlation_id: Uuid,
    pub client_addr: Option<String>,
    /// The command id of a single command this request makes, when it has one of its own (an
    /// operator's `Idempotency-Key`, scoped to the operator): a retry of the same request is
    /// then the same command to the write model, which answers its first outcome. `None`: a
    /// fresh id per command (logins; a CRL load or renewal import, which make many commands).
    pub command_id: Option<Uuid>,
}

impl RequestActor {
    /// An operator (endpoint or CLI) acting in a request with `correlation_id`.
    pub fn operator(
        id: impl Into<String>,
        correlation_id: Uuid,
        client_addr: Option<String>,
    ) -> RequestActor {
        RequestActor {
            actor: mykey_domain::Actor {
                id: id.into(),
                role: mykey_domain::Role::Operator,
            },
            correlation_id,
            client_addr,
            command_id: None,
        }
    }

    /// The same actor, making its one command under `command_id`.
    pub fn with_command_id(mut self, command_id: Uuid) -> RequestActor {
        self.command_id = Some(command_id);
        self
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    /// The write model refused (e.g. unknown RP, certificate revoked in the log): a 4xx.
    #[error("{code}: {detail}")]
    Rejected { code: String, detail: String },
    /// Infrastructure: a 503.
    #[error("identity store unavailable: {0}")]
    Unavailable(String),
}

impl IdentityError {
    pub fn rejected(code: &str, detail: impl Into<String>) -> IdentityError {
        IdentityError::Rejected {
            code: code.to_owned(),
            detail: detail.into(),
        }
    }
}

#[async_trait]
pub trait Identity: Send + Sync + std::fmt::Debug {
    async fn relying_party(
        &self,
        rp_id: &RelyingPartyId,
    ) -> Result<Option<RelyingParty>, IdentityError>;

    /// PIN login: find or create the subject of `cert` (following renewal links), then find
    /// the active PPID for (subject, RP) or issue one. Returns the PPID.
    async fn register_login(
        &self,
        cert: &CertificateRef,
        rp_id: &RelyingPartyId,
        actor: &RequestActor,
    ) -> Result<String, IdentityError>;

    /// かざし: the active PPID for (subject of `cert`, RP), if any. Writes nothing.
    async fn active_ppid(
        &self,
        cert: &CertificateRef,
        rp_id: &RelyingPartyId,
    ) -> Result<Option<String>, IdentityError>;

    /// Renewal: `new_serial` belongs to the same subject as `old_serial`. Returns the global
    /// position of the link (its last event; a repeat answers the existing link's).
    async fn link_renewal(
        &self,
        issuer: &str,
        old_serial: &str,
        new_serial: &str,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError>;

    /// Marks revoked those of `certs` the platform knows and has not marked yet (a CRL's
    /// entries, at most [`CRL_CHECK_CHUNK`] at a time).
    async fn mark_certificates_revoked(
        &self,
        certs: &[CertificateRef],
        actor: &RequestActor,
    ) -> Result<MarkedRevoked, IdentityError>;

    // The relying-party commands return the global position of the event they wrote (the
    // first run's for a repeated command id; for a no-op, the party's last event).

    async fn register_relying_party(
        &self,
        rp_id: &RelyingPartyId,
        kind: &str,
        code: &str,
        name: &str,
        jwk: serde_json::Value,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError>;

    async fn rotate_relying_party_key(
        &self,
        rp_id: &RelyingPartyId,
        jwk: serde_json::Value,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError>;

    async fn set_relying_party_status(
        &self,
        rp_id: &RelyingPartyId,
        status: RpStatus,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError>;
}

/// The identity the server uses: the command handlers over the event store, wrapped in
/// [`super::cache::CachedIdentity`] so hot logins skip the stream reads. With `read_model`
/// (the server's), the cache's read misses are answered from the `login_identity` read model;
/// without (the CLI, which runs no projections), from the write model.
pub fn default_identity(
    store: &mykey_store::pg::PgEventStore,
    read_model: Option<super::read_model::ReadModel>,
) -> std::sync::Arc<dyn Identity> {
    let cache =
        super::cache::CachedIdentity::new(CommandsIdentity::new(store.clone()), store.clone());
    std::sync::Arc::new(match read_model {
        Some(rm) => cache.with_read_model(rm),
        None => cache,
    })
}

/// [`Identity`] over `mykey_commands::Commands`: every change is events in the log.
pub struct CommandsIdentity<S> {
    cmds: mykey_commands::Commands<S>,
}

impl<S> std::fmt::Debug for CommandsIdentity<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandsIdentity").finish_non_exhaustive()
    }
}

impl<S: mykey_store::EventStore> CommandsIdentity<S> {
    pub fn new(store: S) -> CommandsIdentity<S> {
        CommandsIdentity {
            cmds: mykey_commands::Commands::new(store),
        }
    }
}

/// A refusal keeps the domain's message; anything else is logged in full and answered with a
/// generic text: the error's `Display` names streams (`subject-<uuid>` is an identifier shared
/// across relying parties, which pairwise PPIDs exist to hide) or carries database messages.
fn cmd_err(e: mykey_commands::CommandError) -> IdentityError {
    match e.domain() {
        Some(d) => IdentityError::rejected(d.code(), d.message.clone()),
        None => {
            tracing::warn!(code = e.code(), "write model unavailable: {e}");
            IdentityError::Unavailable(generic_unavailable(&e))
        }
    }
}

fn generic_unavailable(e: &mykey_commands::CommandError) -> String {
    match e {
        mykey_commands::CommandError::Contention { .. } => {
            "CONTENTION: too many concurrent changes to the same records; retry".to_owned()
        }
        other => format!("{}: the write model is unavailable; retry", other.code()),
    }
}

/// How long a PIN login keeps retrying a version conflict before answering 503. The first
/// logins of one card at many relying parties all append to that citizen's subject stream;
/// each round one wins, so the others back off (exponentially, with jitter so they do not
/// collide again in lockstep) and re-decide. Well inside a login request's time budget.
pub const LOGIN_CONTENTION_BUDGET: std::time::Duration = std::time::Duration::from_secs(4);
/// First back-off after a lost round; doubles up to [`LOGIN_BACKOFF_MAX`].
pub const LOGIN_BACKOFF_START: std::time::Duration = std::time::Duration::from_millis(2);
pub const LOGIN_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// Retries `attempt` on [`mykey_commands::CommandError::Contention`] with jittered exponential
/// back-off until [`LOGIN_CONTENTION_BUDGET`] is spent.
async fn retry_contention<T, F, Fut>(mut attempt: F) -> Result<T, mykey_commands::CommandError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, mykey_commands::CommandError>>,
{
    use rand::Rng;
    let started = std::time::Instant::now();
    let mut backoff = LOGIN_BACKOFF_START;
    loop {
        match attempt().await {
            Err(mykey_commands::CommandError::Contention { .. })
                if started.elapsed() + backoff < LOGIN_CONTENTION_BUDGET =>
            {
                // Full jitter: anywhere in [backoff/2, backoff].
                let half = backoff / 2;
                let wait = half + rand::thread_rng().gen_range(std::time::Duration::ZERO..=half);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(LOGIN_BACKOFF_MAX);
            }
            r => return r,
        }
    }
}

pub(crate) fn cert_ref(issuer: &str, serial: &str) -> Result<CertificateRef, IdentityError> {
    CertificateRef::new(issuer, serial).map_err(|d| IdentityError::rejected(d.code(), d.message))
}

fn meta(actor: &RequestActor) -> mykey_commands::CommandMeta {
    // v7: command ids are the key of the log's idempotency index; time-ordered keys append at
    // its right edge (random ones cost the log about a third of its append throughput).
    let m = mykey_commands::CommandMeta::new(
        actor.actor.id.clone(),
        actor.actor.role.clone(),
        actor.command_id.unwrap_or_else(Uuid::now_v7),
    )
    .caused_by(actor.correlation_id, actor.correlation_id);
    match &actor.client_addr {
        Some(a) => m.from_addr(a.clone()),
        None => m,
    }
}

/// かざし with a revoked certificate: the same refusal whichever model answers.
pub(crate) fn certificate_revoked() -> IdentityError {
    IdentityError::rejected("CERTIFICATE_REVOKED", "the certificate is revoked")
}

/// Kind names accepted from operators (CLI and endpoint).
pub fn parse_kind(kind: &str) -> Result<mykey_commands::RpKind, IdentityError> {
    use mykey_commands::RpKind as K;
    Ok(match kind {
        "municipality" => K::Municipality,
        "payment_service_provider" | "payment" => K::PaymentServiceProvider,
        "library_system" | "library" => K::LibrarySystem,
        "private_business" | "private" => K::PrivateBusiness,
        _ => {
            return Err(IdentityError::rejected(
                "INVALID_INPUT",
                "kind must be municipality, payment_service_provider, library_system or private_business",
            ))
        }
    })
}

#[async_trait]
impl<S: mykey_store::EventStore + 'static> Identity for CommandsIdentity<S> {
    async fn relying_party(
        &self,
        id: &RelyingPartyId,
    ) -> Result<Option<RelyingParty>, IdentityError> {
        let rp = self.cmds.load_relying_party(id).await.map_err(cmd_err)?;
        Ok(rp.map(|rp| RelyingParty {
            id: rp.id,
            status: rp.status,
            jwk: rp.public_jwk,
        }))
    }

    async fn register_login(
        &self,
        cert: &CertificateRef,
        rp: &RelyingPartyId,
        actor: &RequestActor,
    ) -> Result<String, IdentityError> {
        let m = meta(actor);
        let r = retry_contention(|| self.cmds.register_login(&m, cert, rp))
            .await
            .map_err(cmd_err)?;
        Ok(r.ppid.to_string())
    }

    async fn active_ppid(
        &self,
        cert: &CertificateRef,
        rp: &RelyingPartyId,
    ) -> Result<Option<String>, IdentityError> {
        let state = self.cmds.load_certificate(cert).await.map_err(cmd_err)?;
        if state.revoked {
            return Err(certificate_revoked());
        }
        // A renewed certificate has no stream of its own until linked; resolve follows links.
        let subject = match state.subject {
            Some(s) => s,
            None => return Ok(None),
        };
        let ppid = self.cmds.active_ppid(subject, rp).await.map_err(cmd_err)?;
        Ok(ppid.map(|p| p.to_string()))
    }

    async fn link_renewal(
        &self,
        issuer: &str,
        old: &str,
        new: &str,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError> {
        let old = cert_ref(issuer, old)?;
        let new = cert_ref(issuer, new)?;
        let linked = self
            .cmds
            .link_renewal(&meta(actor), &old, &new)
            .await
            .map_err(cmd_err)?;
        Ok(linked.position)
    }

    async fn mark_certificates_revoked(
        &self,
        certs: &[CertificateRef],
        actor: &RequestActor,
    ) -> Result<MarkedRevoked, IdentityError> {
        let states = self
            .cmds
            .load_certificates_at(certs)
            .await
            .map_err(cmd_err)?;
        let mut marked = MarkedRevoked::default();
        // Only certificates the platform knows get an event: the national CRL lists millions
        // of certificates that never logged in here.
        for (c, (state, read_at)) in certs.iter().zip(states) {
            if state.subject.is_none() {
                continue;
            }
            if state.revoked {
                // Marked before: its stream's last event is at or after that revocation.
                marked.position = marked.position.max(read_at);
                continue;
            }
            match self
                .cmds
                .mark_certificate_revoked(&meta(actor), c, "listed on the CA's CRL")
                .await
            {
                Ok(position) => {
                    marked.written += 1;
                    marked.position = marked.position.max(position);
                }
                // Marked meanwhile by another instance loading the same CRL: that event is
                // after what was read, so re-read its position.
                Err(e) if e.code() == "CERTIFICATE_ALREADY_REVOKED" => {
                    let again = self
                        .cmds
                        .load_certificates_at(std::slice::from_ref(c))
                        .await
                        .map_err(cmd_err)?;
                    let at = again.first().map_or(read_at, |(_, p)| *p);
                    marked.position = marked.position.max(at);
                }
                Err(e) => return Err(cmd_err(e)),
            }
        }
        Ok(marked)
    }

    async fn register_relying_party(
        &self,
        id: &RelyingPartyId,
        kind: &str,
        code: &str,
        name: &str,
        jwk: serde_json::Value,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError> {
        let r = mykey_commands::RegisterRelyingParty {
            id: id.clone(),
            code: code.to_owned(),
            name: name.to_owned(),
            kind: parse_kind(kind)?,
            public_jwk: jwk,
        };
        let done = self
            .cmds
            .register_relying_party(&meta(actor), r)
            .await
            .map_err(cmd_err)?;
        Ok(done.position)
    }

    async fn rotate_relying_party_key(
        &self,
        id: &RelyingPartyId,
        jwk: serde_json::Value,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError> {
        let done = self
            .cmds
            .rotate_relying_party_key(&meta(actor), id, jwk)
            .await
            .map_err(cmd_err)?;
        Ok(done.position)
    }

    async fn set_relying_party_status(
        &self,
        id: &RelyingPartyId,
        status: RpStatus,
        actor: &RequestActor,
    ) -> Result<u64, IdentityError> {
        let m = meta(actor);
        let r = match status {
            RpStatus::Suspended => {
                self.cmds
                    .suspend_relying_party(&m, id, "suspended by operator")
                    .await
            }
            RpStatus::Active => self.cmds.resume_relying_party(&m, id).await,
            RpStatus::Retired => {
                self.cmds
                    .retire_relying_party(&m, id, "retired by operator")
                    .await
            }
        };
        Ok(r.map_err(cmd_err)?.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mykey_commands::CommandError;

    fn contention() -> CommandError {
        let stream = mykey_commands::stream_of::<mykey_domain::subject::Subject>(Uuid::new_v4())
            .unwrap_or_else(|e| panic!("{e}"));
        CommandError::Contention {
            stream,
            attempts: 5,
        }
    }

    #[test]
    fn an_unavailable_answer_never_names_a_stream() {
        let e = contention();
        assert!(
            e.to_string().contains("subject-"),
            "the error itself names it"
        );
        match cmd_err(e) {
            IdentityError::Unavailable(d) => {
                assert!(d.starts_with("CONTENTION"), "{d}");
                assert!(!d.contains("subject"), "{d}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn contention_is_retried_and_refusals_are_not() {
        let mut calls = 0;
        let r = retry_contention(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(contention())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(4));
        let mut calls = 0;
        let r: Result<(), _> = retry_contention(|| {
            calls += 1;
            async {
                Err(CommandError::Domain(mykey_commands::DomainError::new(
                    mykey_commands::ErrorCode::CERTIFICATE_REVOKED,
                    "revoked",
                )))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
