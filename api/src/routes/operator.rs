//! Operator endpoints under /v1/operator: CRLs, renewal links, signing-key rotation,
//! relying-party registration and status.
//!
//! Authentication: `Authorization: Bearer <token>`, a named operator's token
//! (`MYKEY_OPERATOR_TOKENS_FILE`, see [`crate::auth::operators`]) or the shared
//! `MYKEY_OPERATOR_TOKEN`; the operator's id is the actor of every event the request causes.
//! The credential must be unexpired and carry role `operator` (401 `CREDENTIAL_EXPIRED`, 403
//! `ROLE_REQUIRED`; the same check as `/v1/audit/*`, [`crate::audit::routes::credential`]).
//! With no token configured these endpoints answer 403 OPERATOR_DISABLED.
//!
//! Every endpoint here changes state and accepts `Idempotency-Key` ([`crate::http::idempotency`],
//! optional here: the operator CLI and scripts predate it); answers carry `Mykey-Position`.

use super::oauth::ctx;
use crate::auth::db::INVALID_VALUE;
use crate::auth::identity::{parse_rp_id, RequestActor, RpStatus};
use crate::auth::{jws::VerifyKey, Auth, Ctx};
use crate::codes::ApiCode;
use crate::errors::Problem;
use crate::http::idempotency::{Answer, KeyRule};
use crate::http::openapi::ProblemResponse;
use crate::http::{attach_principal, Principal};
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

/// A CRL body may be large (the national CRL); see [`crate::auth::crl::MAX_CRL_BYTES`].
pub const MAX_OPERATOR_BODY: usize = crate::auth::crl::MAX_CRL_BYTES;

/// The operator behind the request. `c` is the request's context, shared with its audit row so
/// both carry one correlation id (the operator's own `X-Correlation-Id` once authenticated).
fn operator(auth: &Auth, req: &HttpRequest, c: &mut Ctx) -> Result<RequestActor, Problem> {
    let operators = &auth.settings.operators;
    if operators.is_empty() {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "OPERATOR_DISABLED",
            "Operator endpoints disabled",
        ));
    }
    // Unknown token 401 OPERATOR_UNAUTHORIZED, expired 401 CREDENTIAL_EXPIRED, no role
    // `operator` 403 ROLE_REQUIRED.
    let operator_id =
        crate::audit::routes::credential(auth, req, &[crate::auth::operators::Role::Operator])?;
    c.adopt_correlation_id();
    attach_principal(
        req,
        Principal {
            id: operator_id.to_owned(),
            role: "operator".to_owned(),
            rp: None,
        },
        c.correlation_id,
    );
    Ok(RequestActor::operator(
        operator_id,
        c.correlation_id,
        c.client_addr.clone(),
    ))
}

/// Records an operator attempt (accepted or refused) in the audit trail; a caller that is no
/// operator only moves the unauthenticated refusal counters.
async fn audited(
    auth: &Auth,
    c: &Ctx,
    endpoint: &'static str,
    rp_id: Option<&str>,
    result: Result<HttpResponse, Problem>,
) -> Result<HttpResponse, Problem> {
    match &result {
        Err(p)
            if matches!(
                ApiCode::parse(&p.code),
                Some(ApiCode::OPERATOR_UNAUTHORIZED | ApiCode::OPERATOR_DISABLED)
            ) =>
        {
            auth.refuse_unauthenticated(c, endpoint, &p.code).await;
        }
        // A retry answered from the idempotency table: nothing ran (the first attempt's own
        // row holds its outcome).
        Ok(r)
            if r.headers()
                .contains_key(crate::http::idempotency::REPLAYED_HEADER) =>
        {
            auth.audit(c, endpoint, rp_id, "REPLAYED", None).await;
        }
        Ok(_) => {
            auth.audit(c, endpoint, rp_id, "OK", None).await;
        }
        Err(p) => {
            auth.audit(c, endpoint, rp_id, &p.code, None).await;
        }
    }
    result
}

/// A relying-party id from the request as the audit trail may record it: the id when it is
/// valid, [`INVALID_VALUE`] otherwise (never the raw text: it may hold NUL or be huge).
fn audited_rp_id(raw: &str) -> String {
    match mykey_domain::RelyingPartyId::parse(raw) {
        Ok(id) => id.to_string(),
        Err(_) => INVALID_VALUE.to_owned(),
    }
}

