//! Liveness and readiness.

use crate::errors::Problem;
use crate::http::openapi::ProblemResponse;
use crate::startup::AppState;
use actix_web::{get, web, HttpResponse};
use mykey_store::EventStore;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "`{ status: ok }`")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The process can serve: the event log answers. The detail lists each projection's position,
/// lag and, for one stopped on an event, the position, event type and error.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, description = "`{ status: ready, log_head }`"), (status = 503, response = ProblemResponse)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let head = state
        .store
        .head()
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "log_head": head,
        "projections": state.projections.statuses(),
    })))
}
