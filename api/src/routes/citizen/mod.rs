//! The citizen door, `/v1/citizen/...` (issue 10, door 2). The platform's own citizen screens
//! (a relying party, configured as `MYKEY_CITIZEN_RP`) trade a PIN login's ID token for a
//! short-lived session token ([`session`]); with it a citizen lists open programs, applies,
//! links and unlinks their payment-service account, reads their applications and review
//! status, lists the relying parties holding a PPID for them and revokes one.
//!
//! A citizen only ever sees their own data: every read is scoped to the session's subject
//! (their applications are addressed by program, `(program, subject)` being the application),
//! and every write is the citizen's command, which the write model checks again
//! (`Role::Citizen(subject)`). Something that is not theirs answers exactly like something
//! that does not exist.

pub mod applications;
pub mod ppids;
pub mod session;

use super::oauth::ctx;
use crate::auth::{Auth, Ctx, ACR_PIN};
use crate::config::ConfigError;
use crate::errors::Problem;
use crate::http::consistency::{behind, MAX_READ_WAIT};
use crate::http::openapi::ProblemResponse;
use crate::http::{attach_principal, Principal};
use crate::startup::AppState;
use actix_web::{post, web, HttpRequest, HttpResponse};
use mykey_commands::CommandMeta;
use mykey_domain::{RelyingPartyId, Role, SubjectId};
use mykey_projections::models::subjects;
use serde::{Deserialize, Serialize};

/// Read model of the PPID → subject lookup and the held PPIDs.
pub(super) const SUBJECTS: &str = "subjects";

/// The citizen door's configuration.
#[derive(Debug, Clone, Default)]
pub struct CitizenSettings {
    /// `MYKEY_CITIZEN_RP`: the relying party that is the platform's own citizen screens (only
    /// it opens citizen sessions). Unset: no citizen sessions at all (`NOT_CITIZEN_RP`).
    pub screens: Option<RelyingPartyId>,
}

impl CitizenSettings {
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<CitizenSettings, ConfigError> {
        let screens = match get("MYKEY_CITIZEN_RP").filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(v) => Some(
                RelyingPartyId::parse(v.trim()).map_err(|e| ConfigError::Invalid {
                    name: "MYKEY_CITIZEN_RP",
                    value: v.clone(),
                    reason: e.to_string(),
                })?,
            ),
        };
        Ok(CitizenSettings { screens })
    }
}

fn authorization(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The citizen behind the request (their session token), recorded as the request's principal;
/// `endpoint` names a refusal in the audit counters. A session whose PPID at the screens was
/// revoked or invalidated is refused: the check reads the subjects read model once it has
/// applied everything committed before the request, so a request that starts after the
/// revocation's answer never passes.
pub(super) async fn citizen(
    auth: &Auth,
    state: &AppState,
    req: &HttpRequest,
    endpoint: &'static str,
) -> Result<(SubjectId, Ctx), Problem> {
    let mut c = ctx(req);
    auth.admit(&c, endpoint)?;
    let now = auth.settings.clock.now_secs();
    let verified = session::verify(authorization(req), &auth.settings.issuer, now, |kid| {
        auth.keys.verifying(kid, now).map(|k| k.public.clone())
    });
    let session = match verified {
        Ok(s) => s,
        Err(e) => {
            let p = e.problem();
            auth.refuse(&c, endpoint, None, &p).await;
            return Err(p);
        }
    };
    match subjects_holder(state, &session.ppid).await? {
        Some((subject, _)) if subject == session.subject => {}
        _ => {
            let p = session::SessionError::Revoked.problem();
            auth.refuse(&c, endpoint, None, &p).await;
            return Err(p);
        }
    }
    c.adopt_correlation_id();
    attach_principal(
        req,
        Principal {
            id: session.subject.0.to_string(),
            role: "citizen".to_owned(),
            rp: None,
        },
        c.correlation_id,
    );
    Ok((session.subject, c))
}

/// Who holds `ppid` (subject and relying party) while it is active, read from the subjects read
/// model after it applied everything committed before this call.
async fn subjects_holder(
    state: &AppState,
    ppid: &str,
) -> Result<Option<(SubjectId, String)>, Problem> {
    let head = {
        use mykey_store::EventStore as _;
        state.store.head().await.map_err(Problem::unavailable)?
    };
    state
        .read_models
        .wait_for(SUBJECTS, head, MAX_READ_WAIT)
        .await
        .map_err(|b| behind(b, head, MAX_READ_WAIT))?;
    let schema = state
        .projections
        .active_schema(SUBJECTS)
        .ok_or_else(|| Problem::unavailable("read model subjects not serving"))?;
    let client = state.read_pool.get().await.map_err(Problem::unavailable)?;
    subjects::holder(&**client, &schema, ppid)
        .await
        .map_err(crate::routes::read::query_problem)
}

/// The command metadata of a citizen's request, with its idempotent command id.
pub(super) fn citizen_meta(subject: SubjectId, c: &Ctx, command_id: uuid::Uuid) -> CommandMeta {
    let meta = CommandMeta::new(subject.0.to_string(), Role::Citizen(subject), command_id)
        .caused_by(c.correlation_id, command_id);
    match &c.client_addr {
        Some(a) => meta.from_addr(a.clone()),
        None => meta,
    }
}

/// Idempotency keys are scoped to the citizen.
pub(super) fn scope(subject: SubjectId) -> String {
    format!("citizen:{}", subject.0)
}

/// A PIN login's ID token, to trade for a session.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The ID token `/v1/auth/login` answered the citizen screens.
    pub id_token: String,
}