/// Loads a CA's complete CRL.
#[utoipa::path(post, path = "/v1/operator/crls", tag = "operator", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key and request gets the first answer")),
    request_body(content = Vec<u8>, content_type = "application/pkix-crl", description = "The CRL in DER; at most the national CRL's size"),
    responses((status = 200, description = "Loaded: the CRL's issuer, entries and newly revoked certificates"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn load_crl(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let mut c = ctx(&req);
    auth.admit(&c, "operator")?;
    let result: Result<HttpResponse, Problem> = async {
        let actor = operator(&auth, &req, &mut c)?;
        let body: web::Bytes = super::extract_body(&req, payload).await?;
        let (auth, state, actor_ref, body_ref) = (&auth, &state, &actor, &body);
        state
            .idempotency
            .run(
                &req,
                KeyRule::Optional,
                &actor.actor.id,
                &body,
                move |_| async move {
                    let (report, position) = auth.load_crl(body_ref, actor_ref).await?;
                    let report = serde_json::to_value(report).map_err(|_| Problem::internal())?;
                    Ok(Answer::new(StatusCode::OK, report, Some(position)))
                },
            )
            .await
    }
    .await;
    audited(&auth, &c, "operator.crl", None, result).await
}

/// Imports renewal links.
#[utoipa::path(post, path = "/v1/operator/renewals", tag = "operator", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key and request gets the first answer")),
    request_body(content = String, content_type = "text/csv", description = "`issuer,old serial,new serial` per line, UTF-8"),
    responses((status = 200, description = "`{ linked, failed: [{ line, code }] }`; per-line codes RENEWAL_LINE_MALFORMED, RENEWAL_SERIAL_MALFORMED, RENEWAL_ISSUER_UNKNOWN"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
pub async fn import_renewals(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let mut c = ctx(&req);
    auth.admit(&c, "operator")?;
    let result: Result<HttpResponse, Problem> = async {
        let actor = operator(&auth, &req, &mut c)?;
        let body: web::Bytes = super::extract_body(&req, payload).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| Problem::malformed_body().with_detail("CSV must be UTF-8"))?;
        let (auth, state, actor_ref) = (&auth, &state, &actor);
        state
            .idempotency
            .run(
                &req,
                KeyRule::Optional,
                &actor.actor.id,
                &body,
                move |_| async move {
                    let (report, position) = auth.import_renewals(text, actor_ref).await?;
                    let report = serde_json::to_value(report).map_err(|_| Problem::internal())?;
                    Ok(Answer::new(StatusCode::OK, report, Some(position)))
                },
            )
            .await
    }
    .await;
    audited(&auth, &c, "operator.renewals", None, result).await
}

/// Rotates the token-signing key.
#[utoipa::path(post, path = "/v1/operator/signing-keys/rotate", tag = "operator", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key and request gets the first answer")),
    responses((status = 200, description = "`{ kid }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/operator/signing-keys/rotate")]
pub async fn rotate_signing_key(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let mut c = ctx(&req);
    auth.admit(&c, "operator")?;
    let result: Result<HttpResponse, Problem> = async {
        let actor = operator(&auth, &req, &mut c)?;
        let auth_ref = &auth;
        state
            .idempotency
            .run(
                &req,
                KeyRule::Optional,
                &actor.actor.id,
                b"",
                move |_| async move {
                    let kid = auth_ref.rotate_signing_key().await?;
                    Ok(Answer::new(
                        StatusCode::OK,
                        serde_json::json!({ "kid": kid }),
                        None,
                    ))
                },
            )
            .await
    }
    .await;
    audited(&auth, &c, "operator.signing_key", None, result).await
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRp {
    pub id: String,
    /// municipality, payment_service_provider, library_system or private_business.
    pub kind: String,
    /// Local government code for municipalities; the operator's code otherwise.
    pub code: String,
    pub name: String,
    /// The RP's public JWK (EC P-256 or RSA >= 2048 bits, no private members).
    #[schema(value_type = Object)]
    pub jwk: serde_json::Value,
}

fn check_jwk(jwk: &serde_json::Value) -> Result<(), Problem> {
    VerifyKey::from_jwk(jwk).map(|_| ()).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "JWK_INVALID",
            "Unusable public key",
        )
        .with_detail(e.to_string())
    })
}

/// The request body as the idempotency check compares it (re-serialised, so whitespace and
/// key order do not make two identical requests different).
fn canonical<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_default()
}

/// Registers a relying party.
#[utoipa::path(post, path = "/v1/operator/relying-parties", tag = "operator", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key and request gets the first answer")),
    request_body(content = RegisterRp, description = "At most 64 KiB; unknown fields are refused"),
    responses((status = 201, description = "`{ id, position }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/operator/relying-parties")]
