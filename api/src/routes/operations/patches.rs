//! `/v1/operator/patches`: the data-patch workflow. Request (role `operator`; the
//! Idempotency-Key's command id is the new patch's id) → dry-run (operator; answers the exact
//! compensating events it recorded) → approve or reject (role `approver`; approval is refused
//! for the requester and the dry-runner, 403 `PATCH_SELF_APPROVAL`) → apply (operator; a target
//! that moved since the dry-run is 409 `PATCH_TARGET_MOVED`). Lists and the whole history come
//! from the `patches` read model (operator, approver, auditor; also under `/v1/audit/patches`).

use super::{body, caller, command_problem, commands, read_body, run, READERS};
use crate::auth::operators::Role;
use crate::auth::Auth;
use crate::errors::Problem;
use crate::http::openapi::ProblemResponse;
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mykey_commands::patch::RequestPatch;
use mykey_domain::application::ReviewOutcome;
use mykey_domain::patch::{PatchAction, PlannedAppend};
use mykey_domain::{Ppid, ProgramId, SubjectId};
use mykey_projections::models::patches::{self as model, PatchStatus};
use mykey_schemas::StreamId;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

pub const PROJECTION: &str = "patches";
/// Most actions (and declared targets) one patch may carry: a patch is reviewed by a person.
pub const MAX_PATCH_ACTIONS: usize = 20;
/// Longest free text (ticket, reason) in a patch request.
pub const MAX_TEXT: usize = 2_000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/operator/patches")
            .route(web::get().to(list))
            .route(web::post().to(request)),
    )
    .service(web::resource("/v1/operator/patches/{id}").route(web::get().to(get)))
    .service(web::resource("/v1/operator/patches/{id}/{action}").route(web::post().to(act)))
    .service(web::resource("/v1/audit/patches").route(web::get().to(list_audit)))
    .service(web::resource("/v1/audit/patches/{id}").route(web::get().to(get_audit)));
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Outcome {
    Approved { points: u64 },
    Rejected { reason: String },
}

