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
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, title: &str) -> Problem {
        Problem {
            type_uri: format!(
                "urn:mykey:problem:{}",
                code.to_ascii_lowercase().replace('_', "-")
            ),
            title: title.to_owned(),
            status: status.as_u16(),
            code: code.to_owned(),
            detail: None,
        }
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

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "Service unavailable",
        )
        .with_detail(detail)
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
        } else {
            tracing::info!(code = %self.code, "request refused");
        }
        HttpResponse::build(self.status())
            .content_type(PROBLEM_CONTENT_TYPE)
            .json(self)
    }
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
