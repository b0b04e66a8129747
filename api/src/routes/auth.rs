//! Citizen-card login for relying parties: challenges, PIN login, かざし login. Every
//! endpoint needs an access token from /v1/oauth/token.

use super::oauth::ctx;
use crate::auth::identity::RelyingPartyId;
use crate::auth::{Auth, Ctx, KazashiBody, LoginBody};
use crate::errors::Problem;
use crate::http::openapi::ProblemResponse;
use crate::http::{attach_principal, Principal};
use actix_web::{post, web, FromRequest, HttpRequest, HttpResponse};

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The body of an attempt (login, かざし, token), read after the caller is authenticated. A
/// refused body is an attempt too, so it is audited like any other refusal.
pub(super) async fn attempt_body<E>(
    auth: &Auth,
    req: &HttpRequest,
    payload: web::Payload,
    ctx: &Ctx,
    endpoint: &'static str,
    rp: Option<&str>,
) -> Result<E, Problem>
where
    E: FromRequest,
    E::Error: Into<actix_web::Error>,
{
    let body = super::extract_body::<E>(req, payload).await;
    if let Err(p) = &body {
        auth.refuse(ctx, endpoint, rp, p).await;
    }
    body
}

/// A single-use challenge for a card to sign.
#[utoipa::path(post, path = "/v1/auth/challenges", tag = "login", security(("bearer" = [])),
    responses((status = 201, description = "`{ challenge_id, nonce, expires_at }`"), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/auth/challenges")]
pub async fn challenge(auth: web::Data<Auth>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let ctx = ctx(&req);
    auth.admit(&ctx, "auth.challenge")?;
    let rp = auth
        .authenticate_for(bearer(&req), "auth.challenge", &ctx)
        .await?;
    attach_principal(&req, rp_principal(&rp), ctx.correlation_id);
    Ok(no_store(HttpResponse::Created(), &auth.challenge(&rp)))
}

/// A relying party as the access log records it.
pub(super) fn rp_principal(rp: &RelyingPartyId) -> Principal {
    Principal {
        id: rp.as_str().to_owned(),
        role: "relying_party".to_owned(),
        rp: Some(rp.as_str().to_owned()),
    }
}

/// What every login endpoint does before its own work: authenticate the relying party, then
/// read its JSON body; each refusal is audited as an attempt on `endpoint`.
async fn authenticated_attempt<T: serde::de::DeserializeOwned>(
    auth: &Auth,
    req: &HttpRequest,
    payload: web::Payload,
    endpoint: &'static str,
) -> Result<(Ctx, RelyingPartyId, T), Problem> {
    let mut ctx = ctx(req);
    auth.admit(&ctx, endpoint)?;
    let rp = auth.authenticate_for(bearer(req), endpoint, &ctx).await?;
    ctx.adopt_correlation_id();
    attach_principal(req, rp_principal(&rp), ctx.correlation_id);
    let body: web::Json<T> =
        attempt_body(auth, req, payload, &ctx, endpoint, Some(rp.as_str())).await?;
    Ok((ctx, rp, body.into_inner()))
}

/// Answers carrying tokens or nonces: never cached.
pub(super) fn no_store<T: serde::Serialize>(
    mut response: actix_web::HttpResponseBuilder,
    body: &T,
) -> HttpResponse {
    response
        .insert_header(("cache-control", "no-store"))
        .json(body)
}

/// PIN login: the card's signature over a challenge; answers an ID token with the PPID.
#[utoipa::path(post, path = "/v1/auth/login", tag = "login", security(("bearer" = [])),
    request_body(content = Object, description = "`{ challenge_id, certificate, signature }` (base64); at most 64 KiB"),
    responses((status = 200, description = "`{ id_token, ppid, acr }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 410, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/auth/login")]
pub async fn login(
    auth: web::Data<Auth>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (ctx, rp, body) =
        authenticated_attempt::<LoginBody>(&auth, &req, payload, "auth.login").await?;
    Ok(no_store(
        HttpResponse::Ok(),
        &auth.pin_login(&rp, body, &ctx).await?,
    ))
}

/// かざし (tap) login: the card's certificate only; answers the existing PPID.
#[utoipa::path(post, path = "/v1/auth/kazashi", tag = "login", security(("bearer" = [])),
    request_body(content = Object, description = "`{ certificate }` (base64); at most 64 KiB"),
    responses((status = 200, description = "`{ id_token, ppid, acr }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 404, response = ProblemResponse), (status = 409, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/auth/kazashi")]
pub async fn kazashi(
    auth: web::Data<Auth>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (ctx, rp, body) =
        authenticated_attempt::<KazashiBody>(&auth, &req, payload, "auth.kazashi").await?;
    Ok(no_store(
        HttpResponse::Ok(),
        &auth.kazashi(&rp, body, &ctx).await?,
    ))
}

#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text exposition")))]
/// The server's metrics registry (Prometheus text). `mykey_crl_stale_refusals_total` is the
/// CRL alert. Served on the public port, or only on `MYKEY_METRICS_LISTEN` when that is set.
pub async fn metrics(registry: web::Data<prometheus::Registry>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::auth::metrics::render(&registry))
}

/// Registers `GET /metrics`.
pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

/// Registers the login, token, discovery and operator routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/oauth/token")
            .app_data(
                web::FormConfig::default()
                    .limit(super::oauth::MAX_FORM_BODY)
                    .error_handler(super::oauth::form_error_handler),
            )
            .route(web::post().to(super::oauth::token)),
    )
    .service(challenge)
    .service(login)
    .service(kazashi)
    .service(super::wellknown::openid_configuration)
    .service(super::wellknown::jwks);
    super::operator::configure(cfg);
}
