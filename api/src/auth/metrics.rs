//! Login counters, exposed in Prometheus text format at `GET /metrics`.
//!
//! `mykey_crl_stale_refusals_total` is the alert: any increase means logins are being refused
//! because a CA's CRL was not refreshed in time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub pin_logins: AtomicU64,
    pub kazashi_logins: AtomicU64,
    pub login_refusals: AtomicU64,
    pub crl_stale_refusals: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub token_refusals: AtomicU64,
    pub audit_write_failures: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, c) in [
            ("mykey_pin_logins_total", "Successful PIN logins.", &self.pin_logins),
            ("mykey_kazashi_logins_total", "Successful kazashi (tap) logins.", &self.kazashi_logins),
            ("mykey_login_refusals_total", "Refused login attempts.", &self.login_refusals),
            (
                "mykey_crl_stale_refusals_total",
                "Logins refused because the CA's CRL is missing or past nextUpdate plus grace (alert on any increase).",
                &self.crl_stale_refusals,
            ),
            ("mykey_access_tokens_issued_total", "Access tokens issued to relying parties.", &self.tokens_issued),
            ("mykey_token_refusals_total", "Refused token requests.", &self.token_refusals),
            ("mykey_audit_write_failures_total", "Audit records that could not be written.", &self.audit_write_failures),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
        out
    }
}
