//! Login counters as `prometheus` collectors, registered into the [`prometheus::Registry`] of
//! the server application they belong to (`mykey-api`) (never the global default registry:
//! tests run several servers in one process). `GET /metrics` gathers that registry.
//!
//! `mykey_crl_stale_refusals_total` is the alert: any increase means logins are being refused
//! because a CA's CRL was not refreshed in time.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub pin_logins: IntCounter,
    pub kazashi_logins: IntCounter,
    pub login_refusals: IntCounter,
    pub crl_stale_refusals: IntCounter,
    pub tokens_issued: IntCounter,
    pub token_refusals: IntCounter,
    pub audit_write_failures: IntCounter,
    /// Audit batches that failed as a whole and were retried record by record.
    pub audit_batch_retries: IntCounter,
    /// Requests refused by the per-address limiter, by endpoint.
    pub rate_limited: IntCounterVec,
    /// Unauthenticated refusals from an address the limiter could not track (its map full).
    pub rate_limiter_full: IntCounter,
    /// Relying-party lookups that reached the write model (the event store); negative answers
    /// are cached, so a flood of unknown clients does not move this.
    pub rp_lookups: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Creates the login counters and registers them into `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "mykey_rate_limited_total",
                "Requests refused with 429 by the per-client-address limiter, before any database work.",
            ),
            &["endpoint"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        Ok(Metrics {
            pin_logins: counter(registry, "mykey_pin_logins_total", "Successful PIN logins.")?,
            kazashi_logins: counter(
                registry,
                "mykey_kazashi_logins_total",
                "Successful kazashi (tap) logins.",
            )?,
            login_refusals: counter(
                registry,
                "mykey_login_refusals_total",
                "Refused login attempts.",
            )?,
            crl_stale_refusals: counter(
                registry,
                "mykey_crl_stale_refusals_total",
                "Logins refused because the CA's CRL is missing or past nextUpdate plus grace (alert on any increase).",
            )?,
            tokens_issued: counter(
                registry,
                "mykey_access_tokens_issued_total",
                "Access tokens issued to relying parties.",
            )?,
            token_refusals: counter(
                registry,
                "mykey_token_refusals_total",
                "Refused token requests.",
            )?,
            audit_write_failures: counter(
                registry,
                "mykey_audit_write_failures_total",
                "Audit records that could not be written.",
            )?,
            audit_batch_retries: counter(
                registry,
                "mykey_audit_batch_retries_total",
                "Audit batches whose INSERT failed and were retried record by record.",
            )?,
            rate_limited,
            rate_limiter_full: counter(
                registry,
                "mykey_rate_limiter_full_total",
                "Unauthenticated refusals whose address the rate limiter could not track (too many addresses).",
            )?,
            rp_lookups: counter(
                registry,
                "mykey_rp_lookups_total",
                "Relying-party lookups answered by the write model (not the negative cache).",
            )?,
        })
    }
}

/// The registry's contents in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!("metrics encoding failed: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}
