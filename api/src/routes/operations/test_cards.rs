//! `/v1/operator/test-cards`: the test-card register. Register, lend, return, inventory check,
//! report lost (role `operator`); list and get from the `test_cards` read model (operator,
//! approver, auditor).

use super::{body, caller, command_problem, commands, path_id, read_body, run, READERS};
use crate::auth::operators::Role;
use crate::auth::Auth;
use crate::errors::Problem;
use crate::http::openapi::ProblemResponse;
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mykey_domain::test_card::{Borrower, BorrowerKind};
use mykey_domain::TestCardId;
use mykey_projections::models::test_cards::{self as model, CardStatus};
use serde::Deserialize;
use serde_json::json;

pub const PROJECTION: &str = "test_cards";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/operator/test-cards")
            .route(web::get().to(list))
            .route(web::post().to(register)),
    )
    .service(web::resource("/v1/operator/test-cards/{id}").route(web::get().to(get)))
    .service(web::resource("/v1/operator/test-cards/{id}/{action}").route(web::post().to(act)));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCard {
    pub id: String,
    pub label: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// `lend`: `vendor` or `municipality`.
    pub borrower_kind: Option<String>,
    /// `lend`: who borrows the card.
    pub borrower_name: Option<String>,
    /// `report-lost`: what is known.
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `in_stock`, `lent` or `lost`.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

fn answer(id: &TestCardId, version: u64) -> serde_json::Value {
    json!({ "id": id.as_str(), "version": version })
}

/// POST /v1/operator/test-cards → 201.
#[utoipa::path(post, path = "/v1/operator/test-cards", tag = "operator", security(("bearer" = [])), params(("Idempotency-Key" = String, Header, description = "Required: a UUID; a retry with the same key and request gets the first answer")), request_body(content_type = "application/json", description = "`{ id, label }`"), responses((status = 201, description = "`{ id, version, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn register(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let who = caller(&auth, &req, &[Role::Operator])?;
    let bytes = read_body(&req, payload).await?;
    let b: NewCard = body(&bytes)?;
    let id = TestCardId::parse(&b.id)
        .map_err(|e| Problem::coded("INVALID_INPUT", "Invalid input").with_detail(e.to_string()))?;
    let cmds = commands(&state);
    let (who_r, cmds, id, label) = (&who, &cmds, &id, &b.label);
    run(&state, &req, who_r, &bytes, |cid| async move {
        let done = cmds
            .register_test_card(&who_r.meta(cid), id, label)
            .await
            .map_err(command_problem)?;
        Ok((StatusCode::CREATED, answer(id, done.version), done.position))
    })
    .await
}

/// POST /v1/operator/test-cards/{id}/{lend|return|inventory-check|report-lost}.
#[utoipa::path(post, path = "/v1/operator/test-cards/{id}/{action}", tag = "operator", security(("bearer" = [])), params(("Idempotency-Key" = String, Header, description = "Required: a UUID; a retry with the same key and request gets the first answer"), ("id" = String, Path, description = "The resource id"), ("action" = String, Path, description = "lend (`{ borrower_kind: vendor|municipality, borrower_name }`), return, inventory-check, report-lost (`{ note }`)")), request_body(content_type = "application/json", description = "Per action"), responses((status = 200, description = "`{ id, version, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn act(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (raw_id, action) = path.into_inner();
    if !matches!(
        action.as_str(),
        "lend" | "return" | "inventory-check" | "report-lost"
    ) {
        return Err(super::not_found("test-card action"));
    }
    let who = caller(&auth, &req, &[Role::Operator])?;
    let id = path_id(&raw_id, "test card", TestCardId::parse)?;
    let bytes = read_body(&req, payload).await?;
    let b: ActionBody = body(&bytes)?;
    let missing =
        |f: &str| Problem::malformed_body().with_detail(format!("{action} needs the field {f}"));
    let borrower = if action == "lend" {
        let kind = match b.borrower_kind.as_deref() {
            Some("vendor") => BorrowerKind::Vendor,
            Some("municipality") => BorrowerKind::Municipality,
            Some(_) => {
                return Err(Problem::malformed_body()
                    .with_detail("borrower_kind must be vendor or municipality"))
            }
            None => return Err(missing("borrower_kind")),
        };
        let name = b.borrower_name.ok_or_else(|| missing("borrower_name"))?;
        Some(Borrower { kind, name })
    } else {
        None
    };
    let note = match (action.as_str(), b.note) {
        ("report-lost", None) => return Err(missing("note")),
        (_, n) => n.unwrap_or_default(),
    };
    let cmds = commands(&state);
    let (who_r, cmds, id_r, action, note) = (&who, &cmds, &id, action.as_str(), &note);
    run(&state, &req, who_r, &bytes, |cid| async move {
        let meta = who_r.meta(cid);
        let done = match (action, borrower) {
            ("lend", Some(b)) => cmds.lend_test_card(&meta, id_r, b).await,
            ("return", _) => cmds.return_test_card(&meta, id_r).await,
            ("inventory-check", _) => cmds.check_test_card_inventory(&meta, id_r).await,
            _ => cmds.report_test_card_lost(&meta, id_r, note).await,
        }
        .map_err(command_problem)?;
        Ok((StatusCode::OK, answer(id_r, done.version), done.position))
    })
    .await
}

/// GET /v1/operator/test-cards?status=&limit=&cursor=&min_position=
#[utoipa::path(get, path = "/v1/operator/test-cards", tag = "operator", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("limit" = Option<u32>, Query, description = "1..=500, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("status" = Option<String>, Query, description = "in_stock, lent or lost")), responses((status = 200, description = "`{ items, next_cursor, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn list(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    caller(&auth, &req, READERS)?;
    let q: ListQuery = super::query(&req)?;
    let status = q
        .status
        .as_deref()
        .map(CardStatus::parse)
        .transpose()
        .map_err(|_| super::bad_query("status must be in_stock, lent or lost"))?;
    let page = super::page(q.limit, q.cursor.as_deref())?;
    super::answer(&state, &req, PROJECTION, async |client, schema| {
        model::list(client, schema, status, &page)
            .await
            .map_err(super::query_problem)
    })
    .await
}

/// GET /v1/operator/test-cards/{id}
#[utoipa::path(get, path = "/v1/operator/test-cards/{id}", tag = "operator", security(("bearer" = [])), params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position"), ("id" = String, Path, description = "The resource id")), responses((status = 200, description = "The card and `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn get(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    caller(&auth, &req, READERS)?;
    let _: super::MinPositionOnly = super::query(&req)?;
    let id = path_id(&path, "test card", TestCardId::parse)?;
    super::answer(&state, &req, PROJECTION, async |client, schema| {
        model::card(client, schema, &id)
            .await
            .map_err(super::query_problem)?
            .ok_or_else(|| super::not_found("test card"))
    })
    .await
}
