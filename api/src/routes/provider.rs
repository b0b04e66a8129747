//! The payment-service provider door, `/v1/rp/provider/...` (issue 10, door 3): a relying
//! party of kind payment-service provider, with its access token, lists the approved
//! applications awaiting a grant on its service, confirms grants (idempotent per application),
//! reports failed grants (the application keeps awaiting a grant) and records that an owed
//! reversal was paid.
//!
//! Only applications naming the caller as their payment service are visible; any other
//! answers 404 exactly like an unknown reference. A relying party of another kind is refused
//! with 403 `RP_WRONG_KIND` before anything is read.

use super::rp::{
    application_ids, canonical, command_problem, list_filtered, owned_application, parse_query,
    query_problem, read, rp_caller, rp_meta, RpApplication, RELYING_PARTIES,
};
use crate::auth::{Auth, Ctx};
use crate::errors::Problem;
use crate::http::idempotency::{Answer, KeyRule};
use crate::http::openapi::ProblemResponse;
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use mykey_commands::{stream_of, CommandError, Commands};
use mykey_domain::application::{Application, MAX_GRANT_FAILURES};
use mykey_domain::{ApplicationId, ErrorCode, RelyingPartyId};
use mykey_projections::models::programs::{ApplicationFilter, ApplicationStatus};
use mykey_projections::models::relying_parties::{self, Kind};
use serde::{Deserialize, Serialize};

