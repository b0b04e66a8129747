//! The citizen's programs and applications: open programs, apply, link and unlink the
//! payment-service account, own applications with their review status.
//!
//! A citizen has at most one application per program, so it is addressed by the program id
//! (`/v1/citizen/applications/{program}`); with the session's subject that is the application.
//! The payment service is chosen when applying; linking records the citizen's account
//! reference at it (entered on the platform's screens), unlinking removes it.

use super::{citizen, citizen_meta, scope};
use crate::auth::{Auth, Ctx};
use crate::errors::Problem;
use crate::http::idempotency::{Answer, KeyRule};
use crate::http::openapi::ProblemResponse;
use crate::routes::read::answer;
use crate::routes::rp::{
    application_not_found, canonical, command_problem, parse_query, query_problem, ListBody,
    PROGRAMS,
};
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use mykey_commands::{CommandError, CommandMeta, Commands, Executed};
use mykey_domain::application::{ApplicationState, ReviewOutcome};
use mykey_domain::{ApplicationId, ProgramId, RelyingPartyId, SubjectId};
use mykey_projections::models::programs::{
    self, ApplicationFilter, ApplicationView, ProgramFilter, ProgramView,
};
use mykey_projections::models::PageRequest;
use mykey_store::pg::PgEventStore;
use serde::{Deserialize, Serialize};

/// Longest account reference or reason a citizen may enter (the write model refuses control
/// characters; this bounds the size before anything is recorded).
pub const MAX_TEXT_LEN: usize = 256;

/// A program taking applications now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CitizenProgram {
    pub id: String,
    pub name: String,
    /// The municipality (relying-party id) running it.
    pub municipality: String,
    #[schema(value_type = String, format = DateTime)]
    pub period_start: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub period_end: DateTime<Utc>,
}

impl CitizenProgram {
    fn of(p: &ProgramView) -> CitizenProgram {
        CitizenProgram {
            id: p.id.clone(),
            name: p.name.clone(),
            municipality: p.municipality.clone(),
            period_start: p.period_start,
            period_end: p.period_end,
        }
    }
}

/// One of the citizen's applications.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CitizenApplication {
    pub program: String,
    pub municipality: String,
    pub payment_service: String,
    /// The citizen's account reference at the payment service, while linked.
    pub account: Option<String>,
    /// submitted, approved, rejected or granted.
    pub status: String,
    pub approved_points: Option<i64>,
    pub reject_reason: Option<String>,
    pub granted_points: Option<i64>,
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub changed_at: DateTime<Utc>,
}

impl CitizenApplication {
    fn of(a: &ApplicationView) -> CitizenApplication {
        CitizenApplication {
            program: a.program.clone(),
            municipality: a.municipality.clone(),
            payment_service: a.payment_service.clone(),
            account: a.link_ref.clone(),
            status: a.status.as_str().to_owned(),
            approved_points: a.approved_points,
            reject_reason: a.reject_reason.clone(),
            granted_points: a.granted_points,
            submitted_at: a.submitted_at,
            changed_at: a.changed_at,
        }
    }
}

/// What a citizen's write answers: the application as the write model left it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApplicationWritten {
    pub program: String,
    pub municipality: String,
    pub payment_service: String,
    /// Whether an account is linked.
    pub linked: bool,
    /// submitted, approved, rejected or granted.
    pub status: String,
}

impl ApplicationWritten {
    fn of(a: &ApplicationState) -> ApplicationWritten {
        let status = match (&a.outcome, a.granted_points) {
            (None, _) => "submitted",
            (Some(ReviewOutcome::Rejected { .. }), _) => "rejected",
            (Some(ReviewOutcome::Approved { .. }), Some(_)) => "granted",
            (Some(ReviewOutcome::Approved { .. }), None) => "approved",
        };
        ApplicationWritten {
            program: a.program.as_str().to_owned(),
            municipality: a.municipality.as_str().to_owned(),
            payment_service: a.payment_service.as_str().to_owned(),
            linked: a.link_ref.is_some(),
            status: status.to_owned(),
        }
    }
}

/// Paging of the citizen's lists; unknown parameters are refused.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1..=500, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Wait (at most 2 s) until the read model reached this position.
    pub min_position: Option<u64>,
}

fn json(v: impl Serialize) -> Result<serde_json::Value, Problem> {
    serde_json::to_value(v).map_err(|_| Problem::internal())
}

