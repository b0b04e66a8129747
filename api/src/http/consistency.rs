//! Read-your-writes across the CQRS gap (`/work/shared/api.md`): every command answer carries
//! the global `position` it wrote (body and `Mykey-Position` header); every read accepts
//! `min_position` (query) or `Mykey-Min-Position` (header) and waits, at most
//! [`MAX_READ_WAIT`], until its read model applied that position, else 503
//! `READ_MODEL_BEHIND` with `Retry-After`. Reads answer with the position they reflect.
//!
//! The projection runner implements [`ReadModelClock`]; a read handler calls [`read_at`] first.

use crate::errors::Problem;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use std::time::Duration;

/// The longest a read waits for its read model to reach `min_position`.
pub const MAX_READ_WAIT: Duration = Duration::from_secs(2);
/// `Retry-After` of a `READ_MODEL_BEHIND`: projections usually catch up within a second.
pub const READ_MODEL_RETRY_AFTER_SECS: u64 = 1;
pub const POSITION_HEADER: &str = "mykey-position";
pub const MIN_POSITION_HEADER: &str = "mykey-min-position";
pub const MIN_POSITION_QUERY: &str = "min_position";

/// The read model did not reach the position in time; it was at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("read model at position {at}")]
pub struct Behind {
    pub at: u64,
}

/// How far each read model (projection) has applied the event log.
#[async_trait::async_trait]
pub trait ReadModelClock: Send + Sync + std::fmt::Debug {
    /// The position `projection` has applied up to now.
    async fn position(&self, projection: &str) -> u64;

    /// Waits until `projection` applied `position` (at most `timeout`); the position it is at.
    async fn wait_for(
        &self,
        projection: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<u64, Behind>;
}

/// The projection runner is the read models' clock.
#[async_trait::async_trait]
impl ReadModelClock for mykey_projections::Projections {
    async fn position(&self, projection: &str) -> u64 {
        self.statuses()
            .into_iter()
            .find(|s| s.name == projection)
            .map_or(0, |s| s.position)
    }

    async fn wait_for(
        &self,
        projection: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<u64, Behind> {
        use mykey_projections::runner::WaitError;
        match mykey_projections::Projections::wait_for(self, projection, position, timeout).await {
            Ok(at) => Ok(at),
            Err(WaitError::Timeout { reached }) => Err(Behind { at: reached }),
            // Stopped on an event, unknown or shut down: it will not catch up within the
            // bound either; the caller answers READ_MODEL_BEHIND and the detail is in /readyz.
            Err(e) => {
                tracing::warn!(projection, "read-your-writes wait: {e}");
                Err(Behind {
                    at: ReadModelClock::position(self, projection).await,
                })
            }
        }
    }
}

/// The clock of a server with no read models wired yet: at position 0, never catching up.
/// Replaced by the projection runner's at merge.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReadModels;

#[async_trait::async_trait]
impl ReadModelClock for NoReadModels {
    async fn position(&self, _projection: &str) -> u64 {
        0
    }

    async fn wait_for(&self, _: &str, position: u64, _: Duration) -> Result<u64, Behind> {
        if position == 0 {
            Ok(0)
        } else {
            Err(Behind { at: 0 })
        }
    }
}

fn malformed() -> Problem {
    Problem::coded("MIN_POSITION_MALFORMED", "Malformed min_position")
        .with_detail("min_position must be a non-negative integer")
}

/// The `min_position` a read asked for (query parameter, else header); `None` when none.
pub fn min_position(req: &HttpRequest) -> Result<Option<u64>, Problem> {
    let query = actix_web::web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|_| malformed())?;
    let from_query = query
        .iter()
        .find(|(k, _)| k == MIN_POSITION_QUERY)
        .map(|(_, v)| v.clone());
    let raw = match from_query {
        Some(v) => Some(v),
        None => match req.headers().get(MIN_POSITION_HEADER) {
            Some(h) => Some(h.to_str().map_err(|_| malformed())?.to_owned()),
            None => None,
        },
    };
    raw.map(|v| v.trim().parse::<u64>().map_err(|_| malformed()))
        .transpose()
}

/// What a read handler calls before reading `projection`: waits for the request's
/// `min_position` (if any) and returns the position the read will reflect.
pub async fn read_at(
    clock: &dyn ReadModelClock,
    projection: &str,
    req: &HttpRequest,
) -> Result<u64, Problem> {
    read_at_within(clock, projection, req, MAX_READ_WAIT).await
}

async fn read_at_within(
    clock: &dyn ReadModelClock,
    projection: &str,
    req: &HttpRequest,
    max_wait: Duration,
) -> Result<u64, Problem> {
    match min_position(req)? {
        None => Ok(clock.position(projection).await),
        Some(wanted) => clock
            .wait_for(projection, wanted, max_wait)
            .await
            .map_err(|b| behind(b, wanted, max_wait)),
    }
}

/// The 503 of a read model that did not reach `wanted` within `max_wait`.
pub fn behind(b: Behind, wanted: u64, max_wait: Duration) -> Problem {
    Problem::coded("READ_MODEL_BEHIND", "Read model behind")
        .with_detail(format!(
            "the read model reached position {} of {wanted} within {} ms",
            b.at,
            max_wait.as_millis()
        ))
        .with_retry_after(READ_MODEL_RETRY_AFTER_SECS)
}

/// Adds `Mykey-Position: position` to an answer (reads and commands).
pub fn with_position(builder: &mut HttpResponseBuilder, position: u64) -> &mut HttpResponseBuilder {
    builder.insert_header((
        HeaderName::from_static(POSITION_HEADER),
        HeaderValue::from(position),
    ))
}

/// A JSON answer carrying `position` (a read's reflected or a command's written position) in
/// the body (when it is an object) and in the `Mykey-Position` header.
pub fn positioned(
    mut builder: HttpResponseBuilder,
    position: u64,
    mut body: serde_json::Value,
) -> HttpResponse {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("position".to_owned(), position.into());
    }
    with_position(&mut builder, position).json(body)
}

