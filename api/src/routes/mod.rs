//! HTTP routes, one module per area.

pub mod auth;
pub mod health;
pub mod oauth;
pub mod operator;
pub mod wellknown;

use crate::errors::Problem;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};

/// Every path the server serves and the one method it takes there (`api/openapi.yaml` documents
/// exactly these, held by a test; `{id}/key` is one `{id}/{action}`). Registered last, so a
/// request with another method answers 405 `METHOD_NOT_ALLOWED` (with `Allow`) as
/// problem+json; a path not listed answers 404 `NOT_FOUND` ([`crate::errors::routing_problem`]).
pub const PATHS: &[(&str, &str)] = &[
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/metrics", "GET"),
    ("/.well-known/openid-configuration", "GET"),
    ("/.well-known/jwks.json", "GET"),
    ("/v1/oauth/token", "POST"),
    ("/v1/auth/challenges", "POST"),
    ("/v1/auth/login", "POST"),
    ("/v1/auth/kazashi", "POST"),
    ("/v1/operator/crls", "POST"),
    ("/v1/operator/renewals", "POST"),
    ("/v1/operator/signing-keys/rotate", "POST"),
    ("/v1/operator/relying-parties", "POST"),
    ("/v1/operator/relying-parties/{id}/{action}", "POST"),
];

/// Registers the 405 answers for [`PATHS`]; `metrics` says whether `/metrics` is served here.
pub fn configure_method_fallbacks(cfg: &mut web::ServiceConfig, metrics: bool) {
    for (path, allow) in PATHS {
        if *path == "/metrics" && !metrics {
            continue;
        }
        let allow = *allow;
        cfg.service(
            web::resource(*path).default_service(web::to(move || async move {
                let mut response: HttpResponse =
                    Problem::coded("METHOD_NOT_ALLOWED", "Method not allowed").error_response();
                response.headers_mut().insert(
                    actix_web::http::header::ALLOW,
                    actix_web::http::header::HeaderValue::from_static(allow),
                );
                response
            })),
        );
    }
}

/// Extracts a body (`web::Json<T>`, `web::Form<T>`) inside a handler rather than as an
/// argument, with the app's configured limit and error handler, so the handler can record a
/// refused body (too large, wrong type, malformed) as an attempt before answering.
pub(crate) async fn extract_body<E>(req: &HttpRequest, payload: web::Payload) -> Result<E, Problem>
where
    E: FromRequest,
    E::Error: Into<actix_web::Error>,
{
    E::from_request(req, &mut payload.into_inner())
        .await
        .map_err(|e| {
            let e: actix_web::Error = e.into();
            // The configured error handlers (JSON, form) answer with a Problem: keep its code.
            if let Some(p) = e.as_error::<Problem>() {
                return p.clone();
            }
            match e.as_error::<actix_web::error::PayloadError>() {
                Some(actix_web::error::PayloadError::Overflow) => Problem::body_too_large(),
                _ => Problem::malformed_body(),
            }
        })
}