/// One action of a patch request (`kind` tags it).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    InvalidatePpid {
        ppid: String,
        reason: String,
    },
    UnlinkPaymentService {
        program: String,
        subject: Uuid,
        reason: String,
    },
    CorrectReviewOutcome {
        program: String,
        subject: Uuid,
        outcome: Outcome,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPatch {
    pub ticket_id: String,
    pub reason: String,
    /// Stream ids the patch may touch (e.g. `ppid-…`, `subject-…`, `application-…`).
    pub targets: Vec<String>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::coded("INVALID_INPUT", "Invalid input").with_detail(detail)
}

fn text(field: &str, v: &str) -> Result<(), Problem> {
    if v.trim().is_empty() || v.len() > MAX_TEXT || v.contains('\0') {
        return Err(invalid(format!(
            "{field} must be 1..={MAX_TEXT} bytes of text"
        )));
    }
    Ok(())
}

fn action(a: Action) -> Result<PatchAction, Problem> {
    let program = |p: &str| ProgramId::parse(p).map_err(|e| invalid(e.to_string()));
    Ok(match a {
        Action::InvalidatePpid { ppid, reason } => {
            text("reason", &reason)?;
            PatchAction::InvalidatePpid {
                ppid: Ppid::parse(&ppid).map_err(|e| invalid(e.to_string()))?,
                reason,
            }
        }
        Action::UnlinkPaymentService {
            program: p,
            subject,
            reason,
        } => {
            text("reason", &reason)?;
            PatchAction::UnlinkPaymentService {
                program: program(&p)?,
                subject: SubjectId(subject),
                reason,
            }
        }
        Action::CorrectReviewOutcome {
            program: p,
            subject,
            outcome,
            reason,
        } => {
            text("reason", &reason)?;
            PatchAction::CorrectReviewOutcome {
                program: program(&p)?,
                subject: SubjectId(subject),
                outcome: match outcome {
                    Outcome::Approved { points } => ReviewOutcome::Approved { points },
                    Outcome::Rejected { reason } => {
                        text("outcome reason", &reason)?;
                        ReviewOutcome::Rejected { reason }
                    }
                },
                reason,
            }
        }
    })
}

fn to_request(patch_id: Uuid, b: NewPatch) -> Result<RequestPatch, Problem> {
    text("ticket_id", &b.ticket_id)?;
    text("reason", &b.reason)?;
    if b.actions.len() > MAX_PATCH_ACTIONS || b.targets.len() > MAX_PATCH_ACTIONS * 2 {
        return Err(invalid(format!(
            "at most {MAX_PATCH_ACTIONS} actions and {} targets",
            MAX_PATCH_ACTIONS * 2
        )));
    }
    Ok(RequestPatch {
        patch_id,
        ticket_id: b.ticket_id,
        reason: b.reason,
        targets: b
            .targets
            .iter()
            .map(|t| StreamId::parse(t).map_err(|e| invalid(e.to_string())))
            .collect::<Result<_, _>>()?,
        actions: b
            .actions
            .into_iter()
            .map(action)
            .collect::<Result<_, _>>()?,
    })
}

/// The dry-run's plan as JSON: per stream, the version it expects and the exact events
/// (ids, types, schema versions and stored payloads) applying will append.
pub fn plan_json(plan: &[PlannedAppend]) -> Value {
    Value::Array(
        plan.iter()
            .map(|p| {
                json!({
                    "stream": p.stream,
                    "expected_version": p.expected_version,
                    "events": p.events.iter().map(|e| json!({
                        "event_id": e.event_id,
                        "event_type": e.event_type,
                        "schema_version": e.schema_version,
                        "payload": serde_json::from_str::<Value>(&e.payload)
                            .unwrap_or_else(|_| Value::String(e.payload.clone())),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn patch_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| super::not_found("patch"))
}

/// POST /v1/operator/patches → 201 `{ patch_id, position }`.
#[utoipa::path(post, path = "/v1/operator/patches", tag = "operator", security(("bearer" = [])), params(("Idempotency-Key" = String, Header, description = "Required: a UUID; a retry with the same key and request gets the first answer")), request_body(content_type = "application/json", description = "`{ ticket_id, reason, targets: [stream id], actions: [{ kind: invalidate_ppid | unlink_payment_service | correct_review_outcome, ... }] }`; at most 20 actions"), responses((status = 201, description = "`{ patch_id, version, position }`; the patch id is the Idempotency-Key's command id"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn request(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let who = caller(&auth, &req, &[Role::Operator])?;
    let bytes = read_body(&req, payload).await?;
    let b: NewPatch = body(&bytes)?;
    let cmds = commands(&state);
    let (who_r, cmds) = (&who, &cmds);
    run(&state, &req, who_r, &bytes, |id| async move {
        let r = to_request(id, b)?;
        let done = cmds
            .request_patch(&who_r.meta(id), r)
            .await
            .map_err(command_problem)?;
        Ok((
            StatusCode::CREATED,
            json!({ "patch_id": id, "version": done.version }),
            done.position,
        ))
    })
    .await
}

/// POST /v1/operator/patches/{id}/{dry-run|approve|reject|apply}.
#[utoipa::path(post, path = "/v1/operator/patches/{id}/{action}", tag = "operator", security(("bearer" = [])), params(("Idempotency-Key" = String, Header, description = "Required: a UUID; a retry with the same key and request gets the first answer"), ("id" = String, Path, description = "The resource id"), ("action" = String, Path, description = "dry-run and apply (role operator); approve and reject (role approver, reject needs `{ reason }`); approval by the requester or dry-runner is 403 PATCH_SELF_APPROVAL; a target moved since the dry-run is 409 PATCH_TARGET_MOVED")), request_body(content_type = "application/json", description = "`{}` or `{ reason }`"), responses((status = 200, description = "`{ patch_id, status, version, appended, position }`; dry-run adds `plan`: per stream the expected version and the exact events apply will append"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn act(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (raw_id, action) = path.into_inner();
    let roles: &[Role] = match action.as_str() {
        "dry-run" | "apply" => &[Role::Operator],
        "approve" | "reject" => &[Role::Approver],
        _ => return Err(super::not_found("patch action")),
    };
    let who = caller(&auth, &req, roles)?;
    let id = patch_id(&raw_id)?;
    let bytes = read_body(&req, payload).await?;
    let b: ActionBody = body(&bytes)?;
    let reason = match (action.as_str(), b.reason) {
        ("reject", None) => {
            return Err(Problem::malformed_body().with_detail("reject needs the field reason"))
        }
        (_, Some(r)) => {
            text("reason", &r)?;
            r
        }
        (_, None) => String::new(),
    };
    let cmds = commands(&state);
    let (who_r, cmds, action, reason) = (&who, &cmds, action.as_str(), &reason);
    run(&state, &req, who_r, &bytes, |cid| async move {
        let meta = who_r.meta(cid);
        let done = match action {
            "dry-run" => cmds.dry_run_patch(&meta, id).await,
            "approve" => cmds.approve_patch(&meta, id).await,
            "reject" => cmds.reject_patch(&meta, id, reason).await,
            _ => cmds.apply_patch(&meta, id).await,
        }
        .map_err(command_problem)?;
        let status = done.state.as_ref().map(|p| format!("{:?}", p.status));
        let mut out = json!({
            "patch_id": id,
            "status": status.map(|s| snake(&s)),
            "version": done.version,
            "appended": done.appended,
        });
        if action == "dry-run" {
            let plan = done
                .state
                .as_ref()
                .map(|p| p.plan.as_slice())
                .unwrap_or(&[]);
            out["plan"] = plan_json(plan);
        }
        Ok((StatusCode::OK, out, done.position))
    })
    .await
}

/// `DryRun` → `dry_run`.
fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

async fn list_as(
    auth: &Auth,
    state: &AppState,
    req: &HttpRequest,
    roles: &[Role],
) -> Result<HttpResponse, Problem> {
    caller(auth, req, roles)?;
    let q: ListQuery = super::query(req)?;
    let status = q
        .status
        .as_deref()
        .map(PatchStatus::parse)
        .transpose()
        .map_err(|_| {
            super::bad_query(
                "status must be requested, dry_run, approved, applied, rejected or expired",
            )
        })?;
    let page = super::page(q.limit, q.cursor.as_deref())?;
    super::answer(state, req, PROJECTION, async |client, schema| {
        model::list(client, schema, status, &page)
            .await
            .map_err(super::query_problem)
    })
    .await
}

async fn get_as(
    auth: &Auth,
    state: &AppState,
    req: &HttpRequest,
    raw: &str,
    roles: &[Role],
) -> Result<HttpResponse, Problem> {
    caller(auth, req, roles)?;
    let _: super::MinPositionOnly = super::query(req)?;
    let id = patch_id(raw)?;
    super::answer(state, req, PROJECTION, async |client, schema| {
        model::patch(client, schema, id)
            .await
            .map_err(super::query_problem)?
            .ok_or_else(|| super::not_found("patch"))
    })
    .await
}

/// GET /v1/operator/patches?status=&limit=&cursor=&min_position=
#[utoipa::path(get, path = "/v1/operator/patches", tag = "operator", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("limit" = Option<u32>, Query, description = "1..=500, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("status" = Option<String>, Query, description = "requested, dry_run, approved, applied, rejected or expired")), responses((status = 200, description = "`{ items, next_cursor, position }`: patches by id"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn list(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    list_as(&auth, &state, &req, READERS).await
}

/// GET /v1/operator/patches/{id}: the patch, its workflow steps and the events it appended.
#[utoipa::path(get, path = "/v1/operator/patches/{id}", tag = "operator", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("id" = String, Path, description = "The resource id")), responses((status = 200, description = "`{ patch, steps, effects, position }`: the patch, its workflow history and the events it appended"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn get(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    get_as(&auth, &state, &req, &path, READERS).await
}

/// GET /v1/audit/patches (role auditor).
#[utoipa::path(get, path = "/v1/audit/patches", tag = "audit", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("limit" = Option<u32>, Query, description = "1..=500, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("status" = Option<String>, Query, description = "as /v1/operator/patches")), responses((status = 200, description = "As /v1/operator/patches, role auditor"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn list_audit(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    list_as(&auth, &state, &req, &[Role::Auditor]).await
}

/// GET /v1/audit/patches/{id} (role auditor).
#[utoipa::path(get, path = "/v1/audit/patches/{id}", tag = "audit", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("id" = String, Path, description = "The resource id")), responses((status = 200, description = "As /v1/operator/patches/{id}, role auditor"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn get_audit(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    get_as(&auth, &state, &req, &path, &[Role::Auditor]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_snake_case() {
        assert_eq!(snake("DryRun"), "dry_run");
        assert_eq!(snake("Applied"), "applied");
    }

    #[test]
    fn a_request_body_names_its_action_kind_and_refuses_unknown_fields() {
        let ok: Result<NewPatch, _> = serde_json::from_value(json!({
            "ticket_id": "INC-1", "reason": "r", "targets": [],
            "actions": [{ "kind": "correct_review_outcome", "program": "p",
                "subject": Uuid::nil(), "outcome": { "approved": { "points": 5 } }, "reason": "r" }]
        }));
        assert!(ok.is_ok(), "{ok:?}");
        let bad: Result<NewPatch, _> = serde_json::from_value(json!({
            "ticket_id": "INC-1", "reason": "r", "targets": [],
            "actions": [{ "kind": "invalidate_ppid", "ppid": "x", "reason": "r", "extra": 1 }]
        }));
        assert!(bad.is_err());
    }
}
