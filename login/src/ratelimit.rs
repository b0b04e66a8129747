//! Per-client-address limiter for callers that fail to authenticate, checked before any
//! database work.
//!
//! Each address (an IPv6 address by its /64, which one subscriber usually holds whole) has a
//! token bucket of `burst` tokens refilled at `per_minute`. Every request on the token, login
//! and operator endpoints is checked against it *first*; only a refusal of an unauthenticated
//! caller (bad client assertion, unknown client, missing or bad access or operator token)
//! takes a token. So a relying party that authenticates — at any rate, e.g. 2,000 logins/s
//! from one address — is never slowed, while an address that keeps failing gets 429 with
//! `Retry-After` and costs nothing more: no event-store read, no audit write.
//!
//! Memory is bounded ([`MAX_TRACKED_ADDRESSES`]); full buckets are forgotten by the periodic
//! maintenance, never on a request. When the map is full, new addresses are not tracked (they
//! pass, counted by `mykey_rate_limiter_full_total`): failing open beats refusing everyone.

use dashmap::DashMap;
use std::net::IpAddr;

/// Addresses tracked at once (~64 bytes each).
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Default bucket size: a client that mistypes its configuration a few dozen times in a row
/// is not cut off yet.
pub const DEFAULT_BURST: u32 = 100;
/// Default refill: ten refusals a second sustained per address. Refusals are cheap (a
/// negative-cache hit and one counter increment), the bound is on the unauthenticated cost.
pub const DEFAULT_PER_MINUTE: u32 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// `MYKEY_RATE_LIMIT_BURST`; 0 disables the limiter.
    pub burst: u32,
    /// `MYKEY_RATE_LIMIT_PER_MINUTE`.
    pub per_minute: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            burst: DEFAULT_BURST,
            per_minute: DEFAULT_PER_MINUTE,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

#[derive(Debug)]
pub struct RateLimiter {
    settings: RateLimitSettings,
    buckets: DashMap<IpAddr, Bucket>,
}

/// The bucket key of an address: IPv6 by /64.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
    }
}

/// Refused: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> RateLimiter {
        RateLimiter {
            settings,
            buckets: DashMap::new(),
        }
    }

    fn enabled(&self) -> bool {
        self.settings.burst > 0
    }

    fn refill(&self, b: &mut Bucket, now_ms: i64) {
        let per_ms = f64::from(self.settings.per_minute) / 60_000.0;
        let elapsed = (now_ms - b.at_ms).max(0) as f64;
        b.tokens = (b.tokens + elapsed * per_ms).min(f64::from(self.settings.burst));
        b.at_ms = now_ms;
    }

    /// Before any work: may `addr` be served now?
    pub fn check(&self, addr: Option<IpAddr>, now_ms: i64) -> Result<(), Limited> {
        let (true, Some(addr)) = (self.enabled(), addr) else {
            return Ok(());
        };
        let Some(mut b) = self.buckets.get_mut(&key(addr)) else {
            return Ok(());
        };
        self.refill(&mut b, now_ms);
        if b.tokens >= 1.0 {
            return Ok(());
        }
        let per_sec = f64::from(self.settings.per_minute) / 60.0;
        let wait = if per_sec > 0.0 {
            ((1.0 - b.tokens) / per_sec).ceil().max(1.0)
        } else {
            60.0
        };
        Err(Limited {
            retry_after_secs: wait as u64,
        })
    }

    /// An unauthenticated refusal from `addr`: takes a token. False when the address could
    /// not be tracked (map full).
    pub fn charge(&self, addr: Option<IpAddr>, now_ms: i64) -> bool {
        let (true, Some(addr)) = (self.enabled(), addr) else {
            return true;
        };
        let k = key(addr);
        if let Some(mut b) = self.buckets.get_mut(&k) {
            self.refill(&mut b, now_ms);
            b.tokens = (b.tokens - 1.0).max(0.0);
            return true;
        }
        if self.buckets.len() >= MAX_TRACKED_ADDRESSES {
            return false;
        }
        self.buckets.insert(
            k,
            Bucket {
                tokens: f64::from(self.settings.burst) - 1.0,
                at_ms: now_ms,
            },
        );
        true
    }

    /// Forgets addresses whose bucket has refilled (maintenance, off the request path).
    pub fn sweep(&self, now_ms: i64) {
        let burst = f64::from(self.settings.burst);
        self.buckets.retain(|_, b| {
            self.refill(b, now_ms);
            b.tokens < burst
        });
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_empty_the_bucket_then_it_refills() {
        let l = RateLimiter::new(RateLimitSettings {
            burst: 3,
            per_minute: 60,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..3 {
            assert!(l.check(Some(a), 0).is_ok());
            l.charge(Some(a), 0);
        }
        assert_eq!(
            l.check(Some(a), 0),
            Err(Limited {
                retry_after_secs: 1
            })
        );
        // Another address is not affected; one second later one more attempt is allowed.
        assert!(l.check(Some(b), 0).is_ok());
        assert!(l.check(Some(a), 1_000).is_ok());
        l.sweep(1_000_000);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn an_ipv6_subscriber_is_one_bucket_and_zero_burst_disables() {
        let l = RateLimiter::new(RateLimitSettings {
            burst: 1,
            per_minute: 1,
        });
        let x: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
        let y: IpAddr = "2001:db8::2".parse().unwrap_or(IpAddr::from([0u8; 16]));
        l.charge(Some(x), 0);
        assert!(l.check(Some(y), 0).is_err());
        let off = RateLimiter::new(RateLimitSettings {
            burst: 0,
            per_minute: 0,
        });
        off.charge(Some(x), 0);
        assert!(off.check(Some(x), 0).is_ok());
    }
}
