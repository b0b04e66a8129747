//! The municipal and partner door, `/v1/rp/...` (issue 10, door 1): a relying party with its
//! access token (from `/v1/oauth/token`) reads the status of PPIDs issued to it, lists its
//! programs' applications, records review outcomes, revokes its PPIDs and reads maintenance
//! notices (JSON, or an RFC 5545 iCalendar feed its calendars subscribe to).
//!
//! Tenant isolation: every query is scoped to the caller before the caller's own filters, and
//! another RP's resource answers exactly like an unknown one (404 with the same code and text),
//! so nothing reveals whether it exists. Applications are shown by their opaque `reference`,
//! never by their id (which embeds the platform's subject id) nor with the subject id.
//!
//! The helpers here (caller, read-model access, error mapping) are shared with the provider
//! door ([`super::provider`]).

pub(super) use super::command_problem;
use super::oauth::ctx;
pub(super) use super::read::{bad_query, query_problem, read};
use crate::auth::{Auth, Ctx};
use crate::errors::Problem;
use crate::http::attach_principal;
use crate::http::consistency::positioned;
use crate::http::idempotency::{Answer, KeyRule};
use crate::http::openapi::ProblemResponse;
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use mykey_commands::{CommandMeta, Commands};
use mykey_domain::application::ReviewOutcome;
use mykey_domain::{Ppid, ProgramId, RelyingPartyId, Role, SubjectId};
use mykey_projections::models::programs::{ApplicationFilter, ApplicationStatus, ApplicationView};
use mykey_projections::models::{notices, ppids, PageRequest};
use serde::{Deserialize, Serialize};

/// Read models this door reads (projection names).
pub(super) const PPIDS: &str = "ppids";
pub(super) const PROGRAMS: &str = "programs";
pub(super) const NOTICES: &str = "notices";
pub(super) const RELYING_PARTIES: &str = "relying_parties";

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The relying party behind the request (its access token), recorded as the request's
/// principal; `endpoint` names the attempt in the audit trail.
pub(super) async fn rp_caller(
    auth: &Auth,
    req: &HttpRequest,
    endpoint: &'static str,
) -> Result<(RelyingPartyId, Ctx), Problem> {
    let mut c = ctx(req);
    auth.admit(&c, endpoint)?;
    let rp = auth.authenticate_for(bearer(req), endpoint, &c).await?;
    c.adopt_correlation_id();
    attach_principal(req, super::auth::rp_principal(&rp), c.correlation_id);
    Ok((rp, c))
}

/// The command metadata of a request by relying party `rp`, with its idempotent command id.
pub(super) fn rp_meta(rp: &RelyingPartyId, c: &Ctx, command_id: uuid::Uuid) -> CommandMeta {
    let meta = CommandMeta::new(rp.as_str(), Role::RelyingParty(rp.clone()), command_id)
        .caused_by(c.correlation_id, command_id);
    match &c.client_addr {
        Some(a) => meta.from_addr(a.clone()),
        None => meta,
    }
}

/// The body as the idempotency check compares it (re-serialised: whitespace and key order do
/// not make two identical requests different).
pub(super) fn canonical<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_default()
}

/// The same answer for "no such application" and "not yours".
pub(super) fn application_not_found() -> Problem {
    Problem::coded("APPLICATION_NOT_FOUND", "Application not found")
}

/// An application as a relying party sees it: by reference, without the subject.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RpApplication {
    pub reference: String,
    pub program: String,
    pub municipality: String,
    pub payment_service: String,
    /// Whether the citizen's payment-service account is linked.
    pub linked: bool,
    /// submitted, approved, rejected or granted.
    pub status: String,
    pub approved_points: Option<i64>,
    pub reject_reason: Option<String>,
    pub granted_points: Option<i64>,
    pub reversal_owed_points: i64,
    /// Grants the payment provider reported failed since the current payment-service link
    /// (the application still awaits a grant; at most 10 per link).
    pub grant_failures: i32,
    /// The provider's reason for the last of those failures.
    pub last_grant_failure: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub changed_at: DateTime<Utc>,
}

impl RpApplication {
    /// `show_link_ref`: only the payment provider sees its own account reference.
    pub(super) fn of(a: &ApplicationView) -> RpApplication {
        RpApplication {
            reference: a.reference.clone(),
            program: a.program.clone(),
            municipality: a.municipality.clone(),
            payment_service: a.payment_service.clone(),
            linked: a.link_ref.is_some(),
            status: a.status.as_str().to_owned(),
            approved_points: a.approved_points,
            reject_reason: a.reject_reason.clone(),
            granted_points: a.granted_points,
            reversal_owed_points: a.reversal_owed_points,
            grant_failures: a.grant_failures,
            last_grant_failure: a.last_grant_failure.clone(),
            submitted_at: a.submitted_at,
            changed_at: a.changed_at,
        }
    }
}

