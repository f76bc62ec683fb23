//! Errors as RabbitMQ's management plugin sends them: a status code and
//! `{"error": type, "reason": text}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use warren_core::Error as AmqpFailure;
use warren_core::Refusal;
use warren_core::admin::AdminError;

/// The realm RabbitMQ's management plugin names in `WWW-Authenticate`.
pub const REALM: &str = "Basic realm=\"RabbitMQ Management\"";

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `error` field; `None` for an empty body.
    pub error: Option<&'static str>,
    /// The `reason` field.
    pub reason: String,
    /// Ask for credentials (`WWW-Authenticate`).
    pub challenge: bool,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            error: Some(error),
            reason: reason.into(),
            challenge: false,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    /// 404 as RabbitMQ rewrites every empty 404.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    /// 404 `not_found` with a reason (a missing vhost in a PUT, an AMQP
    /// NOT_FOUND).
    pub fn not_found_because(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", reason)
    }

    /// 401 `not_authorised` (authenticated, but not allowed).
    pub fn not_authorised(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "not_authorised", reason)
    }

    /// 401 with no credentials: an empty body and the challenge.
    pub fn no_credentials() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: None,
            reason: String::new(),
            challenge: true,
        }
    }

    /// 401 for a failed login, with the challenge.
    pub fn login_failed() -> Self {
        ApiError {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "not_authorized", "Login failed")
        }
    }

    /// 500, for what should not happen.
    pub fn internal(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            reason,
        )
    }
}

impl From<AmqpFailure> for ApiError {
    /// An AMQP refusal inside an HTTP call: NOT_FOUND is 404, access
    /// refusals 401, anything else 400 with the explanation alone (without
    /// the `406 PRECONDITION_FAILED - ` prefix), as RabbitMQ maps them.
    fn from(e: AmqpFailure) -> Self {
        let amqp = match e {
            AmqpFailure::Channel(c) => c.0,
            AmqpFailure::Connection(c) => c.0,
        };
        let detail = amqp
            .text
            .split_once(" - ")
            .map_or(amqp.text.as_str(), |(_, d)| d)
            .to_string();
        match amqp.code.code() {
            404 => ApiError::not_found_because(detail),
            403 | 530 => ApiError::not_authorised("Access refused."),
            _ => ApiError::bad_request(detail),
        }
    }
}

impl From<Refusal> for ApiError {
    /// A refusal of the vhost's rules as RabbitMQ's API reports it:
    /// NOT_FOUND 404, access refusals 401, the rest 400 with the text.
    fn from(r: Refusal) -> Self {
        match r.reply_code().code() {
            404 => ApiError::not_found_because(r.detail()),
            403 => ApiError::not_authorised("Access refused."),
            _ => ApiError::bad_request(r.detail()),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(_) => ApiError::not_found(),
            AdminError::Invalid(text) => ApiError::bad_request(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = match self.error {
            Some(error) => (
                self.status,
                axum::Json(json!({"error": error, "reason": self.reason})),
            )
                .into_response(),
            None => self.status.into_response(),
        };
        if self.challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        }
        r
    }
}
