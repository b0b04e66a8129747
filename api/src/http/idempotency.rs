//! `Idempotency-Key` on state-changing POSTs (`/work/shared/api.md`, the IETF httpapi draft):
//! the key, scoped to the caller, becomes the command id ([`command_id`]), and the first
//! answer is stored in `idempotency_keys` (migration 0400) with a hash of the request:
//!
//! - same key, same request → the stored answer again (`Idempotent-Replayed: true`), nothing
//!   runs;
//! - same key, another request (method, path or body) → 422 `IDEMPOTENCY_KEY_REUSED`;
//! - same key while the first is still running → 409 `IDEMPOTENCY_KEY_IN_FLIGHT`; a claim
//!   older than [`IN_FLIGHT_LEASE_SECS`] is taken to be a crashed server's and taken over;
//! - missing where required → 400 `IDEMPOTENCY_KEY_MISSING`; not a UUID → 400
//!   `IDEMPOTENCY_KEY_MALFORMED`.
//!
//! Refusals (4xx) are stored like successes (a retry gets the same refusal); a 5xx is not
//! (the claim is released so the retry runs). Keys are kept [`RETENTION_HOURS`] hours and
//! pruned by [`Idempotency::spawn_pruning`]; a key reused after that runs again (and the
//! write model's command-id check is the last line).

use crate::errors::{Problem, PROBLEM_CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long a key is remembered (the IETF draft suggests at least 24 h).
pub const RETENTION_HOURS: i64 = 24;
/// A claim with no answer after this long belongs to a request that died with its server.
pub const IN_FLIGHT_LEASE_SECS: i64 = 60;
/// How often expired keys are pruned.
pub const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether a POST requires the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    Required,
    /// Without a key the command runs once with a fresh command id, nothing stored.
    Optional,
}

/// The answer of a command, as stored and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    /// JSON body; `None` for an empty answer (204).
    pub body: Option<serde_json::Value>,
    /// The global position the command wrote up to (see [`super::consistency`]).
    pub position: Option<u64>,
}

impl Answer {
    pub fn new(status: StatusCode, body: serde_json::Value, position: Option<u64>) -> Answer {
        Answer {
            status,
            body: Some(body),
            position,
        }
    }

    pub fn empty(status: StatusCode, position: Option<u64>) -> Answer {
        Answer {
            status,
            body: None,
            position,
        }
    }

    fn response(&self, is_problem: bool) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        if let Some(p) = self.position {
            super::consistency::with_position(&mut b, p);
        }
        match &self.body {
            None => b.finish(),
            Some(body) => {
                let mut body = body.clone();
                if let (Some(obj), Some(p)) = (body.as_object_mut(), self.position) {
                    obj.insert("position".to_owned(), p.into());
                }
                if is_problem {
                    b.content_type(PROBLEM_CONTENT_TYPE);
                }
                b.json(body)
            }
        }
    }
}

/// The command id of `key` from `principal`: a UUID v8 from SHA-256 of both, so the same key
/// from two callers gives two commands and a retry gives the same command id.
pub fn command_id(principal: &str, key: Uuid) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"mykey idempotency v1\0");
    h.update(principal.as_bytes());
    h.update(b"\0");
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The request's `Idempotency-Key`, checked against `rule`.
pub fn key(req: &HttpRequest, rule: KeyRule) -> Result<Option<Uuid>, Problem> {
    match req.headers().get(IDEMPOTENCY_HEADER) {
        None if rule == KeyRule::Required => Err(Problem::coded(
            "IDEMPOTENCY_KEY_MISSING",
            "Idempotency-Key required",
        )),
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .map(Some)
            .ok_or_else(|| {
                Problem::coded("IDEMPOTENCY_KEY_MALFORMED", "Malformed Idempotency-Key")
                    .with_detail("Idempotency-Key must be a UUID")
            }),
    }
}

