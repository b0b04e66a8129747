//! Errors as RFC 9457 `application/problem+json` with a stable machine `code`.
//!
//! Every handler error becomes a [`Problem`]; the `code` is the contract partner systems
//! program against, the `detail` is for humans and may change.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `urn:mykey:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    /// Stable machine code, e.g. `CERTIFICATE_EXPIRED`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Sent as `Retry-After` (429, 503).
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

/// `Retry-After` of a 503: dependencies (the database) are usually back within seconds.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

impl Problem {
    /// A problem with `code`. A code listed in [`crate::codes::ApiCode`] gets the status the
    /// table gives it (the one place that decides); `status` is used for others only.
    pub fn new(status: StatusCode, code: &str, title: &str) -> Problem {
        let status = crate::codes::ApiCode::parse(code).map_or(status, |c| c.status());
        Problem {
            type_uri: format!(
                "urn:mykey:problem:{}",
                code.to_ascii_lowercase().replace('_', "-")
            ),
            title: title.to_owned(),
            status: status.as_u16(),
            code: code.to_owned(),
            detail: None,
            retry_after_secs: None,
        }
    }

    /// A problem whose status comes from its code ([`crate::codes::status_of`]).
    pub fn coded(code: &str, title: &str) -> Problem {
        Problem::new(crate::codes::status_of(code), code, title)
    }

    pub fn with_retry_after(mut self, secs: u64) -> Problem {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error",
        )
    }

    /// A dependency failed. `internal` (a database or pool error, a stream id, ...) is logged
    /// here and never sent: the caller gets a generic text and `Retry-After`.
    pub fn unavailable(internal: impl std::fmt::Display) -> Problem {
        let reference = uuid::Uuid::new_v4();
        tracing::error!(%reference, "unavailable: {internal}");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "Service unavailable",
        )
        .with_detail(format!(
            "a platform dependency is unavailable; retry later (reference {reference})"
        ))
        .with_retry_after(UNAVAILABLE_RETRY_AFTER_SECS)
    }

    /// A request body over its endpoint's limit.
    pub fn body_too_large() -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            "Request body too large",
        )
    }

    /// A request body that cannot be read as what the endpoint takes.
    pub fn malformed_body() -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_BODY",
            "Malformed request body",
        )
    }

    /// A body of another media type than `expected`.
    pub fn unsupported_media_type(expected: &str) -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            &format!("Expected {expected}"),
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.code)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        if self.status().is_server_error() {
            tracing::error!(code = %self.code, detail = ?self.detail, "request failed");
        } else if self.status() == StatusCode::TOO_MANY_REQUESTS {
            // A flood must not turn into a flood of log lines (counted in the metrics).
            tracing::debug!(code = %self.code, "request refused");
        } else {
            tracing::info!(code = %self.code, "request refused");
        }
        let mut response = HttpResponse::build(self.status());
        let retry_after = self.retry_after_secs.or_else(|| {
            // Every 503 (a dependency, a stale CRL) says when to come back.
            (self.status() == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(UNAVAILABLE_RETRY_AFTER_SECS)
        });
        if let Some(secs) = retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        response.content_type(PROBLEM_CONTENT_TYPE).json(self)
    }
}

/// The middleware every HTTP server of the binary wraps its app in: [`routing_problem`] for
/// 404 and 405.
pub fn routing_problems<B: 'static>() -> actix_web::middleware::ErrorHandlers<B> {
    actix_web::middleware::ErrorHandlers::new()
        .handler(StatusCode::NOT_FOUND, routing_problem)
        .handler(StatusCode::METHOD_NOT_ALLOWED, routing_problem)
}

/// Answers an unknown path (404 `NOT_FOUND`) or a wrong method (405 `METHOD_NOT_ALLOWED`) that
/// the router produced without a body, as problem+json like every other refusal.
pub fn routing_problem<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::middleware::ErrorHandlerResponse;
    let is_problem = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes());
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let problem = if res.status() == StatusCode::METHOD_NOT_ALLOWED {
        Problem::coded("METHOD_NOT_ALLOWED", "Method not allowed")
    } else {
        Problem::coded("NOT_FOUND", "No such resource")
    };
    let (req, _) = res.into_parts();
    let response = problem.error_response().map_into_right_body();
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, response),
    ))
}

/// JSON body and query-string errors from actix's extractors become problems too, so a
/// malformed request never gets a plain-text answer.
pub fn json_error_handler(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let problem = match &err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => Problem::body_too_large(),
        J::ContentType => Problem::unsupported_media_type("application/json"),
        _ => Problem::malformed_body().with_detail(err.to_string()),
    };
    problem.into()
}
