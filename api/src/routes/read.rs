//! The read side of every door: wait until a read model reached the request's `min_position`,
//! query its serving schema, answer with the position read at. Read-model query failures become
//! problem+json here, once.

use crate::errors::Problem;
use crate::http::consistency::{positioned, read_at};
use crate::startup::AppState;
use actix_web::{HttpRequest, HttpResponse};
use mykey_projections::models::{PageRequest, QueryError};
use std::sync::Arc;

/// The serving schema of `projection` once it reached the request's `min_position`, the
/// position it is at, and a connection to query it.
pub async fn read(
    state: &AppState,
    req: &HttpRequest,
    projection: &str,
) -> Result<(Arc<str>, u64, deadpool_postgres::Object), Problem> {
    let position = read_at(state.read_models.as_ref(), projection, req).await?;
    let schema = state
        .projections
        .active_schema(projection)
        .ok_or_else(|| Problem::unavailable(format!("read model {projection} not serving")))?;
    let client = client(state).await?;
    Ok((schema, position, client))
}

/// Answers 200 with what `query` found in `projection` (see [`read`]) as JSON, and the
/// position it was read at.
pub async fn answer<T: serde::Serialize>(
    state: &AppState,
    req: &HttpRequest,
    projection: &str,
    query: impl AsyncFnOnce(&tokio_postgres::Client, &str) -> Result<T, Problem>,
) -> Result<HttpResponse, Problem> {
    let (schema, position, client) = read(state, req, projection).await?;
    let found = query(&client, &schema).await?;
    Ok(positioned(HttpResponse::Ok(), position, to_json(&found)?))
}

/// A connection for read-model queries.
pub async fn client(state: &AppState) -> Result<deadpool_postgres::Object, Problem> {
    state.read_pool.get().await.map_err(Problem::unavailable)
}

/// A read-model query failure: a bad page request is the caller's; the rest is ours.
pub fn query_problem(e: QueryError) -> Problem {
    match e {
        QueryError::BadLimit | QueryError::BadCursor | QueryError::BadRange { .. } => {
            bad_query(&e.to_string())
        }
        QueryError::Db(e) => Problem::unavailable(e),
        other => {
            tracing::error!(error = %other, "read model query failed");
            Problem::internal()
        }
    }
}

pub fn bad_query(detail: &str) -> Problem {
    Problem::coded("INVALID_QUERY", "Invalid query").with_detail(detail.to_owned())
}

pub fn not_found(what: &str) -> Problem {
    Problem::coded("NOT_FOUND", "Not found").with_detail(format!("no such {what}"))
}

/// A page request from `limit` and `cursor`.
pub fn page(limit: Option<u32>, cursor: Option<&str>) -> Result<PageRequest, Problem> {
    PageRequest::new(limit, cursor).map_err(query_problem)
}

pub fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, Problem> {
    serde_json::to_value(v).map_err(|_| Problem::internal())
}
