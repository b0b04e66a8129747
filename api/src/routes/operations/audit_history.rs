//! The auditor's door over the event log itself (role `auditor`, read-only):
//!
//! - `GET /v1/audit/streams/{stream_id}/events?limit=&cursor=`: any stream's full history in
//!   version order, with actor, role, command, correlation, causation and patch ids; events a
//!   data patch appended are marked `compensating`. This is the one read that goes to the log
//!   rather than a read model: the log is what it shows.
//! - `GET /v1/audit/log/head`: the log's current head position and its hash (the hash chain's
//!   tip, which a signed checkpoint commits to).

use super::{bad_query, caller};
use crate::auth::operators::Role;
use crate::auth::Auth;
use crate::errors::Problem;
use crate::http::openapi::ProblemResponse;
use crate::startup::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mykey_projections::models::{DEFAULT_LIMIT, MAX_LIMIT};
use mykey_schemas::{EventEnvelope, StreamId};
use mykey_store::EventStore;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/audit/streams/{stream_id}/events").route(web::get().to(stream_events)),
    )
    .service(web::resource("/v1/audit/log/head").route(web::get().to(log_head)))
    .service(web::resource("/v1/audit/access-log").route(web::get().to(access_log)));
}

/// Longest time range one access-log export over HTTP covers (the answer is built in memory;
/// longer ranges are exported in several requests or with the CLI).
pub const MAX_EXPORT_DAYS: i64 = 7;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogQuery {
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    pub principal: Option<String>,
    /// `csv` (default) or `ndjson`.
    pub format: Option<String>,
}

/// GET /v1/audit/access-log?from=&to=&principal=&format=csv|ndjson (role auditor): the
/// access log's records with `from <= at < to`, oldest first
/// ([`crate::http::access_log::export`]).
#[utoipa::path(get, path = "/v1/audit/access-log", tag = "audit", security(("bearer" = [])),
    params(("from" = String, Query, description = "RFC 3339, inclusive"), ("to" = String, Query, description = "RFC 3339, exclusive; at most 7 days after from"), ("principal" = Option<String>, Query, description = "Only this principal's requests"), ("format" = Option<String>, Query, description = "csv (default, `text/csv; header=present`) or ndjson")),
    responses((status = 200, description = "The records: time, principal, role, RP, route template, method, status, latency, correlation id"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn access_log(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    use crate::http::access_log::{export, ExportFilter, ExportFormat};
    caller(&auth, &req, &[Role::Auditor])?;
    let q: AccessLogQuery = super::query(&req)?;
    if q.to <= q.from || q.to - q.from > chrono::Duration::days(MAX_EXPORT_DAYS) {
        return Err(bad_query(&format!(
            "to must be after from, by at most {MAX_EXPORT_DAYS} days"
        )));
    }
    let format = match q.format.as_deref().unwrap_or("csv") {
        "csv" => ExportFormat::Csv,
        "ndjson" => ExportFormat::Ndjson,
        _ => return Err(bad_query("format must be csv or ndjson")),
    };
    let filter = ExportFilter {
        from: q.from,
        to: q.to,
        principal: q.principal,
    };
    let mut client = super::client(&state).await?;
    let pg: &mut tokio_postgres::Client = &mut client;
    let mut out = Vec::new();
    export(pg, &filter, format, &mut out)
        .await
        .map_err(Problem::unavailable)?;
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .body(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

fn encode_cursor(next_version: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("sv:{next_version}"))
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix("sv:")?
        .parse()
        .ok()
        .filter(|v| *v >= 1)
}

/// One event as the auditor sees it.
pub fn event_json(e: &EventEnvelope) -> Value {
    let m = &e.metadata;
    json!({
        "global_position": e.global_position,
        "stream_id": e.stream_id.as_str(),
        "stream_version": e.stream_version,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "recorded_at": e.recorded_at,
        "payload": serde_json::from_str::<Value>(&e.payload)
            .unwrap_or_else(|_| Value::String(e.payload.clone())),
        "actor_id": m.actor_id,
        "actor_role": m.actor_role,
        "command_id": m.command_id,
        "correlation_id": m.correlation_id,
        "causation_id": m.causation_id,
        "patch_id": m.patch_id,
        "compensating": m.patch_id.is_some(),
        "hash": e.hash.to_hex(),
    })
}

/// GET /v1/audit/streams/{stream_id}/events. An unknown (or malformed) stream id is 404.
#[utoipa::path(get, path = "/v1/audit/streams/{stream_id}/events", tag = "audit", security(("bearer" = [])), params(("stream_id" = String, Path, description = "e.g. ppid-…, subject-…, application-…"), ("limit" = Option<u32>, Query, description = "1..=500, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "`{ items, next_cursor }`: events in version order with actor, role, command, correlation, causation and patch ids; `compensating` marks events a data patch appended"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn stream_events(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    caller(&auth, &req, &[Role::Auditor])?;
    let q: HistoryQuery = super::query(&req)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad_query(&format!("limit must be 1..={MAX_LIMIT}")));
    }
    let from = match q.cursor.as_deref() {
        None => 1,
        Some(c) => decode_cursor(c).ok_or_else(|| bad_query("unknown cursor"))?,
    };
    let stream = StreamId::parse(&path).map_err(|_| super::not_found("stream"))?;
    let mut events = state
        .store
        .read_stream(&stream, from, limit as usize + 1)
        .await
        .map_err(Problem::unavailable)?;
    if events.is_empty() && from == 1 {
        return Err(super::not_found("stream"));
    }
    let next = (events.len() > limit as usize).then(|| {
        events.truncate(limit as usize);
        encode_cursor(events.last().map_or(from, |e| e.stream_version + 1))
    });
    let items: Vec<Value> = events.iter().map(event_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": next })))
}

/// GET /v1/audit/log/head → `{ position, hash }` (position 0 and no hash for an empty log).
#[utoipa::path(get, path = "/v1/audit/log/head", tag = "audit", security(("bearer" = [])), responses((status = 200, description = "`{ position, hash }`: the head position and its hash-chain hash (null for an empty log)"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn log_head(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    caller(&auth, &req, &[Role::Auditor])?;
    let _: HistoryQueryNone = super::query(&req)?;
    let head = state.store.head().await.map_err(Problem::unavailable)?;
    let hash = if head == 0 {
        None
    } else {
        state
            .store
            .read_all(head, 1)
            .await
            .map_err(Problem::unavailable)?
            .first()
            .map(|e| e.hash.to_hex())
    };
    Ok(HttpResponse::Ok().json(json!({ "position": head, "hash": hash })))
}

/// `GET /v1/audit/log/head` takes no parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQueryNone {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(decode_cursor(&encode_cursor(7)), Some(7));
        assert_eq!(decode_cursor(&encode_cursor(0)), None);
        assert_eq!(decode_cursor("7"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("cp:1")), None);
    }
}