/// A test double: a read model at a settable position. `wait_for` polls it until the deadline.
#[derive(Debug, Default)]
pub struct ManualClock {
    at: std::sync::atomic::AtomicU64,
    moved: tokio::sync::Notify,
}

impl ManualClock {
    pub fn set(&self, position: u64) {
        self.at.store(position, std::sync::atomic::Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

#[async_trait::async_trait]
impl ReadModelClock for ManualClock {
    async fn position(&self, _: &str) -> u64 {
        self.at.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn wait_for(&self, _: &str, position: u64, timeout: Duration) -> Result<u64, Behind> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let moved = self.moved.notified();
            let at = self.at.load(std::sync::atomic::Ordering::SeqCst);
            if at >= position {
                return Ok(at);
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return Err(Behind {
                    at: self.at.load(std::sync::atomic::Ordering::SeqCst),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn min_position_comes_from_the_query_or_the_header() {
        let r = TestRequest::with_uri("/x?min_position=7").to_http_request();
        assert_eq!(min_position(&r).ok(), Some(Some(7)));
        let r = TestRequest::with_uri("/x")
            .insert_header((MIN_POSITION_HEADER, "9"))
            .to_http_request();
        assert_eq!(min_position(&r).ok(), Some(Some(9)));
        let r = TestRequest::with_uri("/x").to_http_request();
        assert_eq!(min_position(&r).ok(), Some(None));
        for bad in [
            "/x?min_position=-1",
            "/x?min_position=abc",
            "/x?min_position=",
        ] {
            let r = TestRequest::with_uri(bad).to_http_request();
            let e = min_position(&r).err().map(|p| p.code);
            assert_eq!(e.as_deref(), Some("MIN_POSITION_MALFORMED"), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_read_waits_for_its_position_then_gives_up_with_503() {
        let clock = std::sync::Arc::new(ManualClock::default());
        clock.set(3);
        let r = TestRequest::with_uri("/x?min_position=3").to_http_request();
        assert_eq!(read_at(clock.as_ref(), "p", &r).await.ok(), Some(3));

        let r = TestRequest::with_uri("/x?min_position=5").to_http_request();
        let (got, ()) = tokio::join!(read_at(clock.as_ref(), "p", &r), async {
            tokio::task::yield_now().await;
            clock.set(5);
        });
        assert_eq!(got.ok(), Some(5));

        let r = TestRequest::with_uri("/x?min_position=99").to_http_request();
        let p = read_at_within(clock.as_ref(), "p", &r, Duration::from_millis(50))
            .await
            .err();
        let p = p.unwrap_or_else(|| panic!("a read model that never arrives must time out"));
        assert_eq!(p.code, "READ_MODEL_BEHIND");
        assert_eq!(p.status, 503);
        assert_eq!(p.retry_after_secs, Some(READ_MODEL_RETRY_AFTER_SECS));
    }

    #[actix_web::test]
    async fn answers_carry_their_position_in_body_and_header() {
        let r = positioned(HttpResponse::Ok(), 7, serde_json::json!({ "a": 1 }));
        assert_eq!(
            r.headers()
                .get(POSITION_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
        let body = actix_web::body::to_bytes(r.into_body()).await.ok();
        let body: Option<serde_json::Value> = body.and_then(|b| serde_json::from_slice(&b).ok());
        assert_eq!(body, Some(serde_json::json!({ "a": 1, "position": 7 })));
    }
}
