//! Citizen-card login for relying parties: challenges, PIN login, かざし login. Every
//! endpoint needs an access token from /v1/oauth/token.

use super::oauth::ctx;
use crate::auth::{Auth, Ctx, KazashiBody, LoginBody};
use crate::errors::Problem;
use actix_web::{get, post, web, FromRequest, HttpRequest, HttpResponse};

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

#[post("/v1/auth/challenges")]
pub async fn challenge(auth: web::Data<Auth>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let ctx = ctx(&req);
    let rp = auth
        .authenticate_for(bearer(&req), "auth.challenge", &ctx)
        .await?;
    let c = auth.challenge(&rp, &ctx).await?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(c))
}

#[post("/v1/auth/login")]
pub async fn login(
    auth: web::Data<Auth>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let ctx = ctx(&req);
    let rp = auth
        .authenticate_for(bearer(&req), "auth.login", &ctx)
        .await?;
    let body: web::Json<LoginBody> =
        attempt_body(&auth, &req, payload, &ctx, "auth.login", Some(&rp)).await?;
    let r = auth.pin_login(&rp, body.into_inner(), &ctx).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(r))
}

#[post("/v1/auth/kazashi")]
pub async fn kazashi(
    auth: web::Data<Auth>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let ctx = ctx(&req);
    let rp = auth
        .authenticate_for(bearer(&req), "auth.kazashi", &ctx)
        .await?;
    let body: web::Json<KazashiBody> =
        attempt_body(&auth, &req, payload, &ctx, "auth.kazashi", Some(&rp)).await?;
    let r = auth.kazashi(&rp, body.into_inner(), &ctx).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(r))
}

/// Login counters (Prometheus text). `mykey_crl_stale_refusals_total` is the CRL alert.
#[get("/metrics")]
pub async fn metrics(auth: web::Data<Auth>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(auth.metrics.render())
}

/// Registers the login, token, discovery, metrics and operator routes.
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
    .service(metrics)
    .service(super::wellknown::openid_configuration)
    .service(super::wellknown::jwks);
    super::operator::configure(cfg);
}
