//! `/openapi.json`, generated from the handlers' `#[utoipa::path]` annotations.
//!
//! **A door adds its operations to [`ApiDoc`]'s `paths(...)` list below, and nowhere else**:
//! the 405 answers ([`crate::routes::configure_method_fallbacks`]), the document test and the
//! fuzz test all read the paths from this document. Every refusal references the one
//! `Problem` response, whose `code` enum is [`crate::codes::ApiCode::ALL`].

use crate::codes::ApiCode;
use crate::errors::PROBLEM_CONTENT_TYPE;
use actix_web::{get, HttpResponse};
use std::sync::OnceLock;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MyKey Platform API",
        version = "1",
        description = "Every refusal is `application/problem+json` with a stable `code` \
            (see the `Problem` schema), including unknown paths (404) and wrong methods (405). \
            State-changing POSTs accept `Idempotency-Key`; command answers carry `position` \
            (and `Mykey-Position`); reads accept `min_position` (or `Mykey-Min-Position`)."
    ),
    paths(
        crate::routes::health::healthz,
        crate::routes::health::readyz,
        crate::routes::auth::metrics,
        serve,
        crate::routes::wellknown::openid_configuration,
        crate::routes::wellknown::jwks,
        crate::routes::oauth::token,
        crate::routes::auth::challenge,
        crate::routes::auth::login,
        crate::routes::auth::kazashi,
        crate::routes::operator::load_crl,
        crate::routes::operator::import_renewals,
        crate::routes::operator::rotate_signing_key,
        crate::routes::operator::register_rp,
        crate::routes::operator::rotate_rp_key,
        crate::routes::operator::rp_status,
        crate::routes::rp::ppid_status,
        crate::routes::rp::revoke_ppid,
        crate::routes::rp::list_applications,
        crate::routes::rp::record_review,
        crate::routes::rp::list_notices,
        crate::routes::rp::notices_ical,
        crate::routes::provider::awaiting_grant,
        crate::routes::provider::confirm_grant,
        crate::routes::provider::grant_failed,
        crate::routes::provider::reversal_paid,
        crate::routes::citizen::open_session,
        crate::routes::citizen::applications::open_programs,
        crate::routes::citizen::applications::apply,
        crate::routes::citizen::applications::list_own,
        crate::routes::citizen::applications::get_own,
        crate::routes::citizen::applications::link,
        crate::routes::citizen::applications::unlink,
        crate::routes::citizen::ppids::holders,
        crate::routes::citizen::ppids::revoke,
        crate::routes::operations::programs::create,
        crate::routes::operations::programs::act,
        crate::routes::operations::programs::list,
        crate::routes::operations::programs::get,
        crate::routes::operations::patches::request,
        crate::routes::operations::patches::act,
        crate::routes::operations::patches::list,
        crate::routes::operations::patches::get,
        crate::routes::operations::patches::list_audit,
        crate::routes::operations::patches::get_audit,
        crate::routes::operations::notices::schedule,
        crate::routes::operations::notices::act,
        crate::routes::operations::notices::list,
        crate::routes::operations::notices::get,
        crate::routes::operations::test_cards::register,
        crate::routes::operations::test_cards::act,
        crate::routes::operations::test_cards::list,
        crate::routes::operations::test_cards::get,
        crate::routes::operations::audit_history::stream_events,
        crate::routes::operations::audit_history::log_head,
        crate::routes::operations::audit_history::access_log,
    ),
    components(responses(ProblemResponse)),
    modifiers(&Components)
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Every refusal: `#/components/responses/Problem`.
#[derive(Debug)]
pub struct ProblemResponse;

impl<'r> utoipa::ToResponse<'r> for ProblemResponse {
    fn response() -> (&'r str, RefOr<utoipa::openapi::response::Response>) {
        (
            "Problem",
            ResponseBuilder::new()
                .description("RFC 9457 problem details; `code` decides, `detail` is for people.")
                .content(
                    PROBLEM_CONTENT_TYPE,
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "Problem",
                        ))))
                        .build(),
                )
                .build()
                .into(),
        )
    }
}

/// The `Problem` schema (its `code` enum from the code table) and the bearer scheme.
struct Components;

impl utoipa::Modify for Components {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let problem = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("type", string())
            .property("title", string())
            .property("status", ObjectBuilder::new().schema_type(Type::Integer))
            .property(
                "code",
                string().enum_values(Some(ApiCode::ALL.iter().map(|c| c.as_str()))),
            )
            .property("detail", string())
            .required("type")
            .required("title")
            .required("status")
            .required("code");
        let components = doc.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert("Problem".to_owned(), problem.build().into());
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as served (built once).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// Every (path, method) the document lists, methods upper-case.
pub fn operations() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(doc) = serde_json::to_value(document()) else {
        return out;
    };
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_some() {
                    out.push((path.clone(), method.to_ascii_uppercase()));
                }
            }
        }
    }
    out
}

/// The server's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", content_type = "application/json")))]
#[get("/openapi.json")]
pub async fn serve() -> HttpResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| serde_json::to_string(document()).unwrap_or_default());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.as_str())
}
