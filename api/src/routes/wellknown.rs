//! OpenID discovery and the platform's public signing keys.

use crate::auth::{Auth, ACR_KAZASHI, ACR_PIN};
use actix_web::{get, web, HttpResponse};

/// OpenID Provider metadata.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oauth", responses((status = 200, description = "OpenID Provider metadata")))]
#[get("/.well-known/openid-configuration")]
pub async fn openid_configuration(auth: web::Data<Auth>) -> HttpResponse {
    let iss = &auth.settings.issuer;
    HttpResponse::Ok().json(serde_json::json!({
        "issuer": iss,
        "token_endpoint": auth.settings.token_endpoint(),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256"],
        "grant_types_supported": ["client_credentials"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [auth.settings.id_token_alg.as_str()],
        "acr_values_supported": [ACR_PIN, ACR_KAZASHI],
        "claims_supported": ["iss", "aud", "sub", "iat", "exp", "acr", "jti"],
    }))
}

/// The platform's public token-signing keys.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth", responses((status = 200, description = "JWK set")))]
#[get("/.well-known/jwks.json")]
pub async fn jwks(auth: web::Data<Auth>) -> HttpResponse {
    HttpResponse::Ok()
        // Short: a rotation must reach relying parties well within a token lifetime.
        .insert_header(("cache-control", "public, max-age=60"))
        .json(auth.keys.jwks(auth.settings.clock.now_secs()))
}
