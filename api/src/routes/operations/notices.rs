//! `/v1/operator/notices`: maintenance notices. Schedule, update, cancel (role `operator`);
//! list current or past and get one from the `notices` read model (operator, approver,
//! auditor).

use super::{body, caller, command_problem, commands, path_id, read_body, run, READERS};
use crate::auth::operators::Role;
use crate::auth::Auth;
use crate::errors::Problem;
use crate::http::openapi::ProblemResponse;
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use mykey_domain::maintenance::NoticeDetails;
use mykey_domain::NoticeId;
use mykey_projections::models::notices::{self as model, When};
use serde::Deserialize;
use serde_json::json;

pub const PROJECTION: &str = "notices";
/// Most affected services one notice names.
pub const MAX_SERVICES: usize = 50;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/operator/notices")
            .route(web::get().to(list))
            .route(web::post().to(schedule)),
    )
    .service(web::resource("/v1/operator/notices/{id}").route(web::get().to(get)))
    .service(web::resource("/v1/operator/notices/{id}/{action}").route(web::post().to(act)));
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Details {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub affected_services: Vec<String>,
    pub message_ja: String,
    pub message_en: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `current` (default), `past` or `all`.
    pub when: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

fn details(d: Details) -> Result<NoticeDetails, Problem> {
    if d.affected_services.len() > MAX_SERVICES {
        return Err(Problem::coded("INVALID_INPUT", "Invalid input")
            .with_detail(format!("at most {MAX_SERVICES} affected services")));
    }
    Ok(NoticeDetails {
        start: d.start,
        end: d.end,
        affected_services: d.affected_services,
        message_ja: d.message_ja,
        message_en: d.message_en,
    })
}

fn answer(id: &NoticeId, version: u64) -> serde_json::Value {
    json!({ "id": id.as_str(), "version": version })
}

/// POST /v1/operator/notices → 201: `id` and the [`Details`] fields. `#[serde(flatten)]`
/// cannot refuse unknown fields, so `id` is taken off the object and the rest read strictly.
#[utoipa::path(post, path = "/v1/operator/notices", tag = "operator", security(("bearer" = [])), params(("Idempotency-Key" = String, Header, description = "Required: a UUID; a retry with the same key and request gets the first answer")), request_body(content_type = "application/json", description = "`{ id, start, end, affected_services, message_ja, message_en }`; at most 16 KiB"), responses((status = 201, description = "`{ id, version, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn schedule(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let who = caller(&auth, &req, &[Role::Operator])?;
    let bytes = read_body(&req, payload).await?;
    let mut raw: serde_json::Map<String, serde_json::Value> = body(&bytes)?;
    let id = raw
        .remove("id")
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| Problem::malformed_body().with_detail("missing string field id"))?;
    let d: Details = serde_json::from_value(raw.into())
        .map_err(|e| Problem::malformed_body().with_detail(format!("invalid body: {e}")))?;
    let id = NoticeId::parse(&id)
        .map_err(|e| Problem::coded("INVALID_INPUT", "Invalid input").with_detail(e.to_string()))?;
    let d = details(d)?;
    let cmds = commands(&state);
    let (who_r, cmds, id) = (&who, &cmds, &id);
    run(&state, &req, who_r, &bytes, |cid| async move {
        let done = cmds
            .schedule_maintenance(&who_r.meta(cid), id, d)
            .await
            .map_err(command_problem)?;
        Ok((StatusCode::CREATED, answer(id, done.version), done.position))
    })
    .await
}

/// POST /v1/operator/notices/{id}/{update|cancel}.
#[utoipa::path(post, path = "/v1/operator/notices/{id}/{action}", tag = "operator", security(("bearer" = [])), params(("Idempotency-Key" = String, Header, description = "Required: a UUID; a retry with the same key and request gets the first answer"), ("id" = String, Path, description = "The resource id"), ("action" = String, Path, description = "update (body: the notice without id) or cancel (`{ reason }`)")), request_body(content_type = "application/json", description = "Per action"), responses((status = 200, description = "`{ id, version, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn act(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (raw_id, action) = path.into_inner();
    if !matches!(action.as_str(), "update" | "cancel") {
        return Err(super::not_found("notice action"));
    }
    let who = caller(&auth, &req, &[Role::Operator])?;
    let id = path_id(&raw_id, "notice", NoticeId::parse)?;
    let bytes = read_body(&req, payload).await?;
    let cmds = commands(&state);
    let (who_r, cmds, id_r) = (&who, &cmds, &id);
    if action == "update" {
        let d = details(body::<Details>(&bytes)?)?;
        run(&state, &req, who_r, &bytes, |cid| async move {
            let done = cmds
                .update_maintenance(&who_r.meta(cid), id_r, d)
                .await
                .map_err(command_problem)?;
            Ok((StatusCode::OK, answer(id_r, done.version), done.position))
        })
        .await
    } else {
        let c: Cancel = body(&bytes)?;
        run(&state, &req, who_r, &bytes, |cid| async move {
            let done = cmds
                .cancel_maintenance(&who_r.meta(cid), id_r, &c.reason)
                .await
                .map_err(command_problem)?;
            Ok((StatusCode::OK, answer(id_r, done.version), done.position))
        })
        .await
    }
}

/// GET /v1/operator/notices?when=current|past|all&limit=&cursor=&min_position=
#[utoipa::path(get, path = "/v1/operator/notices", tag = "operator", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("limit" = Option<u32>, Query, description = "1..=500, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("when" = Option<String>, Query, description = "current (default), past or all")), responses((status = 200, description = "`{ items, next_cursor, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn list(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    caller(&auth, &req, READERS)?;
    let q: ListQuery = super::query(&req)?;
    let now = auth.settings.clock.now();
    let when = match q.when.as_deref().unwrap_or("current") {
        "current" => When::Current(now),
        "past" => When::Past(now),
        "all" => When::All,
        _ => return Err(super::bad_query("when must be current, past or all")),
    };
    let page = super::page(q.limit, q.cursor.as_deref())?;
    super::answer(&state, &req, PROJECTION, async |client, schema| {
        model::list(client, schema, when, &page)
            .await
            .map_err(super::query_problem)
    })
    .await
}

/// GET /v1/operator/notices/{id}
#[utoipa::path(get, path = "/v1/operator/notices/{id}", tag = "operator", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("id" = String, Path, description = "The resource id")), responses((status = 200, description = "The notice and `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn get(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    caller(&auth, &req, READERS)?;
    let _: super::MinPositionOnly = super::query(&req)?;
    let id = path_id(&path, "notice", NoticeId::parse)?;
    super::answer(&state, &req, PROJECTION, async |client, schema| {
        model::notice(client, schema, &id)
            .await
            .map_err(super::query_problem)?
            .ok_or_else(|| super::not_found("notice"))
    })
    .await
}