/// The programs taking applications now (open and within their period).
#[utoipa::path(get, path = "/v1/citizen/programs", tag = "citizen", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "`{ items: [CitizenProgram], next_cursor, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/citizen/programs")]
pub async fn open_programs(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    citizen(&auth, &state, &req, "citizen.programs").await?;
    let q: PageQuery = parse_query(&req)?;
    let page = PageRequest::new(q.limit, q.cursor.as_deref()).map_err(query_problem)?;
    let filter = ProgramFilter {
        accepting_at: Some(auth.settings.clock.now()),
        ..ProgramFilter::default()
    };
    answer(&state, &req, PROGRAMS, async |client, schema| {
        let found = programs::list_programs(client, schema, &filter, &page)
            .await
            .map_err(query_problem)?;
        Ok(ListBody {
            items: found.items.iter().map(CitizenProgram::of).collect(),
            next_cursor: found.next_cursor,
        })
    })
    .await
}

/// An application: the program, and the payment service to receive the points.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    pub program: String,
    /// A payment-service provider (relying-party id).
    pub payment_service: String,
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::coded("INVALID_INPUT", "Invalid input").with_detail(detail)
}

/// Applies to a program, choosing the payment service that will receive the points. One
/// application per citizen and program (`APPLICATION_ALREADY_SUBMITTED`).
#[utoipa::path(post, path = "/v1/citizen/applications", tag = "citizen", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer")),
    request_body(content = ApplyBody, description = "At most 64 KiB; unknown fields are refused"),
    responses((status = 201, body = ApplicationWritten, description = "With `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/citizen/applications")]
pub async fn apply(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (subject, c) = citizen(&auth, &state, &req, "citizen.apply").await?;
    let body: web::Json<ApplyBody> = crate::routes::extract_body(&req, payload).await?;
    let program = ProgramId::parse(&body.program).map_err(|e| invalid(e.to_string()))?;
    let psp = RelyingPartyId::parse(&body.payment_service).map_err(|e| invalid(e.to_string()))?;
    let (state_ref, c_ref, program_ref, psp_ref) = (&state, &c, &program, &psp);
    state
        .idempotency
        .run(
            &req,
            KeyRule::Optional,
            &scope(subject),
            &canonical(&*body),
            move |id| async move {
                let done = Commands::new(state_ref.store.clone())
                    .submit_application(
                        &citizen_meta(subject, c_ref, id),
                        subject,
                        program_ref,
                        psp_ref,
                    )
                    .await
                    .map_err(command_problem)?;
                let a = done.state.ok_or_else(Problem::internal)?;
                Ok(Answer::new(
                    StatusCode::CREATED,
                    json(ApplicationWritten::of(&a))?,
                    Some(done.position),
                ))
            },
        )
        .await
}

/// The citizen's applications, by program.
#[utoipa::path(get, path = "/v1/citizen/applications", tag = "citizen", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "`{ items: [CitizenApplication], next_cursor, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/citizen/applications")]
pub async fn list_own(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let (subject, _) = citizen(&auth, &state, &req, "citizen.applications").await?;
    let q: PageQuery = parse_query(&req)?;
    let page = PageRequest::new(q.limit, q.cursor.as_deref()).map_err(query_problem)?;
    let filter = ApplicationFilter {
        subject: Some(subject),
        ..ApplicationFilter::default()
    };
    answer(&state, &req, PROGRAMS, async |client, schema| {
        let found = programs::list_applications(client, schema, &filter, &page)
            .await
            .map_err(query_problem)?;
        Ok(ListBody {
            items: found.items.iter().map(CitizenApplication::of).collect(),
            next_cursor: found.next_cursor,
        })
    })
    .await
}

/// The citizen's application to `program`, or the one not-found answer.
fn own_application_id(
    program: &str,
    subject: SubjectId,
) -> Result<(ProgramId, ApplicationId), Problem> {
    let program = ProgramId::parse(program).map_err(|_| application_not_found())?;
    let id = ApplicationId::of(&program, &subject);
    Ok((program, id))
}

/// The citizen's application to one program, with its review status.
#[utoipa::path(get, path = "/v1/citizen/applications/{program}", tag = "citizen", security(("bearer" = [])),
    params(("program" = String, Path), ("min_position" = Option<u64>, Query, description = "Wait (at most 2 s) until the read model reached this position")),
    responses((status = 200, body = CitizenApplication, description = "With `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/citizen/applications/{program}")]