/// What identifies "the same request": method, path and body.
fn request_hash(req: &HttpRequest, body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(req.method().as_str().as_bytes());
    h.update(b"\0");
    h.update(req.path().as_bytes());
    h.update(b"\0");
    h.update(body);
    h.finalize().to_vec()
}

/// The idempotency-key table.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pool: Pool,
}

enum Claim {
    /// This request runs the command.
    Mine,
    Replay(Answer, bool),
    Reused,
    InFlight,
}

impl Idempotency {
    pub fn new(pool: Pool) -> Idempotency {
        Idempotency { pool }
    }

    /// Runs `command` at most once per (`principal`, key): see the module documentation.
    /// `command` gets the command id to append with and returns its answer; its `Err` is
    /// answered (and, if 4xx, stored) as problem+json.
    pub async fn run<F, Fut>(
        &self,
        req: &HttpRequest,
        rule: KeyRule,
        principal: &str,
        body: &[u8],
        command: F,
    ) -> Result<HttpResponse, Problem>
    where
        F: FnOnce(Uuid) -> Fut,
        Fut: std::future::Future<Output = Result<Answer, Problem>>,
    {
        let Some(key) = key(req, rule)? else {
            return Ok(command(Uuid::new_v4()).await?.response(false));
        };
        let hash = request_hash(req, body);
        match self.claim(principal, key, &hash).await? {
            Claim::Replay(answer, is_problem) => {
                let mut r = answer.response(is_problem);
                r.headers_mut().insert(
                    actix_web::http::header::HeaderName::from_static(REPLAYED_HEADER),
                    actix_web::http::header::HeaderValue::from_static("true"),
                );
                return Ok(r);
            }
            Claim::Reused => {
                return Err(Problem::coded(
                    "IDEMPOTENCY_KEY_REUSED",
                    "Idempotency-Key reused with another request",
                ))
            }
            Claim::InFlight => {
                return Err(Problem::coded(
                    "IDEMPOTENCY_KEY_IN_FLIGHT",
                    "A request with this Idempotency-Key is still running",
                )
                .with_retry_after(1))
            }
            Claim::Mine => {}
        }
        let result = command(command_id(principal, key)).await;
        let (answer, is_problem) = match &result {
            Ok(a) => (a.clone(), false),
            Err(p) if p.status().is_server_error() => {
                self.release(principal, key).await;
                return Err(p.clone());
            }
            Err(p) => (
                Answer::new(
                    p.status(),
                    serde_json::to_value(p).unwrap_or_default(),
                    None,
                ),
                true,
            ),
        };
        self.complete(principal, key, &answer, is_problem).await?;
        match result {
            Ok(a) => Ok(a.response(false)),
            Err(p) => Err(p),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Problem> {
        self.pool.get().await.map_err(Problem::unavailable)
    }

    async fn claim(&self, principal: &str, key: Uuid, hash: &[u8]) -> Result<Claim, Problem> {
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO idempotency_keys (principal, key, request_hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (principal, key) DO NOTHING",
                &[&principal, &key, &hash],
            )
            .await
            .map_err(Problem::unavailable)?;
        if inserted == 1 {
            return Ok(Claim::Mine);
        }
        // Take over an abandoned claim of the same request (its server died mid-command).
        let taken = client
            .execute(
                "UPDATE idempotency_keys SET created_at = now() WHERE principal = $1 AND key = $2 \
                 AND request_hash = $3 AND status IS NULL \
                 AND created_at < now() - make_interval(secs => $4)",
                &[&principal, &key, &hash, &(IN_FLIGHT_LEASE_SECS as f64)],
            )
            .await
            .map_err(Problem::unavailable)?;
        if taken == 1 {
            return Ok(Claim::Mine);
        }
        let row = client
            .query_opt(
                "SELECT request_hash, status, body, is_problem, position FROM idempotency_keys \
                 WHERE principal = $1 AND key = $2",
                &[&principal, &key],
            )
            .await
            .map_err(Problem::unavailable)?;
        // Pruned between the INSERT and here: a rare race; the client retries.
        let Some(row) = row else {
            return Ok(Claim::InFlight);
        };
        let stored: Vec<u8> = row.get(0);
        if stored != hash {
            return Ok(Claim::Reused);
        }
        let Some(status) = row.get::<_, Option<i16>>(1) else {
            return Ok(Claim::InFlight);
        };
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let position: Option<i64> = row.get(4);
        Ok(Claim::Replay(
            Answer {
                status,
                body: row.get(2),
                position: position.and_then(|p| u64::try_from(p).ok()),
            },
            row.get(3),
        ))
    }

    async fn complete(
        &self,
        principal: &str,
        key: Uuid,
        answer: &Answer,
        is_problem: bool,
    ) -> Result<(), Problem> {
        let status = i16::try_from(answer.status.as_u16()).unwrap_or(i16::MAX);
        let position = answer.position.and_then(|p| i64::try_from(p).ok());
        self.client()
            .await?
            .execute(
                "UPDATE idempotency_keys SET status = $3, body = $4, is_problem = $5, \
                 position = $6, completed_at = now() WHERE principal = $1 AND key = $2",
                &[
                    &principal,
                    &key,
                    &status,
                    &answer.body,
                    &is_problem,
                    &position,
                ],
            )
            .await
            .map_err(Problem::unavailable)?;
        Ok(())
    }

    /// Forgets a claim whose command failed on our side, so a retry runs it.
    async fn release(&self, principal: &str, key: Uuid) {
        let Ok(client) = self.client().await else {
            return;
        };
        if let Err(e) = client
            .execute(
                "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND status IS NULL",
                &[&principal, &key],
            )
            .await
        {
            // The claim then expires after IN_FLIGHT_LEASE_SECS.
            tracing::warn!("idempotency claim not released: {e}");
        }
    }

    /// Deletes keys older than [`RETENTION_HOURS`]; returns how many.
    pub async fn prune(&self) -> Result<u64, Problem> {
        self.client()
            .await?
            .execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
                &[&(RETENTION_HOURS as i32)],
            )
            .await
            .map_err(Problem::unavailable)
    }

    /// Prunes every [`PRUNE_INTERVAL`] for as long as the runtime runs.
    pub fn spawn_pruning(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(p) = this.prune().await {
                    tracing::warn!("idempotency keys not pruned: {p}");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn command_ids_are_per_caller_and_stable() {
        let k = Uuid::new_v4();
        assert_eq!(command_id("op-a", k), command_id("op-a", k));
        assert_ne!(command_id("op-a", k), command_id("op-b", k));
        assert_ne!(command_id("op-a", k), command_id("op-a", Uuid::new_v4()));
        assert_eq!(command_id("op-a", k).get_version_num(), 8);
    }

    #[test]
    fn keys_are_checked() {
        let r = TestRequest::post().to_http_request();
        assert_eq!(
            key(&r, KeyRule::Required).err().map(|p| p.code).as_deref(),
            Some("IDEMPOTENCY_KEY_MISSING")
        );
        assert_eq!(key(&r, KeyRule::Optional).ok(), Some(None));
        let r = TestRequest::post()
            .insert_header((IDEMPOTENCY_HEADER, "not-a-uuid"))
            .to_http_request();
        let p = key(&r, KeyRule::Optional).err();
        assert_eq!(
            p.as_ref().map(|p| p.code.as_str()),
            Some("IDEMPOTENCY_KEY_MALFORMED")
        );
        assert_eq!(p.map(|p| p.status), Some(400));
        let k = Uuid::new_v4();
        let r = TestRequest::post()
            .insert_header((IDEMPOTENCY_HEADER, k.to_string()))
            .to_http_request();
        assert_eq!(key(&r, KeyRule::Required).ok(), Some(Some(k)));
    }
}