/// The application `reference` if `owns` says it is the caller's; otherwise (or unknown) the
/// one not-found answer.
pub(super) async fn owned_application(
    state: &AppState,
    req: &HttpRequest,
    reference: &str,
    owns: impl Fn(&ApplicationView) -> bool,
) -> Result<ApplicationView, Problem> {
    if reference.is_empty() || reference.len() > MAX_REFERENCE_LEN {
        return Err(application_not_found());
    }
    let (schema, _, client) = read(state, req, PROGRAMS).await?;
    mykey_projections::models::programs::application_by_reference(&**client, &schema, reference)
        .await
        .map_err(query_problem)?
        .filter(|a| owns(a))
        .ok_or_else(application_not_found)
}

/// References are short opaque strings; anything longer is unknown without a query.
pub const MAX_REFERENCE_LEN: usize = 128;

/// The write-model ids of an application from its row.
pub(super) fn application_ids(a: &ApplicationView) -> Result<(ProgramId, SubjectId), Problem> {
    let program = ProgramId::parse(&a.program).map_err(|_| Problem::internal())?;
    Ok((program, SubjectId(a.subject)))
}

// ---------------------------------------------------------------------------------------------
// PPIDs

/// A PPID's status as its relying party sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PpidStatusBody {
    pub ppid: String,
    /// active, revoked or invalidated.
    pub status: String,
    #[schema(value_type = String, format = DateTime)]
    pub issued_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub changed_at: DateTime<Utc>,
    pub reason: Option<String>,
}

fn ppid_not_found() -> Problem {
    Problem::coded("PPID_NOT_FOUND", "PPID not found")
}

async fn own_ppid(
    state: &AppState,
    req: &HttpRequest,
    rp: &RelyingPartyId,
    raw: &str,
) -> Result<(ppids::PpidView, u64), Problem> {
    let ppid = Ppid::parse(raw).map_err(|_| ppid_not_found())?;
    let (schema, position, client) = read(state, req, PPIDS).await?;
    let view = ppids::ppid_of(&**client, &schema, rp, &ppid)
        .await
        .map_err(query_problem)?
        .ok_or_else(ppid_not_found)?;
    Ok((view, position))
}

/// The status of a PPID issued to the caller. Another RP's PPID answers 404 like an unknown one.
#[utoipa::path(get, path = "/v1/rp/ppids/{ppid}", tag = "rp", security(("bearer" = [])),
    params(("ppid" = String, Path), ("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position")),
    responses((status = 200, body = PpidStatusBody, description = "With `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/rp/ppids/{ppid}")]
pub async fn ppid_status(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (rp, _) = rp_caller(&auth, &req, "rp.ppid").await?;
    let (v, position) = own_ppid(&state, &req, &rp, &path).await?;
    let body = PpidStatusBody {
        ppid: v.ppid,
        status: v.status.as_str().to_owned(),
        issued_at: v.issued_at,
        changed_at: v.changed_at,
        reason: v.reason,
    };
    Ok(positioned(
        HttpResponse::Ok(),
        position,
        serde_json::to_value(body).map_err(|_| Problem::internal())?,
    ))
}

/// Revokes a PPID issued to the caller; the citizen's next login there issues a new one.
#[utoipa::path(post, path = "/v1/rp/ppids/{ppid}/revoke", tag = "rp", security(("bearer" = [])),
    params(("ppid" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer")),
    responses((status = 200, description = "`{ ppid, status: revoked, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/rp/ppids/{ppid}/revoke")]
pub async fn revoke_ppid(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (rp, c) = rp_caller(&auth, &req, "rp.ppid_revoke").await?;
    let (view, _) = own_ppid(&state, &req, &rp, &path).await?;
    let ppid = Ppid::parse(&view.ppid).map_err(|_| Problem::internal())?;
    let (state_ref, rp_ref, c_ref, ppid_ref) = (&state, &rp, &c, &ppid);
    state
        .idempotency
        .run(
            &req,
            KeyRule::Optional,
            rp.as_str(),
            b"",
            move |id| async move {
                let cmds = Commands::new(state_ref.store.clone());
                let position = cmds
                    .revoke_ppid(&rp_meta(rp_ref, c_ref, id), ppid_ref)
                    .await
                    .map_err(command_problem)?;
                Ok(Answer::new(
                    StatusCode::OK,
                    serde_json::json!({ "ppid": ppid_ref.as_str(), "status": "revoked" }),
                    Some(position),
                ))
            },
        )
        .await
}

// ---------------------------------------------------------------------------------------------
// Applications

/// Filters of the municipal application list; unknown parameters are refused.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApplicationQuery {
    /// One of the caller's programs.
    pub program: Option<String>,
    /// submitted, approved, rejected or granted.
    pub status: Option<String>,
    /// The chosen payment service (relying-party id).
    pub payment_service: Option<String>,
    /// Submitted at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub submitted_from: Option<DateTime<Utc>>,
    /// Submitted before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub submitted_before: Option<DateTime<Utc>>,
    /// 1..=500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

/// A page of items as every list answers.
#[derive(Debug, Serialize)]
pub(super) struct ListBody<T: Serialize> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub(super) fn parse_query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, Problem> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| bad_query(&e.to_string()))
}

