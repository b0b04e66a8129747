//! `/v1/audit/*`: signed checkpoints and their public keys.
//!
//! - `GET /v1/audit/checkpoints?limit=&cursor=` (role `auditor`): newest first, cursor
//!   pagination (`{items, next_cursor}`, limit 1..=500, default 50).
//! - `POST /v1/audit/checkpoints` (role `auditor` or `operator`): signs the head now and
//!   answers 201 with the checkpoint. No `Idempotency-Key`: signing twice only adds a second,
//!   equally true checkpoint.
//! - `GET /v1/audit/checkpoint-keys` (role `auditor`): every key that ever signed, with its
//!   validity, so old checkpoints stay verifiable after a rotation.
//!
//! Credentials are the operator tokens ([`crate::auth::operators`]): an unknown token is 401
//! `OPERATOR_UNAUTHORIZED`, an expired one 401 `CREDENTIAL_EXPIRED`, one without the role 403
//! `ROLE_REQUIRED`. Every attempt is recorded in the auth audit trail.

use super::{AuditError, CheckpointSigner};
use crate::auth::operators::{CredentialError, Role};
use crate::auth::{Auth, Ctx};
use crate::errors::Problem;
use crate::routes::oauth::ctx;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

/// Page size bounds (/work/shared/api.md).
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1/audit")
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                Problem::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", "Invalid query")
                    .with_detail(e.to_string())
                    .into()
            }))
            .route("/checkpoints", web::get().to(list_checkpoints))
            .route("/checkpoints", web::post().to(sign_checkpoint))
            .route("/checkpoint-keys", web::get().to(list_keys)),
    );
}

/// The person behind the request, if their credential is unexpired and holds one of `roles`.
/// Shared with the operator endpoints, so every door answers the same codes.
pub fn credential(auth: &Auth, req: &HttpRequest, roles: &[Role]) -> Result<String, Problem> {
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let now = auth.settings.clock.now();
    let mut refusal = CredentialError::Unknown;
    for role in roles {
        match auth.settings.operators.authorize(given, *role, now) {
            Ok(id) => return Ok(id.to_owned()),
            Err(e @ CredentialError::RoleRequired { .. }) => refusal = e,
            Err(e) => {
                refusal = e;
                break;
            }
        }
    }
    let (status, title) = match refusal {
        CredentialError::Unknown => (StatusCode::UNAUTHORIZED, "Credential required"),
        CredentialError::Expired { .. } => (StatusCode::UNAUTHORIZED, "Credential expired"),
        CredentialError::RoleRequired { .. } => (StatusCode::FORBIDDEN, "Role required"),
    };
    let needed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(Problem::new(status, refusal.code(), title)
        .with_detail(format!("needs role {}", needed.join(" or "))))
}

fn unavailable(e: AuditError) -> Problem {
    tracing::error!("{e}");
    Problem::unavailable("checkpoints are unavailable")
}

async fn audited(
    auth: &Auth,
    c: &Ctx,
    endpoint: &'static str,
    result: Result<HttpResponse, Problem>,
) -> Result<HttpResponse, Problem> {
    let outcome = match &result {
        Ok(_) => "OK".to_owned(),
        Err(p) => p.code.clone(),
    };
    auth.audit(c, endpoint, None, &outcome, None).await;
    result
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<i64>,
    cursor: Option<String>,
}

fn bad_query(detail: &str) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", "Invalid query").with_detail(detail)
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix("cp:")?
        .parse()
        .ok()
}

fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("cp:{id}"))
}

async fn list_checkpoints(
    auth: web::Data<Auth>,
    signer: web::Data<CheckpointSigner>,
    req: HttpRequest,
    page: web::Query<Page>,
) -> Result<HttpResponse, Problem> {
    let c = ctx(&req);
    let result = async {
        credential(&auth, &req, &[Role::Auditor])?;
        let limit = page.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(bad_query(&format!("limit must be 1..={MAX_PAGE}")));
        }
        let before = match page.cursor.as_deref() {
            None => None,
            Some(s) => Some(decode_cursor(s).ok_or_else(|| bad_query("unknown cursor"))?),
        };
        let (items, next) = signer.list(before, limit).await.map_err(unavailable)?;
        Ok(HttpResponse::Ok().json(serde_json::json!({
            "items": items,
            "next_cursor": next.map(encode_cursor),
        })))
    }
    .await;
    audited(&auth, &c, "audit.checkpoints.list", result).await
}

async fn sign_checkpoint(
    auth: web::Data<Auth>,
    signer: web::Data<CheckpointSigner>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let c = ctx(&req);
    let result = async {
        let who = credential(&auth, &req, &[Role::Auditor, Role::Operator])?;
        let cp = signer.sign_now().await.map_err(unavailable)?;
        tracing::info!(by = %who, size = cp.size, "checkpoint signed on demand");
        Ok(HttpResponse::Created().json(cp))
    }
    .await;
    audited(&auth, &c, "audit.checkpoints.sign", result).await
}

async fn list_keys(
    auth: web::Data<Auth>,
    signer: web::Data<CheckpointSigner>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let c = ctx(&req);
    let result = async {
        credential(&auth, &req, &[Role::Auditor])?;
        let keys = signer.keys().await.map_err(unavailable)?;
        Ok(HttpResponse::Ok().json(serde_json::json!({ "items": keys, "next_cursor": null })))
    }
    .await;
    audited(&auth, &c, "audit.checkpoint_keys", result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("42"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x:1")), None);
    }
}
