//! HTTP routes, one module per area.

pub mod auth;
pub mod health;
pub mod oauth;
pub mod operator;
pub mod wellknown;

use crate::errors::Problem;
use actix_web::{web, FromRequest, HttpRequest};

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
