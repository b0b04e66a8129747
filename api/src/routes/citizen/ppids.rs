//! The relying parties holding a PPID for the citizen, and the citizen's revocation of one:
//! the RP then no longer recognises them; their next login there issues a new, unlinkable PPID.

use super::applications::PageQuery;
use super::{citizen, citizen_meta, scope, SUBJECTS};
use crate::auth::Auth;
use crate::errors::Problem;
use crate::http::idempotency::{Answer, KeyRule};
use crate::http::openapi::ProblemResponse;
use crate::routes::read::answer;
use crate::routes::rp::{command_problem, parse_query, query_problem, read, ListBody};
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use mykey_commands::Commands;
use mykey_domain::{Ppid, RelyingPartyId};
use mykey_projections::models::{subjects, PageRequest};
use serde::Serialize;

/// A relying party that holds a PPID for the citizen.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeldBy {
    pub relying_party: String,
    /// Since the citizen's first PIN login there.
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
}

fn ppid_not_found() -> Problem {
    Problem::coded("PPID_NOT_FOUND", "PPID not found")
}

/// The relying parties holding an active PPID for the citizen, by relying-party id.
#[utoipa::path(get, path = "/v1/citizen/relying-parties", tag = "citizen", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "`{ items: [HeldBy], next_cursor, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/citizen/relying-parties")]
pub async fn holders(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let (subject, _) = citizen(&auth, &state, &req, "citizen.relying_parties").await?;
    let q: PageQuery = parse_query(&req)?;
    let page = PageRequest::new(q.limit, q.cursor.as_deref()).map_err(query_problem)?;
    answer(&state, &req, SUBJECTS, async |client, schema| {
        let found = subjects::held_ppids(client, schema, subject, &page)
            .await
            .map_err(query_problem)?;
        Ok(ListBody {
            items: found
                .items
                .into_iter()
                .map(|h| HeldBy {
                    relying_party: h.relying_party,
                    since: h.since,
                })
                .collect(),
            next_cursor: found.next_cursor,
        })
    })
    .await
}

/// Revokes the PPID `relying_party` holds for the citizen. A relying party holding none (or
/// unknown) answers 404 `PPID_NOT_FOUND`.
#[utoipa::path(post, path = "/v1/citizen/relying-parties/{relying_party}/revoke", tag = "citizen", security(("bearer" = [])),
    params(("relying_party" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer")),
    responses((status = 200, description = "`{ relying_party, status: revoked, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/citizen/relying-parties/{relying_party}/revoke")]
pub async fn revoke(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (subject, c) = citizen(&auth, &state, &req, "citizen.revoke").await?;
    let rp = RelyingPartyId::parse(&path).map_err(|_| ppid_not_found())?;
    let (state_ref, req_ref, c_ref, rp_ref) = (&state, &req, &c, &rp);
    // The lookup runs inside: a retry of a revocation that succeeded replays its answer
    // (the PPID is no longer held by then).
    state
        .idempotency
        .run(
            &req,
            KeyRule::Optional,
            &scope(subject),
            b"",
            move |id| async move {
                let (schema, _, client) = read(state_ref, req_ref, SUBJECTS).await?;
                let held = subjects::held_ppid(&**client, &schema, subject, rp_ref.as_str())
                    .await
                    .map_err(query_problem)?
                    .ok_or_else(ppid_not_found)?;
                drop(client);
                let ppid = Ppid::parse(&held.ppid).map_err(|_| Problem::internal())?;
                let position = Commands::new(state_ref.store.clone())
                    .revoke_ppid(&citizen_meta(subject, c_ref, id), &ppid)
                    .await
                    .map_err(command_problem)?;
                Ok(Answer::new(
                    StatusCode::OK,
                    serde_json::json!({ "relying_party": rp_ref.as_str(), "status": "revoked" }),
                    Some(position),
                ))
            },
        )
        .await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(holders).service(revoke);
}
