//! The operator and auditor doors (issue 10, doors 4 and 5) over the write model and the read
//! models: programs, data patches, maintenance notices, the test-card register, and the
//! auditor's view of any stream's history and of the log's head.
//!
//! Credentials are the operator tokens ([`crate::auth::operators`]), checked per endpoint with
//! the roles it needs ([`crate::audit::routes::credential`]: 401 `OPERATOR_UNAUTHORIZED` /
//! `CREDENTIAL_EXPIRED`, 403 `ROLE_REQUIRED`). Writes need role `operator` (patch approval and
//! rejection: `approver`); reads take `operator`, `approver` or `auditor`.
//!
//! Every state-changing POST requires `Idempotency-Key` ([`crate::http::idempotency`]): the
//! key becomes the command id (and a new patch's id), so a retry appends nothing. Command
//! answers carry `position` (and `Mykey-Position`); reads accept `min_position`.

pub mod audit_history;
pub mod notices;
pub mod patches;
pub mod programs;
pub mod test_cards;

use crate::auth::operators::Role;
use crate::auth::Auth;
use crate::errors::Problem;
use crate::http::idempotency::{Answer, KeyRule};
use crate::http::{attach_principal, Principal};
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mykey_commands::{CommandMeta, Commands};
use mykey_store::pg::PgEventStore;
use serde::de::DeserializeOwned;

pub use super::command_problem;
pub use super::read::{answer, bad_query, client, not_found, page, query_problem, to_json};
use uuid::Uuid;

/// Largest JSON body of an operator command (a patch with its reasons is the biggest).
pub const MAX_COMMAND_BODY: usize = 16 * 1024;

/// Roles that may read the operator door's lists.
pub const READERS: &[Role] = &[Role::Operator, Role::Approver, Role::Auditor];

/// Registers every path of these doors. Call before [`crate::audit::routes::configure`]: its
/// `/v1/audit` scope would otherwise answer 404 for the paths registered here.
pub fn configure(cfg: &mut web::ServiceConfig) {
    programs::configure(cfg);
    patches::configure(cfg);
    notices::configure(cfg);
    test_cards::configure(cfg);
    audit_history::configure(cfg);
}

/// An authenticated operator, approver or auditor.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: String,
    pub correlation_id: Uuid,
    pub client_addr: Option<String>,
}

/// The query of a single-resource read: only `min_position`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinPositionOnly {
    pub min_position: Option<u64>,
}

/// The caller, if their credential is unexpired and holds one of `roles` (first = the role
/// recorded in the access log).
pub fn caller(auth: &Auth, req: &HttpRequest, roles: &[Role]) -> Result<Caller, Problem> {
    let id = crate::audit::routes::credential(auth, req, roles)?;
    let mut c = super::oauth::ctx(req);
    c.adopt_correlation_id();
    attach_principal(
        req,
        Principal {
            id: id.clone(),
            role: roles.first().map_or("operator", |r| r.as_str()).to_owned(),
            rp: None,
        },
        c.correlation_id,
    );
    Ok(Caller {
        id,
        correlation_id: c.correlation_id,
        client_addr: c.client_addr.clone(),
    })
}

impl Caller {
    /// The metadata of a command this caller issues with `command_id`.
    pub fn meta(&self, command_id: Uuid) -> CommandMeta {
        let meta = CommandMeta::new(self.id.clone(), mykey_domain::Role::Operator, command_id)
            .caused_by(self.correlation_id, command_id);
        match &self.client_addr {
            Some(a) => meta.from_addr(a.clone()),
            None => meta,
        }
    }
}

/// A path id parsed with the domain's rules (a bad one is 404: no such resource can exist).
pub fn path_id<T>(
    raw: &str,
    what: &str,
    parse: impl Fn(&str) -> Result<T, mykey_domain::DomainError>,
) -> Result<T, Problem> {
    parse(raw).map_err(|_| not_found(what))
}

/// The query string as `T` (unknown parameters refused with 400 `INVALID_QUERY`).
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, Problem> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| bad_query(&e.to_string()))
}

/// A command's JSON body as `T` (unknown fields refused; an empty body reads as `{}`).
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::malformed_body().with_detail(format!("invalid body: {e}")))
}

/// Reads a body of at most [`MAX_COMMAND_BODY`] bytes.
pub async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, Problem> {
    let bytes: web::Bytes = super::extract_body(req, payload).await?;
    if bytes.len() > MAX_COMMAND_BODY {
        return Err(Problem::body_too_large());
    }
    Ok(bytes)
}

/// The write model for this request.
pub fn commands(state: &AppState) -> Commands<PgEventStore> {
    Commands::new(state.store.clone())
}

/// Runs a state-changing command once per `Idempotency-Key` (required): `command` gets the
/// command id and answers `(status, body, position)`, `position` being the global position the
/// command wrote ([`mykey_commands::Executed::position`]), so a read with that
/// `min_position` sees the command. A retry with the same key answers the stored first answer.
pub async fn run<F, Fut>(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    body: &[u8],
    command: F,
) -> Result<HttpResponse, Problem>
where
    F: FnOnce(Uuid) -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value, u64), Problem>>,
{
    state
        .idempotency
        .run(req, KeyRule::Required, &caller.id, body, |id| async move {
            let (status, value, position) = command(id).await?;
            Ok(Answer::new(status, value, Some(position)))
        })
        .await
}
