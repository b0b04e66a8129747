//! HTTP routes, one module per area.

pub mod auth;
pub mod citizen;
pub mod health;
pub mod ical;
pub mod oauth;
pub mod operations;
pub mod operator;
pub mod provider;
pub mod read;
pub mod rp;
pub mod wellknown;

use crate::codes::status_of;
use crate::errors::Problem;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use mykey_commands::CommandError;

/// Registers, for every path of the generated document ([`crate::http::openapi`]), a 405
/// `METHOD_NOT_ALLOWED` answer (with `Allow`) as problem+json for the methods it does not
/// take. Registered last, so the real routes win; a path not in the document answers 404
/// `NOT_FOUND` ([`crate::errors::routing_problem`]). `metrics` says whether `/metrics` is
/// served here.
pub fn configure_method_fallbacks(cfg: &mut web::ServiceConfig, metrics: bool) {
    let mut allowed: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (path, method) in crate::http::openapi::operations() {
        allowed.entry(path).or_default().push(method);
    }
    for (path, methods) in allowed {
        if path == "/metrics" && !metrics {
            continue;
        }
        let allow = methods.join(", ");
        cfg.service(
            web::resource(path.as_str()).default_service(web::to(move || {
                let allow = allow.clone();
                async move {
                    let mut response: HttpResponse =
                        Problem::coded("METHOD_NOT_ALLOWED", "Method not allowed").error_response();
                    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
                        response
                            .headers_mut()
                            .insert(actix_web::http::header::ALLOW, v);
                    }
                    response
                }
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

/// A write-model refusal or failure as problem+json (status from [`crate::codes`]).
pub fn command_problem(e: CommandError) -> Problem {
    match &e {
        CommandError::Domain(d) => {
            Problem::new(status_of(d.code()), d.code(), "Refused").with_detail(d.to_string())
        }
        CommandError::Contention { .. } | CommandError::Store(_) => Problem::unavailable(&e),
        _ => {
            tracing::error!(error = %e, "operator command failed");
            Problem::internal()
        }
    }
}
