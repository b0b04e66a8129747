//! The HTTP side of `mykey-server projector`: `GET /metrics` (Prometheus: the projector's
//! per-projection position, lag and failures, and the consumer's assignment) and
//! `GET /readyz` on one listener — `MYKEY_METRICS_LISTEN` when set, else `MYKEY_LISTEN`, the
//! server's own convention for where `/metrics` is.

use crate::errors::Problem;
use crate::startup::StartupError;
use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use mykey_projections::kafka::projector::ProjectorStatus;
use std::net::{SocketAddr, TcpListener};

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
    let bind_err = |source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(bind_err)?;
    let port = listener.local_addr().map_err(bind_err)?.port();
    let registry = web::Data::new(registry);
    let status = web::Data::new(status);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(registry.clone())
            .app_data(status.clone())
            .wrap(crate::errors::routing_problems())
            .configure(crate::routes::auth::configure_metrics)
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .listen(listener)
    .map_err(bind_err)?
    .disable_signals()
    .run();
    Ok((port, server))
}
