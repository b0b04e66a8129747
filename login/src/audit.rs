//! The login audit trail: every attempt, accepted or refused, recorded before the answer;
//! unauthenticated refusals counted per minute and charged to the caller's rate limit.

use super::client::ClientAuthError;
use super::login::LoginError;
use super::*;

impl Auth {
    /// Counts and audits a refused attempt on `endpoint`: as the RP's attempt when one is
    /// authenticated, else on the unauthenticated refusal counters.
    pub async fn refuse(
        &self,
        ctx: &Ctx,
        endpoint: &'static str,
        rp_id: Option<&str>,
        refusal: &impl Refusal,
    ) {
        self.metrics.login_refusals.inc();
        match rp_id {
            Some(_) => {
                self.audit(ctx, endpoint, rp_id, refusal.code(), None).await;
            }
            None => {
                self.refuse_unauthenticated(ctx, endpoint, refusal.code())
                    .await;
            }
        }
    }

    /// Records one attempt of an authenticated caller (or an accepted one) in `auth_audit`;
    /// true once committed. `rp_id` must be a validated id (or [`db::INVALID_VALUE`]); every
    /// string is bounded and cleaned by [`db::audit_text`] anyway.
    pub async fn audit(
        &self,
        ctx: &Ctx,
        endpoint: &'static str,
        rp_id: Option<&str>,
        outcome: &str,
        cert: Option<String>,
    ) -> bool {
        self.audit
            .record(AuditEntry::Record(AuditRecord {
                occurred_at: self.settings.clock.now(),
                rp_id: rp_id.map(db::audit_text),
                endpoint,
                outcome: db::audit_text(outcome),
                cert_sha256: cert.as_deref().map(db::audit_text),
                correlation_id: ctx.correlation_id,
                client_addr: ctx.client_addr.as_deref().map(db::audit_text),
            }))
            .await
    }

    /// Before any work on an endpoint open to unauthenticated callers: 429 when the caller's
    /// address has failed too often (see [`ratelimit`]). Costs no database work.
    pub fn admit(&self, ctx: &Ctx, endpoint: &'static str) -> Result<(), ratelimit::Limited> {
        self.limiter
            .check(ctx.peer, self.settings.clock.now_ms())
            .inspect_err(|_| {
                self.metrics
                    .rate_limited
                    .with_label_values(&[endpoint])
                    .inc();
            })
    }

    /// A refusal of a caller that did not authenticate: added to its minute's counter in
    /// `auth_refusal_count` (not a row of its own: nobody grows the audit trail without
    /// credentials) and charged to its address's rate limit. True once committed.
    pub async fn refuse_unauthenticated(
        &self,
        ctx: &Ctx,
        endpoint: &'static str,
        outcome: &str,
    ) -> bool {
        use chrono::DurationRound;
        let now = self.settings.clock.now();
        if !self.limiter.charge(ctx.peer, now.timestamp_millis()) {
            self.metrics.rate_limiter_full.inc();
        }
        let minute = now
            .duration_trunc(chrono::TimeDelta::minutes(1))
            .unwrap_or(now);
        self.audit
            .record(AuditEntry::Refusal(RefusalKey {
                minute,
                endpoint,
                outcome: db::audit_text(outcome),
            }))
            .await
    }

    /// Audits the outcome of an attempt; a success that cannot be audited is refused.
    pub(super) async fn finish<T, E: Refusal>(
        &self,
        ctx: &Ctx,
        endpoint: &'static str,
        rp_id: Option<&str>,
        cert: Option<String>,
        result: Result<T, E>,
    ) -> Result<T, E> {
        let outcome = match &result {
            Ok(_) => "OK",
            Err(e) => e.code(),
        };
        let recorded = self.audit(ctx, endpoint, rp_id, outcome, cert).await;
        match result {
            Ok(_) if !recorded => Err(E::audit_unavailable()),
            r => r,
        }
    }
}

/// A refused attempt as the audit trail records it: its stable code.
pub trait Refusal {
    fn code(&self) -> &str;
    /// The refusal of an attempt that succeeded but could not be audited.
    fn audit_unavailable() -> Self;
}

impl Refusal for LoginError {
    fn code(&self) -> &str {
        LoginError::code(self)
    }
    fn audit_unavailable() -> LoginError {
        LoginError::Unavailable(AUDIT_UNAVAILABLE.to_owned())
    }
}

impl Refusal for ClientAuthError {
    fn code(&self) -> &str {
        ClientAuthError::code(self)
    }
    fn audit_unavailable() -> ClientAuthError {
        ClientAuthError::Unavailable(AUDIT_UNAVAILABLE.to_owned())
    }
}

/// Why a successful attempt is refused when its audit row could not be written.
pub const AUDIT_UNAVAILABLE: &str = "audit trail unavailable";