/// A citizen session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionBody {
    pub session_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds (900).
    pub expires_in: i64,
}

/// Opens a citizen session: the platform's citizen screens (with their access token) trade
/// the ID token of a PIN login there for a 15-minute session token bound to the citizen.
/// Only the relying party configured as the citizen screens may call it.
#[utoipa::path(post, path = "/v1/citizen/sessions", tag = "citizen", security(("bearer" = [])),
    request_body(content = SessionRequest, description = "At most 64 KiB; unknown fields are refused"),
    responses((status = 201, body = SessionBody), (status = 400, response = ProblemResponse), (status = 401, response = ProblemResponse), (status = 403, response = ProblemResponse), (status = 413, response = ProblemResponse), (status = 415, response = ProblemResponse), (status = 429, response = ProblemResponse), (status = 503, response = ProblemResponse)))]
#[post("/v1/citizen/sessions")]
pub async fn open_session(
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    door: web::Data<CitizenSettings>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    const ENDPOINT: &str = "citizen.session";
    let mut c = ctx(&req);
    auth.admit(&c, ENDPOINT)?;
    let rp = auth
        .authenticate_for(authorization(&req), ENDPOINT, &c)
        .await?;
    c.adopt_correlation_id();
    attach_principal(&req, super::auth::rp_principal(&rp), c.correlation_id);
    let result = exchange(&auth, &state, &door, &req, payload, &rp).await;
    let outcome = match &result {
        Ok(_) => "OK",
        Err(p) => p.code.as_str(),
    };
    // Every exchange is an audited attempt of the (authenticated) screens.
    let recorded = auth
        .audit(&c, ENDPOINT, Some(rp.as_str()), outcome, None)
        .await;
    let body = result?;
    if !recorded {
        return Err(Problem::unavailable("audit trail unavailable"));
    }
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(body))
}

async fn exchange(
    auth: &Auth,
    state: &AppState,
    door: &CitizenSettings,
    req: &HttpRequest,
    payload: web::Payload,
    rp: &RelyingPartyId,
) -> Result<SessionBody, Problem> {
    if door.screens.as_ref() != Some(rp) {
        return Err(Problem::coded("NOT_CITIZEN_RP", "Not the citizen screens")
            .with_detail("only the platform's citizen screens open citizen sessions"));
    }
    let body: web::Json<SessionRequest> = super::extract_body(req, payload).await?;
    let now = auth.settings.clock.now_secs();
    let key = |kid: &str| auth.keys.verifying(kid, now).map(|k| k.public.clone());
    let id_token = session::verify_id_token(
        &body.id_token,
        &auth.settings.issuer,
        rp.as_str(),
        ACR_PIN,
        now,
        key,
    )
    .map_err(session::IdTokenError::problem)?;
    // The login that issued the PPID may be moments old: the holder is read once the read
    // model has applied everything up to now.
    let subject = match subjects_holder(state, &id_token.ppid).await? {
        Some((subject, holder)) if holder == rp.as_str() => subject,
        _ => return Err(session::IdTokenError::PpidInactive.problem()),
    };
    // Single use, claimed last so that a refused exchange does not burn the token.
    let first_use = auth
        .claim_id_token(rp, &id_token.jti, id_token.expires_at)
        .await
        .map_err(Problem::unavailable)?;
    if !first_use {
        return Err(session::IdTokenError::Used.problem());
    }
    let key = auth.keys.active().map_err(Problem::unavailable)?;
    let (token, _) = session::issue(
        &key.signer,
        &key.kid,
        &auth.settings.issuer,
        subject,
        &id_token.ppid,
        now,
    )
    .map_err(|_| Problem::internal())?;
    Ok(SessionBody {
        session_token: token,
        token_type: "Bearer".to_owned(),
        expires_in: session::SESSION_TTL_SECS,
    })
}

/// Registers this door's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(open_session);
    applications::configure(cfg);
    ppids::configure(cfg);
}
