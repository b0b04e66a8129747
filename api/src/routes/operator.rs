//! Operator endpoints under /v1/operator: CRLs, renewal links, signing-key rotation,
//! relying-party registration and status.
//!
//! Authentication: `Authorization: Bearer <token>`, a named operator's token
//! (`MYKEY_OPERATOR_TOKENS_FILE`, see [`crate::auth::operators`]) or the shared
//! `MYKEY_OPERATOR_TOKEN`; the operator's id is the actor of every event the request causes.
//! The credential must be unexpired and carry role `operator` (401 `CREDENTIAL_EXPIRED`, 403
//! `ROLE_REQUIRED`; the same check as `/v1/audit/*`, [`crate::audit::routes::credential`]).
//! With no token configured these endpoints answer 403 OPERATOR_DISABLED.

use super::oauth::ctx;
use crate::auth::db::INVALID_VALUE;
use crate::auth::identity::{Actor, RpStatus};
use crate::auth::{jws::VerifyKey, Auth, Ctx};
use crate::codes::ApiCode;
use crate::errors::Problem;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpRequest, HttpResponse};
use serde::Deserialize;

/// A CRL body may be large (the national CRL); see [`crate::auth::crl::MAX_CRL_BYTES`].
pub const MAX_OPERATOR_BODY: usize = crate::auth::crl::MAX_CRL_BYTES;

/// The operator behind the request. `c` is the request's context, shared with its audit row so
/// both carry one correlation id (the operator's own `X-Correlation-Id` once authenticated).
fn operator(auth: &Auth, req: &HttpRequest, c: &mut Ctx) -> Result<Actor, Problem> {
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
    Ok(Actor {
        actor_id: operator_id,
        role: "operator".to_owned(),
        correlation_id: c.correlation_id,
        client_addr: c.client_addr.clone(),
    })
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

/// POST /v1/operator/crls. Body: the CRL in DER (`application/pkix-crl`).
pub async fn load_crl(
    auth: web::Data<Auth>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let mut c = ctx(&req);
    auth.admit(&c, "operator")?;
    let result: Result<HttpResponse, Problem> = async {
        let actor = operator(&auth, &req, &mut c)?;
        let body: web::Bytes = super::extract_body(&req, payload).await?;
        Ok(HttpResponse::Ok().json(auth.load_crl(&body, &actor).await?))
    }
    .await;
    audited(&auth, &c, "operator.crl", None, result).await
}

/// POST /v1/operator/renewals. Body: CSV `issuer,old serial,new serial` (`text/csv`).
pub async fn import_renewals(
    auth: web::Data<Auth>,
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
        Ok(HttpResponse::Ok().json(auth.import_renewals(text, &actor).await?))
    }
    .await;
    audited(&auth, &c, "operator.renewals", None, result).await
}

#[post("/v1/operator/signing-keys/rotate")]
pub async fn rotate_signing_key(
    auth: web::Data<Auth>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let mut c = ctx(&req);
    auth.admit(&c, "operator")?;
    let result: Result<HttpResponse, Problem> = async {
        operator(&auth, &req, &mut c)?;
        let kid = auth.rotate_signing_key().await?;
        Ok(HttpResponse::Ok().json(serde_json::json!({ "kid": kid })))
    }
    .await;
    audited(&auth, &c, "operator.signing_key", None, result).await
}

#[derive(Debug, Deserialize)]
pub struct RegisterRp {
    pub id: String,
    pub kind: String,
    /// Local government code for municipalities; the operator's code otherwise.
    pub code: String,
    pub name: String,
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

/// A write-model refusal: its status from the code table ([`crate::codes`]).
fn identity_problem(e: crate::auth::identity::IdentityError) -> Problem {
    match e {
        crate::auth::identity::IdentityError::Rejected { code, detail } => {
            Problem::coded(&code, "Refused").with_detail(detail)
        }
        crate::auth::identity::IdentityError::Unavailable(d) => Problem::unavailable(d),
    }
}

#[post("/v1/operator/relying-parties")]
pub async fn register_rp(
    auth: web::Data<Auth>,
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
        check_jwk(&body.jwk)?;
        auth.identity
            .register_relying_party(
                &body.id,
                &body.kind,
                &body.code,
                &body.name,
                body.jwk.clone(),
                &actor,
            )
            .await
            .map_err(identity_problem)?;
        auth.forget_unknown_rp(&body.id);
        Ok(HttpResponse::Created().json(serde_json::json!({ "id": body.id })))
    }
    .await;
    audited(&auth, &c, "operator.rp_register", rp_id.as_deref(), result).await
}

#[derive(Debug, Deserialize)]
pub struct RotateRpKey {
    pub jwk: serde_json::Value,
}

#[post("/v1/operator/relying-parties/{id}/key")]
pub async fn rotate_rp_key(
    auth: web::Data<Auth>,
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
        check_jwk(&body.jwk)?;
        auth.identity
            .rotate_relying_party_key(&id, body.jwk.clone(), &actor)
            .await
            .map_err(identity_problem)?;
        Ok(HttpResponse::NoContent().finish())
    }
    .await;
    audited(&auth, &c, "operator.rp_key", Some(rp_id.as_str()), result).await
}

#[post("/v1/operator/relying-parties/{id}/{action}")]
pub async fn rp_status(
    auth: web::Data<Auth>,
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
        auth.identity
            .set_relying_party_status(&id, status, &actor)
            .await
            .map_err(identity_problem)?;
        Ok(HttpResponse::NoContent().finish())
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