/// The caller's programs' applications (the caller is the municipality), filtered and paged.
#[utoipa::path(get, path = "/v1/rp/applications", tag = "rp", security(("bearer" = [])),
    params(ApplicationQuery),
    responses((status = 200, description = "`{ items: [RpApplication], next_cursor, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/rp/applications")]
pub async fn list_applications(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let (rp, _) = rp_caller(&auth, &req, "rp.applications").await?;
    let q: ApplicationQuery = parse_query(&req)?;
    let filter = ApplicationFilter {
        program: q
            .program
            .as_deref()
            .map(ProgramId::parse)
            .transpose()
            .map_err(|e| bad_query(&e.to_string()))?,
        municipality: Some(rp),
        payment_service: q
            .payment_service
            .as_deref()
            .map(RelyingPartyId::parse)
            .transpose()
            .map_err(|e| bad_query(&e.to_string()))?,
        status: q
            .status
            .as_deref()
            .map(ApplicationStatus::parse)
            .transpose()
            .map_err(|e| bad_query(&e.to_string()))?,
        submitted_from: q.submitted_from,
        submitted_before: q.submitted_before,
        ..ApplicationFilter::default()
    };
    list_filtered(&state, &req, &filter, q.limit, q.cursor.as_deref()).await
}

/// One page of `filter`'s applications as relying parties see them.
pub(super) async fn list_filtered(
    state: &AppState,
    req: &HttpRequest,
    filter: &ApplicationFilter,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<HttpResponse, Problem> {
    let page = PageRequest::new(limit, cursor).map_err(query_problem)?;
    let (schema, position, client) = read(state, req, PROGRAMS).await?;
    let found =
        mykey_projections::models::programs::list_applications(&**client, &schema, filter, &page)
            .await
            .map_err(query_problem)?;
    let body = ListBody {
        items: found.items.iter().map(RpApplication::of).collect(),
        next_cursor: found.next_cursor,
    };
    Ok(positioned(
        HttpResponse::Ok(),
        position,
        serde_json::to_value(body).map_err(|_| Problem::internal())?,
    ))
}

/// A review outcome: `{"decision":"approved","points":5000}` or
/// `{"decision":"rejected","reason":"..."}`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// approved or rejected.
    pub decision: String,
    /// Points when approved (a positive integer).
    pub points: Option<u64>,
    /// Why, when rejected.
    pub reason: Option<String>,
}

fn outcome(body: &ReviewBody) -> Result<ReviewOutcome, Problem> {
    let bad = |d: &str| Problem::coded("INVALID_INPUT", "Invalid review").with_detail(d.to_owned());
    match (body.decision.as_str(), body.points, &body.reason) {
        ("approved", Some(points), None) => Ok(ReviewOutcome::Approved { points }),
        ("rejected", None, Some(reason)) => Ok(ReviewOutcome::Rejected {
            reason: reason.clone(),
        }),
        ("approved", _, _) => Err(bad("approved takes points and no reason")),
        ("rejected", _, _) => Err(bad("rejected takes a reason and no points")),
        _ => Err(bad("decision is approved or rejected")),
    }
}