/// The caller, which must be a payment-service provider.
async fn provider(
    auth: &Auth,
    state: &AppState,
    req: &HttpRequest,
    endpoint: &'static str,
) -> Result<(RelyingPartyId, Ctx), Problem> {
    let (rp, c) = rp_caller(auth, req, endpoint).await?;
    let (schema, _, client) = read(state, req, RELYING_PARTIES).await?;
    let view = relying_parties::relying_party(&**client, &schema, &rp)
        .await
        .map_err(query_problem)?;
    match view {
        Some(v) if v.kind == Kind::PaymentServiceProvider => Ok((rp, c)),
        _ => Err(
            Problem::coded("RP_WRONG_KIND", "Not a payment-service provider")
                .with_detail("this door is for payment-service providers"),
        ),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProviderQuery {
    /// approved (default: awaiting a grant, payment service linked) or granted.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

/// Applications on the caller's service: by default the approved ones awaiting a grant.
#[utoipa::path(get, path = "/v1/rp/provider/applications", tag = "provider", security(("bearer" = [])),
    params(ProviderQuery),
    responses((status = 200, description = "`{ items: [RpApplication], next_cursor, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[get("/v1/rp/provider/applications")]
pub async fn awaiting_grant(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let (rp, _) = provider(&auth, &state, &req, "provider.applications").await?;
    let q: ProviderQuery = parse_query(&req)?;
    let (status, linked) = match q.status.as_deref() {
        None | Some("approved") => (ApplicationStatus::Approved, Some(true)),
        Some("granted") => (ApplicationStatus::Granted, None),
        Some(_) => {
            return Err(super::read::bad_query("status is approved or granted"));
        }
    };
    let filter = ApplicationFilter {
        payment_service: Some(rp),
        status: Some(status),
        linked,
        ..ApplicationFilter::default()
    };
    list_filtered(&state, &req, &filter, q.limit, q.cursor.as_deref()).await
}

/// Confirms the grant of an approved application on the caller's service. Idempotent per
/// application: confirming an application already granted answers 200 with it again.
#[utoipa::path(post, path = "/v1/rp/provider/applications/{reference}/grant", tag = "provider", security(("bearer" = [])),
    params(("reference" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer")),
    responses((status = 200, body = RpApplication, description = "Granted (now or before), with `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/rp/provider/applications/{reference}/grant")]
pub async fn confirm_grant(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (rp, c) = provider(&auth, &state, &req, "provider.grant").await?;
    let a = owned_application(&state, &req, &path, |a| a.payment_service == rp.as_str()).await?;
    let (program, subject) = application_ids(&a)?;
    let (state_ref, rp_ref, c_ref, a_ref, program_ref) = (&state, &rp, &c, &a, &program);
    state
        .idempotency
        .run(
            &req,
            KeyRule::Optional,
            rp.as_str(),
            b"",
            move |id| async move {
                let cmds = Commands::new(state_ref.store.clone());
                let (granted, position) = match cmds
                    .grant_points(&rp_meta(rp_ref, c_ref, id), program_ref, subject)
                    .await
                {
                    Ok(e) => (e.state.and_then(|s| s.granted_points), e.position),
                    // The grant was already confirmed: the same answer, nothing appended; the
                    // position is the application's as it stands (it includes the grant).
                    Err(CommandError::Domain(d)) if d.code == ErrorCode::POINTS_ALREADY_GRANTED => {
                        let stream =
                            stream_of::<Application>(ApplicationId::of(program_ref, &subject))
                                .map_err(command_problem)?;
                        let loaded = cmds
                            .load::<Application>(&stream, None)
                            .await
                            .map_err(command_problem)?;
                        (loaded.state.and_then(|s| s.granted_points), loaded.position)
                    }
                    Err(e) => return Err(command_problem(e)),
                };
                let mut view = RpApplication::of(a_ref);
                view.status = "granted".to_owned();
                view.granted_points = granted.and_then(|p| i64::try_from(p).ok());
                Ok(Answer::new(
                    StatusCode::OK,
                    serde_json::to_value(view).map_err(|_| Problem::internal())?,
                    Some(position),
                ))
            },
        )
        .await
}

/// `{"points": n}`: points of the owed reversal the provider took back.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReversalPaidBody {
    pub points: u64,
}

/// Records that (part of) an owed reversal was paid back: after a data patch corrected the
/// review of an application already granted, the points granted under the old outcome are
/// owed; this lowers what is still owed (never below zero: more is refused).
#[utoipa::path(post, path = "/v1/rp/provider/applications/{reference}/reversal-paid", tag = "provider", security(("bearer" = [])),
    params(("reference" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer")),
    request_body(content = ReversalPaidBody, description = "At most 64 KiB; unknown fields are refused"),
    responses((status = 200, description = "`{ reference, reversal_owed_points, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/rp/provider/applications/{reference}/reversal-paid")]
pub async fn reversal_paid(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (rp, c) = provider(&auth, &state, &req, "provider.reversal_paid").await?;
    let body: web::Json<ReversalPaidBody> = super::extract_body(&req, payload).await?;
    let a = owned_application(&state, &req, &path, |a| a.payment_service == rp.as_str()).await?;
    let (program, subject) = application_ids(&a)?;
    let points = body.points;
    let (state_ref, rp_ref, c_ref, program_ref, reference) =
        (&state, &rp, &c, &program, &a.reference);
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
                    .record_reversal_paid(&rp_meta(rp_ref, c_ref, id), program_ref, subject, points)
                    .await
                    .map_err(command_problem)?;
                let owed = done.state.map_or(0, |s| s.reversal_owed_points);
                Ok(Answer::new(
                    StatusCode::OK,
                    serde_json::json!({ "reference": reference, "reversal_owed_points": owed }),
                    Some(done.position),
                ))
            },
        )
        .await
}

/// `{"reason": "..."}`: why the grant failed, in the provider's words (1 to 2,000 bytes).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantFailedBody {
    pub reason: String,
}

/// Reports that the provider could not grant the approved points of an application on its
/// service (the account is closed, frozen, over its limit, ...).
///
/// What happens next, as a provider integrator expects from a payment batch: **the failure is
/// recorded and the application keeps awaiting a grant.** Its status stays `approved`, it stays
/// in `GET /v1/rp/provider/applications`, with `grant_failures` counting the failures and
/// `last_grant_failure` giving the last reason (the municipality sees both, to follow up with
/// the citizen). Retry with `POST .../grant` once the cause is fixed; a retry may also fail
/// again and be reported again. Each report with a new `Idempotency-Key` is one more failure;
/// a retry with the same key answers the first report and records nothing.
///
/// At most 10 failures are recorded per payment-service link: the 11th is refused with 409
/// `GRANT_FAILURES_EXHAUSTED`. By then the account, not the attempt, is at fault: the citizen
/// must link a payment service again, which starts the count afresh. A failure can be reported
/// only where a grant could be made: approved (else 409 `NOT_REVIEWED` or
/// `APPLICATION_REJECTED`), not yet granted (409 `POINTS_ALREADY_GRANTED`) and linked (409
/// `PAYMENT_SERVICE_NOT_LINKED`).
#[utoipa::path(post, path = "/v1/rp/provider/applications/{reference}/grant-failed", tag = "provider", security(("bearer" = [])),
    params(("reference" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key gets the first answer and records nothing")),
    request_body(content = GrantFailedBody, description = "At most 64 KiB; `reason` 1 to 2,000 bytes; unknown fields are refused"),
    responses((status = 200, body = RpApplication, description = "The application, still `approved` and awaiting a grant, with `grant_failures`, `last_grant_failure` and `position`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/rp/provider/applications/{reference}/grant-failed")]
pub async fn grant_failed(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (rp, c) = provider(&auth, &state, &req, "provider.grant_failed").await?;
    let body: web::Json<GrantFailedBody> = super::extract_body(&req, payload).await?;
    let a = owned_application(&state, &req, &path, |a| a.payment_service == rp.as_str()).await?;
    let (program, subject) = application_ids(&a)?;
    let (state_ref, rp_ref, c_ref, a_ref, program_ref) = (&state, &rp, &c, &a, &program);
    let reason = body.reason.as_str();
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
                    .report_grant_failed(&rp_meta(rp_ref, c_ref, id), program_ref, subject, reason)
                    .await
                    .map_err(command_problem)?;
                let mut view = RpApplication::of(a_ref);
                if let Some(s) = &done.state {
                    view.grant_failures = i32::try_from(s.grant_failures).unwrap_or(i32::MAX);
                }
                view.last_grant_failure = Some(reason.to_owned());
                Ok(Answer::new(
                    StatusCode::OK,
                    serde_json::to_value(view).map_err(|_| Problem::internal())?,
                    Some(done.position),
                ))
            },
        )
        .await
}

// The OpenAPI description above states the limit as a number: keep them equal.
const _: () = assert!(MAX_GRANT_FAILURES == 10);

/// Registers this door's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(awaiting_grant)
        .service(confirm_grant)
        .service(grant_failed)
        .service(reversal_paid);
}
