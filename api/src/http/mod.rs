//! The HTTP layer every door shares (issue 10, "Across all doors"): idempotency keys,
//! read-your-writes, the access log, per-route metrics and the generated OpenAPI document.
//!
//! A door's handler authenticates its caller, then calls [`attach_principal`] so the access log
//! and the correlation id know who it was; [`observe`] (wrapped around the whole app in
//! [`crate::startup`]) records every request after the answer is made.

pub mod access_log;
pub mod consistency;
pub mod idempotency;
pub mod openapi;
pub mod route_metrics;

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};
use std::time::Instant;
use uuid::Uuid;

/// The response header carrying the request's correlation id.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Who made a request, once its handler authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The operator id, relying-party id, citizen session subject, ...
    pub id: String,
    /// `operator`, `approver`, `auditor`, `relying_party`, `citizen`, ...
    pub role: String,
    /// The relying party the caller acts for, if any.
    pub rp: Option<String>,
}

/// The correlation id recorded for a request: made by [`observe`], replaced by the caller's own
/// once the caller authenticated ([`attach_principal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationId(pub Uuid);

/// Records `principal` (and the correlation id the handler settled on) with the request, for
/// the access log and the `X-Correlation-Id` answer header.
pub fn attach_principal(req: &HttpRequest, principal: Principal, correlation_id: Uuid) {
    let mut ext = req.extensions_mut();
    ext.insert(principal);
    ext.insert(CorrelationId(correlation_id));
}

/// The request's correlation id as [`observe`] made it (a fresh one outside the middleware).
pub fn correlation_id(req: &HttpRequest) -> Uuid {
    req.extensions()
        .get::<CorrelationId>()
        .map_or_else(Uuid::new_v4, |c| c.0)
}

/// What [`observe`] feeds: the access log and the route metrics.
#[derive(Debug, Clone)]
pub struct Observer {
    pub access_log: access_log::AccessLog,
    pub metrics: route_metrics::RouteMetrics,
}

/// Route label of a request no route matched: one label, so scanners cannot blow up the
/// metrics' cardinality.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// Middleware body: gives the request a correlation id, runs it, then (off the request path)
/// queues its access-log record and counts it by route template.
pub fn observe<S, B>(
    observer: &Observer,
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: actix_web::dev::Service<
        ServiceRequest,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let started = Instant::now();
    let at = chrono::Utc::now();
    let made_correlation_id = Uuid::new_v4();
    req.extensions_mut()
        .insert(CorrelationId(made_correlation_id));
    let method = method_label(req.method());
    let observer = observer.clone();
    let fut = srv.call(req);
    async move {
        let result = fut.await;
        let elapsed = started.elapsed();
        // The request is not cloned before the call: routing needs it unshared. An error that
        // escapes the app as `Err` (answered after us) is recorded without route or principal.
        let (route, principal, correlation_id, status) = match &result {
            Ok(res) => {
                let req = res.request();
                let route = req
                    .match_pattern()
                    .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
                let principal = req.extensions().get::<Principal>().cloned();
                (route, principal, correlation_id(req), res.status().as_u16())
            }
            Err(e) => (
                UNMATCHED_ROUTE.to_owned(),
                None,
                made_correlation_id,
                e.as_response_error().status_code().as_u16(),
            ),
        };
        observer.metrics.observe(&route, &method, status, elapsed);
        observer.access_log.record(access_log::AccessRecord {
            at,
            principal: principal.as_ref().map(|p| p.id.clone()),
            role: principal.as_ref().map(|p| p.role.clone()),
            rp: principal.and_then(|p| p.rp),
            route,
            method,
            status,
            latency_us: i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX),
            correlation_id,
        });
        let mut res = result?;
        if !res.headers().contains_key(CORRELATION_HEADER) {
            if let Ok(v) = HeaderValue::from_str(&correlation_id.to_string()) {
                res.headers_mut()
                    .insert(HeaderName::from_static(CORRELATION_HEADER), v);
            }
        }
        Ok(res)
    }
}

/// A method as a label: extension methods are one `OTHER`, like unknown paths.
fn method_label(method: &actix_web::http::Method) -> String {
    use actix_web::http::Method as M;
    match *method {
        M::GET | M::POST | M::PUT | M::PATCH | M::DELETE | M::HEAD | M::OPTIONS => {
            method.to_string()
        }
        _ => "OTHER".to_owned(),
    }
}

/// A small pool for the shared layer's tables (idempotency keys, access log).
pub const HTTP_POOL_SIZE: usize = 4;

/// Why the shared layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpLayerError {
    #[error("database pool: {0}")]
    Pool(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The pool the shared layer's tables are reached through.
pub fn pool(pg: tokio_postgres::Config) -> Result<deadpool_postgres::Pool, HttpLayerError> {
    let wait = std::time::Duration::from_secs(5);
    mykey_store::pg::pool(pg, HTTP_POOL_SIZE, wait, wait)
        .map_err(|e| HttpLayerError::Pool(e.to_string()))
}