pub async fn get_own(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (subject, _) = citizen(&auth, &state, &req, "citizen.application").await?;
    let (_, id) = own_application_id(&path, subject)?;
    answer(&state, &req, PROGRAMS, async |client, schema| {
        programs::application(client, schema, &id)
            .await
            .map_err(query_problem)?
            .filter(|a| a.subject == subject.0)
            .map(|a| CitizenApplication::of(&a))
            .ok_or_else(application_not_found)
    })
    .await
}

/// The citizen's account at the chosen payment service.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// The account reference the payment service gave the citizen (1..=256 characters).
    pub account: String,
}

/// Why the citizen unlinks.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlinkBody {
    /// 1..=256 characters.
    pub reason: String,
}

fn bounded(name: &str, v: &str) -> Result<(), Problem> {
    if v.trim().is_empty() || v.len() > MAX_TEXT_LEN {
        return Err(invalid(format!("{name} must be 1..={MAX_TEXT_LEN} bytes")));
    }
    Ok(())
}

/// Links the citizen's account at the payment service chosen when applying.
#[utoipa::path(post, path = "/v1/citizen/applications/{program}/link", tag = "citizen", security(("bearer" = [])),
    params(("program" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer")),
    request_body(content = LinkBody, description = "At most 64 KiB; unknown fields are refused"),
    responses((status = 200, body = ApplicationWritten, description = "With `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/citizen/applications/{program}/link")]
pub async fn link(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (subject, c) = citizen(&auth, &state, &req, "citizen.link").await?;
    let body: web::Json<LinkBody> = crate::routes::extract_body(&req, payload).await?;
    let (program, _) = own_application_id(&path, subject)?;
    bounded("account", &body.account)?;
    let canonical_body = canonical(&*body);
    write_own_application(
        &state,
        &req,
        subject,
        &c,
        &canonical_body,
        |commands, meta| async move {
            commands
                .link_payment_service(&meta, &program, subject, &body.account)
                .await
        },
    )
    .await
}

/// Unlinks the citizen's payment-service account (they may link again afterwards).
#[utoipa::path(post, path = "/v1/citizen/applications/{program}/unlink", tag = "citizen", security(("bearer" = [])),
    params(("program" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer")),
    request_body(content = UnlinkBody, description = "At most 64 KiB; unknown fields are refused"),
    responses((status = 200, body = ApplicationWritten, description = "With `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/citizen/applications/{program}/unlink")]
pub async fn unlink(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (subject, c) = citizen(&auth, &state, &req, "citizen.unlink").await?;
    let body: web::Json<UnlinkBody> = crate::routes::extract_body(&req, payload).await?;
    let (program, _) = own_application_id(&path, subject)?;
    bounded("reason", &body.reason)?;
    let canonical_body = canonical(&*body);
    write_own_application(
        &state,
        &req,
        subject,
        &c,
        &canonical_body,
        |commands, meta| async move {
            commands
                .unlink_payment_service(&meta, &program, subject, &body.reason)
                .await
        },
    )
    .await
}

/// Runs one of the citizen's commands on their own application under the request's
/// Idempotency-Key; answers the application as written and the position the command wrote.
async fn write_own_application<F, Fut>(
    state: &AppState,
    req: &HttpRequest,
    subject: SubjectId,
    c: &Ctx,
    canonical_body: &[u8],
    command: F,
) -> Result<HttpResponse, Problem>
where
    F: FnOnce(Commands<PgEventStore>, CommandMeta) -> Fut,
    Fut: std::future::Future<Output = Result<Executed<Option<ApplicationState>>, CommandError>>,
{
    state
        .idempotency
        .run(
            req,
            KeyRule::Optional,
            &scope(subject),
            canonical_body,
            |id| async move {
                let done = command(
                    Commands::new(state.store.clone()),
                    citizen_meta(subject, c, id),
                )
                .await
                .map_err(command_problem)?;
                let a = done.state.ok_or_else(application_not_found)?;
                Ok(Answer::new(
                    StatusCode::OK,
                    json(ApplicationWritten::of(&a))?,
                    Some(done.position),
                ))
            },
        )
        .await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(open_programs)
        .service(apply)
        .service(list_own)
        .service(get_own)
        .service(link)
        .service(unlink);
}