/// Records the review outcome of one of the caller's programs' applications.
#[utoipa::path(post, path = "/v1/rp/applications/{reference}/review", tag = "rp", security(("bearer" = [])),
    params(("reference" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer")),
    request_body(content = ReviewBody, description = "At most 64 KiB; unknown fields are refused"),
    responses((status = 200, body = RpApplication, description = "The application after the review, with `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/rp/applications/{reference}/review")]
pub async fn record_review(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (rp, c) = rp_caller(&auth, &req, "rp.review").await?;
    let body: web::Json<ReviewBody> = super::extract_body(&req, payload).await?;
    let a = owned_application(&state, &req, &path, |a| a.municipality == rp.as_str()).await?;
    let outcome = outcome(&body)?;
    let (program, subject) = application_ids(&a)?;
    let (state_ref, rp_ref, c_ref) = (&state, &rp, &c);
    let (a_ref, outcome_ref, program_ref) = (&a, &outcome, &program);
    state
        .idempotency
        .run(
            &req,
            KeyRule::Optional,
            rp.as_str(),
            &canonical(&*body),
            move |id| async move {
                let cmds = Commands::new(state_ref.store.clone());
                let done = cmds
                    .record_review(
                        &rp_meta(rp_ref, c_ref, id),
                        program_ref,
                        subject,
                        outcome_ref.clone(),
                    )
                    .await
                    .map_err(command_problem)?;
                let mut view = RpApplication::of(a_ref);
                match outcome_ref {
                    ReviewOutcome::Approved { points } => {
                        view.status = "approved".to_owned();
                        view.approved_points = i64::try_from(*points).ok();
                    }
                    ReviewOutcome::Rejected { reason } => {
                        view.status = "rejected".to_owned();
                        view.reject_reason = Some(reason.clone());
                    }
                }
                Ok(Answer::new(
                    StatusCode::OK,
                    serde_json::to_value(view).map_err(|_| Problem::internal())?,
                    Some(done.position),
                ))
            },
        )
        .await
}

// ---------------------------------------------------------------------------------------------
// Maintenance notices

/// Which notices: current (ongoing or upcoming, the default) or past (over or cancelled).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NoticeQuery {
    /// current (default) or past.
    pub when: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

fn when(q: &NoticeQuery, now: DateTime<Utc>) -> Result<notices::When, Problem> {
    match q.when.as_deref() {
        None | Some("current") => Ok(notices::When::Current(now)),
        Some("past") => Ok(notices::When::Past(now)),
        Some(_) => Err(bad_query("when is current or past")),
    }
}

/// Maintenance notices as JSON.
#[utoipa::path(get, path = "/v1/rp/notices", tag = "rp", security(("bearer" = [])),
    params(NoticeQuery),
    responses((status = 200, description = "`{ items: [notice], next_cursor, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/rp/notices")]
pub async fn list_notices(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    rp_caller(&auth, &req, "rp.notices").await?;
    let q: NoticeQuery = parse_query(&req)?;
    let when = when(&q, Utc::now())?;
    let page = PageRequest::new(q.limit, q.cursor.as_deref()).map_err(query_problem)?;
    super::read::answer(&state, &req, NOTICES, async |client, schema| {
        let found = notices::list(client, schema, when, &page)
            .await
            .map_err(query_problem)?;
        Ok(ListBody {
            items: found.items,
            next_cursor: found.next_cursor,
        })
    })
    .await
}

/// Notices in one iCalendar feed: the most a calendar gets in one answer.
pub const MAX_FEED_NOTICES: u32 = 500;

/// Maintenance notices as an iCalendar feed (RFC 5545, `text/calendar`) a calendar can
/// subscribe to: current and past notices (cancelled ones with `STATUS:CANCELLED`, so a
/// subscribed calendar removes them), each with `SEQUENCE` = its revision.
#[utoipa::path(get, path = "/v1/rp/notices.ics", tag = "rp", security(("bearer" = [])),
    params(("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position")),
    responses((status = 200, description = "RFC 5545 calendar; the newest 500 notices", content_type = "text/calendar"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/rp/notices.ics")]
pub async fn notices_ical(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    rp_caller(&auth, &req, "rp.notices").await?;
    let (schema, position, client) = read(&state, &req, NOTICES).await?;
    let page = PageRequest::first(Some(MAX_FEED_NOTICES)).map_err(query_problem)?;
    let found = notices::list(&**client, &schema, notices::When::All, &page)
        .await
        .map_err(query_problem)?;
    let body = super::ical::feed(&found.items, Utc::now());
    let mut b = HttpResponse::Ok();
    crate::http::consistency::with_position(&mut b, position);
    Ok(b.content_type("text/calendar; charset=utf-8").body(body))
}

/// Registers this door's routes. JSON bodies are bounded by the app's
/// [`crate::startup::MAX_JSON_BODY`]; a review is far smaller.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(ppid_status)
        .service(revoke_ppid)
        .service(list_applications)
        .service(record_review)
        .service(notices_ical)
        .service(list_notices);
}
