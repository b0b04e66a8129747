//! POST /v1/oauth/token: a relying party trades an RFC 7523 client assertion for a
//! five-minute access token.

use crate::auth::{Auth, Ctx, TokenForm};
use crate::errors::Problem;
use crate::http::openapi::ProblemResponse;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

/// The token form holds one JWT; 16 KiB is generous.
pub const MAX_FORM_BODY: usize = 16 * 1024;

/// A request's context: a fresh correlation id (the caller's `X-Correlation-Id`, when a
/// UUID, is kept aside until the caller has authenticated) and the peer address.
pub fn ctx(req: &HttpRequest) -> Ctx {
    let offered_correlation_id = req
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok());
    let peer = req.peer_addr().map(|a| a.ip());
    Ctx {
        // The one the access log records (crate::http::observe), until the caller's is adopted.
        correlation_id: crate::http::correlation_id(req),
        client_addr: peer.map(|ip| ip.to_string()),
        peer,
        offered_correlation_id,
    }
}

/// Form errors become problems too.
pub fn form_error_handler(
    err: actix_web::error::UrlencodedError,
    _req: &HttpRequest,
) -> actix_web::Error {
    use actix_web::error::UrlencodedError as U;
    let problem = match &err {
        U::Overflow { .. } => Problem::body_too_large(),
        U::ContentType => Problem::unsupported_media_type("application/x-www-form-urlencoded"),
        _ => Problem::malformed_body(),
    };
    problem.into()
}

/// Trades an RFC 7523 client assertion (`private_key_jwt`) for a five-minute access token.
#[utoipa::path(post, path = "/v1/oauth/token", tag = "oauth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "`grant_type=client_credentials`, `client_assertion_type`, `client_assertion`; at most 16 KiB"),
    responses((status = 200, description = "`{ access_token, token_type, expires_in }`"), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
///
/// POST /v1/oauth/token (registered in [`super::auth::configure`] with its form limit).
pub async fn token(
    auth: web::Data<Auth>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let ctx = ctx(&req);
    auth.admit(&ctx, "oauth.token")?;
    let form: web::Form<TokenForm> =
        super::auth::attempt_body(&auth, &req, payload, &ctx, "oauth.token", None).await?;
    let resp = auth.token(form.into_inner(), &ctx).await?;
    Ok(super::auth::no_store(HttpResponse::Ok(), &resp))
}
