//! [`MemoryIdentity`]: the write model's rules kept in memory, a test double for the unit tests
//! of the cache and the login logic (the real one is [`super::identity::CommandsIdentity`]).

use super::identity::{
    cert_ref, CertificateRef, Identity, IdentityError, MarkedRevoked, RelyingParty, RelyingPartyId,
    RequestActor, RpStatus,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// In-memory rules of the write model, for the cache's unit tests.
#[derive(Debug, Default)]
pub struct MemoryIdentity {
    inner: Mutex<Mem>,
}

#[derive(Debug, Default)]
struct Mem {
    rps: HashMap<RelyingPartyId, RelyingParty>,
    /// certificate → subject
    subjects: HashMap<CertificateRef, Uuid>,
    /// renewal: new certificate → old certificate
    renewed_from: HashMap<CertificateRef, CertificateRef>,
    revoked: std::collections::HashSet<CertificateRef>,
    ppids: HashMap<(Uuid, RelyingPartyId), String>,
    /// Events "written", for tests asserting that refusals write nothing.
    pub events: usize,
}

impl MemoryIdentity {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn event_count(&self) -> usize {
        self.lock().events
    }

    /// An operator data patch invalidating a PPID.
    pub fn invalidate_ppid(&self, ppid: &str) {
        let mut m = self.lock();
        m.ppids.retain(|_, p| p != ppid);
        m.events += 1;
    }
}

impl Mem {
    /// The "log" position: one event per position.
    fn position(&self) -> u64 {
        self.events as u64
    }

    fn subject_of(&self, cert: &CertificateRef) -> Option<Uuid> {
        let mut c = cert.clone();
        // Bounded walk: a renewal chain is a handful of links over a lifetime.
        for _ in 0..32 {
            if let Some(s) = self.subjects.get(&c) {
                return Some(*s);
            }
            c = self.renewed_from.get(&c)?.clone();
        }
        None
    }
}

#[async_trait]
impl Identity for MemoryIdentity {
    async fn relying_party(
        &self,
        rp_id: &RelyingPartyId,
    ) -> Result<Option<RelyingParty>, IdentityError> {
        Ok(self.lock().rps.get(rp_id).cloned())
    }

    async fn register_login(
        &self,
        cert: &CertificateRef,
        rp_id: &RelyingPartyId,
        _: &RequestActor,
    ) -> Result<String, IdentityError> {
        let mut m = self.lock();
        if m.revoked.contains(cert) {
            return Err(IdentityError::rejected(
                "CERTIFICATE_REVOKED",
                "certificate revoked",
            ));
        }
        let subject = match m.subject_of(cert) {
            Some(s) => s,
            None => {
                let s = Uuid::new_v4();
                m.subjects.insert(cert.clone(), s);
                m.events += 1;
                s
            }
        };
        if let Some(p) = m.ppids.get(&(subject, rp_id.clone())) {
            return Ok(p.clone());
        }
        let ppid = Uuid::new_v4().simple().to_string();
        m.ppids.insert((subject, rp_id.clone()), ppid.clone());
        m.events += 1;
        Ok(ppid)
    }

    async fn active_ppid(
        &self,
        cert: &CertificateRef,
        rp_id: &RelyingPartyId,
    ) -> Result<Option<String>, IdentityError> {
        let m = self.lock();
        if m.revoked.contains(cert) {
            return Err(IdentityError::rejected(
                "CERTIFICATE_REVOKED",
                "certificate revoked",
            ));
        }
        Ok(m.subject_of(cert)
            .and_then(|s| m.ppids.get(&(s, rp_id.clone())).cloned()))
    }

    async fn link_renewal(
        &self,
        issuer: &str,
        old: &str,
        new: &str,
        _: &RequestActor,
    ) -> Result<u64, IdentityError> {
        let mut m = self.lock();
        let (old, new) = (cert_ref(issuer, old)?, cert_ref(issuer, new)?);
        if m.subject_of(&old).is_none() {
            return Err(IdentityError::rejected(
                "CERTIFICATE_UNKNOWN",
                "old certificate unknown",
            ));
        }
        m.renewed_from.insert(new, old);
        m.events += 1;
        Ok(m.position())
    }

    async fn mark_certificates_revoked(
        &self,
        certs: &[CertificateRef],
        _: &RequestActor,
    ) -> Result<MarkedRevoked, IdentityError> {
        let mut m = self.lock();
        let mut written = 0;
        for cert in certs {
            if m.subject_of(cert).is_some() && m.revoked.insert(cert.clone()) {
                m.events += 1;
                written += 1;
            }
        }
        Ok(MarkedRevoked {
            written,
            position: m.position(),
        })
    }

    async fn register_relying_party(
        &self,
        rp_id: &RelyingPartyId,
        _kind: &str,
        _code: &str,
        _name: &str,
        jwk: serde_json::Value,
        _: &RequestActor,
    ) -> Result<u64, IdentityError> {
        let mut m = self.lock();
        if m.rps.contains_key(rp_id) {
            return Err(IdentityError::rejected(
                "RELYING_PARTY_EXISTS",
                rp_id.to_string(),
            ));
        }
        m.rps.insert(
            rp_id.clone(),
            RelyingParty {
                id: rp_id.clone(),
                status: RpStatus::Active,
                jwk,
            },
        );
        m.events += 1;
        Ok(m.position())
    }

    async fn rotate_relying_party_key(
        &self,
        rp_id: &RelyingPartyId,
        jwk: serde_json::Value,
        _: &RequestActor,
    ) -> Result<u64, IdentityError> {
        let mut m = self.lock();
        let rp = m
            .rps
            .get_mut(rp_id)
            .ok_or_else(|| IdentityError::rejected("RELYING_PARTY_UNKNOWN", rp_id.to_string()))?;
        rp.jwk = jwk;
        m.events += 1;
        Ok(m.position())
    }

    async fn set_relying_party_status(
        &self,
        rp_id: &RelyingPartyId,
        status: RpStatus,
        _: &RequestActor,
    ) -> Result<u64, IdentityError> {
        let mut m = self.lock();
        let rp = m
            .rps
            .get_mut(rp_id)
            .ok_or_else(|| IdentityError::rejected("RELYING_PARTY_UNKNOWN", rp_id.to_string()))?;
        rp.status = status;
        m.events += 1;
        Ok(m.position())
    }
}
