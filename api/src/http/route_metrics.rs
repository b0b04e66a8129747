//! Request metrics per route *template* (`/v1/operator/relying-parties/{id}/key`, never the
//! concrete path): a count by status and a latency histogram, in the server's own registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Duration;

/// Latency buckets in seconds: the door benchmarks' p99 target is 5 ms, the read-your-writes
/// bound 2 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Clone)]
pub struct RouteMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl RouteMetrics {
    /// `mykey_http_requests_total{route,method,status}` and
    /// `mykey_http_request_duration_seconds{route,method}`, registered into `registry`.
    pub fn register(registry: &Registry) -> Result<RouteMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "mykey_http_requests_total",
                "HTTP requests by route template, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "mykey_http_request_duration_seconds",
                "HTTP request latency by route template and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(RouteMetrics { requests, latency })
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }
}