pub async fn register_rp(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let mut c = ctx(&req);
    auth.admit(&c, "operator")?;
    let mut rp_id = None;
    let result: Result<HttpResponse, Problem> = async {
        let actor = operator(&auth, &req, &mut c)?;
        let body: web::Json<RegisterRp> = super::extract_body(&req, payload).await?;
        rp_id = Some(audited_rp_id(&body.id));
        let (auth, state, actor_ref, body_ref) = (&auth, &state, &actor, &body);
        state
            .idempotency
            .run(
                &req,
                KeyRule::Optional,
                &actor.actor.id,
                &canonical(&*body),
                move |command_id| async move {
                    check_jwk(&body_ref.jwk)?;
                    let id = parse_rp_id(&body_ref.id)?;
                    let position = auth
                        .identity
                        .register_relying_party(
                            &id,
                            &body_ref.kind,
                            &body_ref.code,
                            &body_ref.name,
                            body_ref.jwk.clone(),
                            &actor_ref.clone().with_command_id(command_id),
                        )
                        .await?;
                    auth.forget_unknown_rp(&id);
                    Ok(Answer::new(
                        StatusCode::CREATED,
                        serde_json::json!({ "id": body_ref.id }),
                        Some(position),
                    ))
                },
            )
            .await
    }
    .await;
    audited(&auth, &c, "operator.rp_register", rp_id.as_deref(), result).await
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRpKey {
    #[schema(value_type = Object)]
    pub jwk: serde_json::Value,
}

/// Replaces a relying party's public key.
#[utoipa::path(post, path = "/v1/operator/relying-parties/{id}/key", tag = "operator", security(("bearer" = [])),
    params(("id" = String, Path, description = "Relying-party id"), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key and request gets the first answer")),
    request_body(content = RotateRpKey, description = "At most 64 KiB; unknown fields are refused"),
    responses((status = 204, description = "Rotated (`Mykey-Position` header)"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/operator/relying-parties/{id}/key")]
pub async fn rotate_rp_key(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let mut c = ctx(&req);
    auth.admit(&c, "operator")?;
    let rp_id = audited_rp_id(&id);
    let result: Result<HttpResponse, Problem> = async {
        let actor = operator(&auth, &req, &mut c)?;
        let body: web::Json<RotateRpKey> = super::extract_body(&req, payload).await?;
        let (auth, state, actor_ref, body_ref, id) = (&auth, &state, &actor, &body, &id);
        state
            .idempotency
            .run(
                &req,
                KeyRule::Optional,
                &actor.actor.id,
                &canonical(&*body),
                move |command_id| async move {
                    check_jwk(&body_ref.jwk)?;
                    let position = auth
                        .identity
                        .rotate_relying_party_key(
                            &parse_rp_id(id)?,
                            body_ref.jwk.clone(),
                            &actor_ref.clone().with_command_id(command_id),
                        )
                        .await?;
                    Ok(Answer::empty(StatusCode::NO_CONTENT, Some(position)))
                },
            )
            .await
    }
    .await;
    audited(&auth, &c, "operator.rp_key", Some(rp_id.as_str()), result).await
}

/// Suspends, resumes or retires a relying party.
#[utoipa::path(post, path = "/v1/operator/relying-parties/{id}/{action}", tag = "operator", security(("bearer" = [])),
    params(("id" = String, Path, description = "Relying-party id"),
        ("action" = String, Path, description = "`suspend`, `resume` or `retire` (another action: 404)"), ("Idempotency-Key" = Option<String>, Header, description = "A UUID; a retry with the same key and request gets the first answer")),
    responses((status = 204, description = "Done (`Mykey-Position` header)"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 422, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/operator/relying-parties/{id}/{action}")]
pub async fn rp_status(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let mut c = ctx(&req);
    auth.admit(&c, "operator")?;
    let rp_id = audited_rp_id(&path.0);
    let result: Result<HttpResponse, Problem> = async {
        let actor = operator(&auth, &req, &mut c)?;
        let (id, action) = path.into_inner();
        let status = match action.as_str() {
            "suspend" => RpStatus::Suspended,
            "resume" => RpStatus::Active,
            "retire" => RpStatus::Retired,
            _ => {
                return Err(Problem::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "No such action",
                ))
            }
        };
        let (auth, state, actor_ref, id) = (&auth, &state, &actor, &id);
        state
            .idempotency
            .run(
                &req,
                KeyRule::Optional,
                &actor.actor.id,
                b"",
                move |command_id| async move {
                    let actor = actor_ref.clone().with_command_id(command_id);
                    let position = auth
                        .identity
                        .set_relying_party_status(&parse_rp_id(id)?, status, &actor)
                        .await?;
                    Ok(Answer::empty(StatusCode::NO_CONTENT, Some(position)))
                },
            )
            .await
    }
    .await;
    audited(
        &auth,
        &c,
        "operator.rp_status",
        Some(rp_id.as_str()),
        result,
    )
    .await
}

/// Registers every operator route. The two upload routes get body limits of their own.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/operator/crls")
            .app_data(web::PayloadConfig::new(MAX_OPERATOR_BODY))
            .route(web::post().to(load_crl)),
    )
    .service(
        web::resource("/v1/operator/renewals")
            .app_data(web::PayloadConfig::new(crate::auth::MAX_RENEWAL_CSV_BYTES))
            .route(web::post().to(import_renewals)),
    )
    .service(rotate_signing_key)
    .service(register_rp)
    .service(rotate_rp_key)
    .service(rp_status);
}
