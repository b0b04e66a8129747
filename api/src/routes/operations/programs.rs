//! `/v1/operator/programs`: create, extend, pause, resume, close (role `operator`); list and
//! get from the `programs` read model (operator, approver, auditor).

use super::{body, caller, command_problem, commands, path_id, read_body, run, Caller, READERS};
use crate::auth::operators::Role;
use crate::auth::Auth;
use crate::errors::Problem;
use crate::http::openapi::ProblemResponse;
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use mykey_commands::program::CreateProgram;
use mykey_domain::{ProgramId, RelyingPartyId};
use mykey_projections::models::programs::{self as model, ProgramFilter, ProgramStatus};
use serde::Deserialize;
use serde_json::json;

pub const PROJECTION: &str = "programs";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/operator/programs")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/v1/operator/programs/{id}").route(web::get().to(get)))
    .service(web::resource("/v1/operator/programs/{id}/{action}").route(web::post().to(act)));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProgram {
    pub id: String,
    pub municipality: String,
    pub name: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub new_end: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub municipality: Option<String>,
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

fn answer(id: &str, version: u64, appended: usize) -> serde_json::Value {
    json!({ "id": id, "version": version, "appended": appended })
}

fn program_id(raw: &str) -> Result<ProgramId, Problem> {
    path_id(raw, "program", ProgramId::parse)
}

/// POST /v1/operator/programs → 201.
#[utoipa::path(post, path = "/v1/operator/programs", tag = "operator", security(("bearer" = [])), params(("Idempotency-Key" = String, Header, description = "Required: a UUID; a retry with the same key and request gets the first answer")), request_body(content_type = "application/json", description = "`{ id, municipality, name, period_start, period_end }` (RFC 3339); at most 16 KiB"), responses((status = 201, description = "`{ id, version, appended, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn create(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let who: Caller = caller(&auth, &req, &[Role::Operator])?;
    let bytes = read_body(&req, payload).await?;
    let b: NewProgram = body(&bytes)?;
    let c = CreateProgram {
        id: ProgramId::parse(&b.id).map_err(|e| {
            Problem::coded("INVALID_INPUT", "Invalid input").with_detail(e.to_string())
        })?,
        municipality: RelyingPartyId::parse(&b.municipality).map_err(|e| {
            Problem::coded("INVALID_INPUT", "Invalid input").with_detail(e.to_string())
        })?,
        name: b.name,
        period_start: b.period_start,
        period_end: b.period_end,
    };
    let cmds = commands(&state);
    let (who, c, cmds) = (&who, &c, &cmds);
    run(&state, &req, who, &bytes, |id| async move {
        let done = cmds
            .create_program(&who.meta(id), c.clone())
            .await
            .map_err(command_problem)?;
        Ok((
            StatusCode::CREATED,
            answer(c.id.as_str(), done.version, done.appended),
            done.position,
        ))
    })
    .await
}

/// POST /v1/operator/programs/{id}/{extend|pause|resume|close}.
#[utoipa::path(post, path = "/v1/operator/programs/{id}/{action}", tag = "operator", security(("bearer" = [])), params(("Idempotency-Key" = String, Header, description = "Required: a UUID; a retry with the same key and request gets the first answer"), ("id" = String, Path, description = "The resource id"), ("action" = String, Path, description = "extend (body `{ new_end }`), pause (`{ reason }`), resume, close")), request_body(content_type = "application/json", description = "Per action; unknown fields refused"), responses((status = 200, description = "`{ id, version, appended, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn act(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (raw_id, action) = path.into_inner();
    if !matches!(action.as_str(), "extend" | "pause" | "resume" | "close") {
        return Err(super::not_found("program action"));
    }
    let who = caller(&auth, &req, &[Role::Operator])?;
    let id = program_id(&raw_id)?;
    let bytes = read_body(&req, payload).await?;
    let b: ActionBody = body(&bytes)?;
    let missing = |field: &str| {
        Problem::malformed_body().with_detail(format!("{action} needs the field {field}"))
    };
    let new_end = match (action.as_str(), b.new_end) {
        ("extend", None) => return Err(missing("new_end")),
        (_, end) => end,
    };
    let reason = match (action.as_str(), b.reason) {
        ("pause", None) => return Err(missing("reason")),
        (_, r) => r.unwrap_or_default(),
    };
    let cmds = commands(&state);
    let (who, id, action, cmds, reason) = (&who, &id, action.as_str(), &cmds, &reason);
    run(&state, &req, who, &bytes, |cid| async move {
        let meta = who.meta(cid);
        let done = match (action, new_end) {
            ("extend", Some(end)) => cmds.extend_program(&meta, id, end).await,
            ("pause", _) => cmds.pause_program(&meta, id, reason).await,
            ("resume", _) => cmds.resume_program(&meta, id).await,
            _ => cmds.close_program(&meta, id).await,
        }
        .map_err(command_problem)?;
        Ok((
            StatusCode::OK,
            answer(id.as_str(), done.version, done.appended),
            done.position,
        ))
    })
    .await
}

/// GET /v1/operator/programs?municipality=&status=&limit=&cursor=&min_position=
#[utoipa::path(get, path = "/v1/operator/programs", tag = "operator", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("limit" = Option<u32>, Query, description = "1..=500, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("municipality" = Option<String>, Query, description = "relying-party id"), ("status" = Option<String>, Query, description = "open, paused or closed")), responses((status = 200, description = "`{ items, next_cursor, position }`: programs by id"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn list(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    caller(&auth, &req, READERS)?;
    let q: ListQuery = super::query(&req)?;
    let filter = ProgramFilter {
        municipality: q
            .municipality
            .as_deref()
            .map(RelyingPartyId::parse)
            .transpose()
            .map_err(|e| super::bad_query(&e.to_string()))?,
        status: q
            .status
            .as_deref()
            .map(ProgramStatus::parse)
            .transpose()
            .map_err(|_| super::bad_query("status must be open, paused or closed"))?,
        accepting_at: None,
    };
    let page = super::page(q.limit, q.cursor.as_deref())?;
    super::answer(&state, &req, PROJECTION, async |client, schema| {
        model::list_programs(client, schema, &filter, &page)
            .await
            .map_err(super::query_problem)
    })
    .await
}

/// GET /v1/operator/programs/{id}
#[utoipa::path(get, path = "/v1/operator/programs/{id}", tag = "operator", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("id" = String, Path, description = "The resource id")), responses((status = 200, description = "The program and `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn get(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    caller(&auth, &req, READERS)?;
    let _: super::MinPositionOnly = super::query(&req)?;
    let id = program_id(&path)?;
    super::answer(&state, &req, PROJECTION, async |client, schema| {
        model::program(client, schema, &id)
            .await
            .map_err(super::query_problem)?
            .ok_or_else(|| super::not_found("program"))
    })
    .await
}
