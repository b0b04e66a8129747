//! The HTTP side of `mykey-server projector`: `GET /metrics` (Prometheus: the projector's
//! per-projection position, lag and failures, and the consumer's assignment) and
//! `GET /readyz` on one listener — `MYKEY_METRICS_LISTEN` when set, else `MYKEY_LISTEN`, the
//! server's own convention for where `/metrics` is.

use crate::errors::Problem;
use crate::startup::StartupError;
use actix_web::dev::Server;
use actix_web::{web, HttpResponse};
use mykey_projections::kafka::projector::ProjectorStatus;
use std::net::SocketAddr;

/// `200 { status: ready, projections, partitions }` while the projector consumes; a
/// projection stopped on an event shows there with its position, event type and error (the
/// others go on, as in the server's `/readyz`). `503` once the projector itself stopped.
async fn readyz(status: web::Data<ProjectorStatus>) -> Result<HttpResponse, Problem> {
    if !status.running() {
        return Err(Problem::unavailable("the Kafka projector has stopped"));
    }
    let partitions: Vec<String> = status
        .assignment()
        .into_iter()
        .map(|(topic, partition)| format!("{topic}[{partition}]"))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "projections": status.projections(),
        "partitions": partitions,
    })))
}

/// Binds `addr` and serves `/metrics` (from `registry`) and `/readyz` (from `status`).
/// Returns the bound port (for `:0`) and the server to run.
pub fn serve(
    addr: SocketAddr,
    registry: prometheus::Registry,
    status: ProjectorStatus,
) -> Result<(u16, Server), StartupError> {
    let (registry, status) = (web::Data::new(registry), web::Data::new(status));
    crate::startup::internal_server(addr, move |cfg| {
        cfg.app_data(registry.clone())
            .app_data(status.clone())
            .route("/readyz", web::get().to(readyz));
        crate::routes::auth::configure_metrics(cfg);
    })
}
